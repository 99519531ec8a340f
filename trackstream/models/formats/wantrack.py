"""FastVideo's WanTrack bundles (the Track-v0 causal student, its TrackWan teacher) as a ``MotionWan``.

A bundle is the diffusers folder a user downloads: ``transformer/config.json`` and one
``transformer/*.safetensors`` (``model.safetensors`` from their exporter, ``diffusion_pytorch_model.safetensors``
from their converter) holding diffusers ``WanTransformer3DModel`` keys, a 52-channel ``patch_embedding``
(noisy 16 | I2V mask 4 | first-frame latent 16 | track map 16: our ``wan_i2v`` layout with 16 track channels),
``track_encoder.temporal_conv`` [C, D, 4, 1, 1] and ``track_encoder.proj`` [C, C, 1, 1, 1] (biases optional) and
an unused ``attn2.norm_added_q`` per block. It is recognised by its tensors, never by a class or folder name
(their ``_class_name`` and file name vary between exports), and what the config may omit or misstate (the
embedding width, the biases, the channels) is read from the tensors. Their two track convs have no activation
between them, so they compose exactly into our one-conv ``TrackHead`` (``convention="fastvideo"``):
W[c, d*4 + s] = sum_k P[c, k] T[k, d, s], b = P b_T + b_P.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from trackstream.models.formats.files import one_line, read_json_file, read_safetensors
from trackstream.models.formats.wan_formats import config_from_json, to_official

__all__ = ["TRACK_KEYS", "find_wantrack", "read_wantrack", "load_wantrack", "fold_track_convs"]

TRACK_PREFIX = "track_encoder."
TRACK_KEYS = ("temporal_conv.weight", "temporal_conv.bias", "proj.weight", "proj.bias")
LATENT, MASK = 16, 4  # Wan 2.1 latents; the I2V mask's 4 channels
FIX = "download the bundle again (its transformer/ folder) or rewrite it with trackstream rehearsal-wantrack"


def _keys(path: Path) -> list[str] | None:
    """The tensor names of a safetensors file from its header alone (None when it does not parse)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception:  # noqa: BLE001 -- not recognised here; read_wantrack reads it to name the damage
        return None


def _candidates(path: Path) -> list[Path]:
    return [f for f in (path / "transformer", path) if f.is_dir() and (f / "config.json").is_file()]


def _weights(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.safetensors") if p.is_file())


def find_wantrack(path: str | os.PathLike) -> Path | None:
    """The transformer folder of a WanTrack bundle at ``path`` (the bundle root or its ``transformer/``),
    or None when ``path`` holds no diffusers DiT whose tensors carry a ``track_encoder``."""
    for folder in _candidates(Path(path)):
        if any(f"{TRACK_PREFIX}temporal_conv.weight" in (_keys(w) or ()) for w in _weights(folder)):
            return folder
    return None


def fold_track_convs(track: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Their ``temporal_conv`` + ``proj`` tensors -> our TrackHead's ``proj.weight`` [C, D*4, 1, 1, 1]
    (+ ``proj.bias`` when either conv has one), computed in float64 and returned in float32."""
    tw, pw = track.get("temporal_conv.weight"), track.get("proj.weight")
    if tw is None or pw is None or tw.ndim != 5 or pw.ndim != 5 or pw.shape[1] != tw.shape[0]:
        shapes = {k: tuple(v.shape) for k, v in track.items()}
        raise ValueError(
            f"{source}: track_encoder tensors {shapes} are not temporal_conv [C, D, 4, 1, 1] + proj [C', C, 1, 1, 1]; "
            f"{FIX}"
        )
    k, d, r = tw.shape[:3]
    t64, p64 = tw.double().reshape(k, d, r), pw.double().reshape(pw.shape[0], k)
    out = {"proj.weight": torch.einsum("ck,kds->cds", p64, t64).reshape(pw.shape[0], d * r, 1, 1, 1).float()}
    if "temporal_conv.bias" in track or "proj.bias" in track:
        bt = track.get("temporal_conv.bias", torch.zeros(k)).double()
        bp = track.get("proj.bias", torch.zeros(pw.shape[0])).double()
        out["proj.bias"] = (p64 @ bt + bp).float()
    return out


def read_wantrack(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor], Path]:
    """(WanModel kwargs, the DiT's official-format state dict, the track tensors by short name, the weights
    file) of the bundle at ``path``; a one-line ValueError naming the file for anything it cannot read."""
    folder = find_wantrack(path)
    if folder is None:
        for damaged in (w for f in _candidates(Path(path)) for w in _weights(f) if _keys(w) is None):
            read_safetensors(damaged, fix=FIX)  # raises a one-line error naming the damaged file
        raise ValueError(
            f"{path} is not a WanTrack bundle: expected transformer/config.json and a transformer/*.safetensors "
            f"holding track_encoder.temporal_conv.weight; {FIX}"
        )
    files = [w for w in _weights(folder) if f"{TRACK_PREFIX}temporal_conv.weight" in (_keys(w) or ())]
    if len(files) != 1:
        raise ValueError(f"{folder} holds several DiT weight files {[w.name for w in files]}: keep one")
    weights = files[0]
    sd = read_safetensors(weights, fix=FIX)
    track = {k[len(TRACK_PREFIX) :]: v for k, v in sd.items() if k.startswith(TRACK_PREFIX)}
    unknown = sorted(set(track) - set(TRACK_KEYS))
    if unknown:
        raise ValueError(f"{weights}: unknown track_encoder tensors {unknown}; expected {list(TRACK_KEYS)}")
    dit = {k: v for k, v in sd.items() if not k.startswith(TRACK_PREFIX)}
    config_path = folder / "config.json"
    config = read_json_file(config_path, fix=FIX)
    try:
        kwargs = config_from_json(config)
        dit, fmt = to_official(dit)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{config_path}: {one_line(err)}; {FIX}") from None
    if fmt != "diffusers" or kwargs.get("model_type") != "i2v":
        raise ValueError(f"{weights}: a WanTrack DiT has diffusers keys and the I2V image branch; {FIX}")
    patch = dit.get("patch_embedding.weight")
    track_channels = track["proj.weight"].shape[0] if "proj.weight" in track else 0
    if patch is None or patch.shape[1] != LATENT + MASK + LATENT + track_channels:
        got = None if patch is None else patch.shape[1]
        raise ValueError(
            f"{weights}: patch_embedding takes {got} input channels; a WanTrack DiT takes "
            f"{LATENT + MASK + LATENT} + {track_channels} track channels (noisy | mask | first frame | tracks)"
        )
    kwargs["in_dim"] = patch.shape[1]  # the tensors, not the config, say what the network takes
    return kwargs, dit, track, weights


def load_wantrack(path: str | os.PathLike, *, device: str | torch.device = "cpu"):
    """A WanTrack bundle as a float32 ``MotionWan`` (layout ``wan_i2v``, umT5 text at the DiT's text_dim,
    track encoder of convention ``fastvideo`` with their embedding width, channels and biases)."""
    from trackstream.models.motion_wan import MotionWan
    from trackstream.models.tracks import TrackEncoder
    from trackstream.models.wan import WanModel
    from trackstream.models.wan_io import load_into

    kwargs, dit_sd, track, weights = read_wantrack(path)
    head = fold_track_convs(track, str(weights))
    c, d = head["proj.weight"].shape[0], track["temporal_conv.weight"].shape[1]
    with torch.device("meta"):
        dit = WanModel(**kwargs)
        encoder = TrackEncoder(c, embed_dim=d, bias="proj.bias" in head, convention="fastvideo")
    try:
        load_into(dit, dit_sd, strict=True, source=str(weights))
    except ValueError as err:
        raise ValueError(one_line(err, limit=400)) from None
    encoder.head.load_state_dict(head, strict=True, assign=True)
    net = MotionWan(dit, layout="wan_i2v", track_encoder=encoder, text_proj=None)
    return net.float().to(device)
