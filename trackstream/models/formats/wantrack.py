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

The rest of the bundle is taken where diffusers puts it: umT5 in ``text_encoder/`` with ``tokenizer/`` beside it,
CLIP ViT-H in ``image_encoder/`` (its penultimate layer, ``models.clip_image``), the Wan 2.1 VAE in ``vae/``.
``wantrack_network_json`` is the bundle's equivalent of an export's ``network.json``: its model config (flavor
``wan2.1-fun-1.3b-inp`` with the sizes of ``transformer/config.json``, layout ``wan_i2v``, the track head read off
its tensors, FastVideo's track convention) and its conventions (frame size, length and shift from
``training_config.yaml`` where the bundle has one, else FastVideo's published defaults; a causal student's
chunking, window, RoPE policy and four noise levels).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from trackstream.models.formats.files import one_line, read_json_file, read_safetensors
from trackstream.models.formats.wan_formats import config_from_json, to_official

__all__ = [
    "TRACK_KEYS",
    "FASTVIDEO_DEFAULTS",
    "find_wantrack",
    "read_wantrack",
    "bundle_root",
    "fold_track_convs",
    "fastvideo_sigmas",
    "preset_stream_config",
    "wantrack_network_json",
    "wantrack_codec",
]

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
    weights = _weights_file(folder)
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


# FastVideo's published defaults for a WanTrack I2V bundle without a training_config.yaml: their WanTrack pipeline
# preset (480x832, 121 frames, flow shift 6) and, for the causal student, CausalTrackWanSFI2VConfig (blocks of 3
# latent frames, local attention 6 with 1 sink frame, relativistic RoPE, DMD steps 1000/750/500/250 warped onto
# their scheduler's 1000-step grid). ../shared/reference/wantrack.md sections 4.1-4.2 cite where they are set.
FASTVIDEO_DEFAULTS = {
    "height": 480,
    "width": 832,
    "num_frames": 121,
    "flow_shift": 6.0,
    "num_frames_per_block": 3,
    "local_attn_size": 6,
    "sink_size": 1,
    "rope_cache_policy": "relativistic",
    "dmd_denoising_steps": (1000, 750, 500, 250),
    "warp_denoising_step": True,
}
# where training_config.yaml records each of those (their training config's keys)
YAML_KEYS = {
    "height": ("training", "data", "num_height"),
    "width": ("training", "data", "num_width"),
    "num_frames": ("training", "data", "num_frames"),
    "flow_shift": ("pipeline", "flow_shift"),
    "num_frames_per_block": ("models", "student", "num_frames_per_block"),
    "local_attn_size": ("pipeline", "dit_config", "local_attn_size"),
    "sink_size": ("pipeline", "dit_config", "sink_size"),
    "rope_cache_policy": ("pipeline", "dit_config", "rope_cache_policy"),
    "dmd_denoising_steps": ("method", "dmd_denoising_steps"),
    "warp_denoising_step": ("method", "warp_denoising_step"),
}
CAUSAL_CLASS = "CausalTrackWan"  # their runtime's rule: a causal student's transformer class contains this
FLAVOR = "wan2.1-fun-1.3b-inp"
TRAIN_TIMESTEPS = 1000


def fastvideo_sigmas(shift: float, steps=(1000, 750, 500, 250), *, warp: bool = True) -> tuple[float, ...]:
    """The noise levels of their DMD steps: with ``warp``, FlowMatchEulerDiscreteScheduler(shift) set to 1000
    timesteps, then the timesteps at indices 1000 - step (0 appended), over 1000; without it, step / 1000.
    Re-stated from diffusers' arithmetic (float32 tables, float64 in between) so it needs no diffusers."""
    import numpy as np

    n = TRAIN_TIMESTEPS
    if not warp:
        return tuple(float(t) / n for t in steps)

    def shifted(s):
        return shift * s / (1 + (shift - 1) * s)

    train = np.linspace(1, n, n, dtype=np.float32)[::-1].copy() / n  # the scheduler's training sigmas
    train = torch.from_numpy(shifted(train)).to(torch.float32)
    s_max, s_min = train[0].item(), train[-1].item()
    grid = torch.from_numpy(shifted(np.linspace(s_max * n, s_min * n, n) / n)).to(torch.float32) * n
    grid = torch.cat([grid, torch.zeros(1)])
    for t in steps:
        if not 0 < int(t) <= n:
            raise ValueError(f"dmd_denoising_steps {list(steps)}: each step must lie in (0, {n}]")
    return tuple(grid[n - int(t)].item() / n for t in steps)


def bundle_root(path: Path, folder: Path) -> Path:
    """The bundle's root folder, given the root or its transformer/ folder."""
    return folder.parent if folder == Path(path) and folder.name == "transformer" else Path(path)


def _training_config(root: Path) -> dict:
    path = root / "training_config.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid YAML ({one_line(err)}); download it again or delete it") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} holds no YAML mapping; download it again or delete it")
    return cfg


def _recipe(root: Path) -> dict:
    """FastVideo's defaults with what the bundle's training_config.yaml records in their place."""
    cfg, out = _training_config(root), dict(FASTVIDEO_DEFAULTS)
    for name, keys in YAML_KEYS.items():
        node = cfg
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if node is not None:
            out[name] = node
    return out


def _is_causal(root: Path, config: dict) -> bool:
    index = root / "model_index.json"
    entry = read_json_file(index, fix=FIX).get("transformer") if index.is_file() else None
    names = [str(x) for x in (entry if isinstance(entry, list) else [entry])] + [str(config.get("_class_name"))]
    return any(CAUSAL_CLASS in n for n in names)


def _stream_config(recipe: dict, source: str):
    """Their causal recipe as our StreamConfig: blocks of ``num_frames_per_block`` after a sampled one-latent
    chunk 0 (their [1] + [C] x k), ``sink_size`` frames kept (chunk 0, then whole blocks), the local window of
    ``local_attn_size`` frames (sink and current block included; -1: all) counted in frames."""
    from trackstream.models.streaming import CausalConfig, StreamConfig

    try:
        c, sink, local = int(recipe["num_frames_per_block"]), int(recipe["sink_size"]), int(recipe["local_attn_size"])
        steps = tuple(int(t) for t in recipe["dmd_denoising_steps"])
        shift = float(recipe["flow_shift"])
        if sink and (sink - 1) % c:
            raise ValueError(f"sink_size={sink} is not chunk 0 plus whole blocks of {c}")
        window = None if local < 0 else local - sink - c
        if window is not None and window < 0:
            raise ValueError(f"local_attn_size={local} is smaller than sink_size + num_frames_per_block")
        causal = CausalConfig(
            chunk_frames=c,
            sink_chunks=0 if not sink else 1 + (sink - 1) // c,
            window_chunks=None,
            window_frames=window,
            first_chunk_frames=1,
            first_chunk_sampled=True,
            rope=str(recipe["rope_cache_policy"]),
        )
        sigmas = fastvideo_sigmas(shift, steps, warp=bool(recipe["warp_denoising_step"]))
        return StreamConfig(causal=causal, steps=len(steps), shift=shift, sigma_list=sigmas)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: its causal recipe is not one TrackStream streams ({one_line(err)})") from None


def preset_stream_config():
    """How FastVideo's pipeline streams a WanTrack student whose bundle records no recipe
    (``FASTVIDEO_DEFAULTS``): Track-v0's c3, a window of 6 frames with 1 sink frame, four steps."""
    return _stream_config(FASTVIDEO_DEFAULTS, "FastVideo's WanTrack preset")


def _header_shapes(weights: Path, keys: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        have = set(f.keys())
        return {k: tuple(f.get_slice(k).get_shape()) for k in keys if k in have}


def _weights_file(folder: Path) -> Path:
    files = [w for w in _weights(folder) if f"{TRACK_PREFIX}temporal_conv.weight" in (_keys(w) or ())]
    if len(files) != 1:
        raise ValueError(f"{folder} holds several DiT weight files {[w.name for w in files]}: keep one")
    return files[0]


def wantrack_network_json(path: str | os.PathLike) -> dict:
    """The bundle at ``path`` described as an export's ``network.json`` ({"model", "text_encoder_dim", "ema",
    "conventions"}), read from its config files and its tensors' header alone."""
    from trackstream.models.flavors import flavor_config

    folder = find_wantrack(path)
    if folder is None:
        read_wantrack(path)  # raises the one-line error naming what is wrong
    root = bundle_root(Path(path), folder)
    weights = _weights_file(folder)
    config_path = folder / "config.json"
    config = read_json_file(config_path, fix=FIX)
    names = tuple(TRACK_PREFIX + k for k in TRACK_KEYS) + ("patch_embedding.weight",)
    shapes = _header_shapes(weights, names)
    try:
        kwargs = config_from_json(config)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{config_path}: {one_line(err)}; {FIX}") from None
    if kwargs.get("model_type") != "i2v" or "proj.weight" not in {k[len(TRACK_PREFIX) :] for k in shapes}:
        raise ValueError(f"{weights}: a WanTrack DiT has the I2V image branch and track_encoder.proj; {FIX}")
    tw, pw = shapes[TRACK_PREFIX + "temporal_conv.weight"], shapes[TRACK_PREFIX + "proj.weight"]
    patch = shapes.get("patch_embedding.weight")
    if patch is None or patch[1] != LATENT + MASK + LATENT + pw[0]:
        raise ValueError(
            f"{weights}: patch_embedding takes {None if patch is None else patch[1]} input channels; a WanTrack "
            f"DiT takes {LATENT + MASK + LATENT} + {pw[0]} track channels (noisy | mask | first frame | tracks)"
        )
    base = flavor_config(FLAVOR)
    overrides = {}
    for k, v in kwargs.items():
        v = list(v) if isinstance(v, tuple) else v
        if k in ("in_dim", "model_type") or (k in ("qk_norm", "cross_attn_norm") and v):
            continue
        if k not in base or (list(base[k]) if isinstance(base[k], tuple) else base[k]) != v:
            overrides[k] = v
    text_dir = root / "text_encoder"
    text_dim = kwargs.get("text_dim", base["text_dim"])
    if (text_dir / "config.json").is_file():
        te = read_json_file(text_dir / "config.json", fix=FIX)
        if te.get("d_model") != text_dim:
            raise ValueError(
                f"{text_dir / 'config.json'}: d_model {te.get('d_model')} is not the DiT's text_dim {text_dim} "
                f"({config_path}); {FIX}"
            )
    model = {
        "flavor": FLAVOR,
        "layout": "wan_i2v",
        "track_channels": int(pw[0]),
        "track_embed_dim": int(tw[1]),
        "track_splat": "nearest",
        "track_convention": "fastvideo",
        "track_bias": any(TRACK_PREFIX + k in shapes for k in ("temporal_conv.bias", "proj.bias")),
        "text_encoder": "umt5",
        "text_encoder_path": str(text_dir),
        "overrides": overrides,
        "image_features": "clip",
        "image_encoder_path": str(root / "image_encoder"),
        # their pipeline prepares CLIP's pixels with the bundle's own CLIPImageProcessor
        "image_processor": str(root / "image_processor")
        if (root / "image_processor" / "preprocessor_config.json").is_file()
        else None,
    }
    recipe = _recipe(root)
    conventions = {
        "clean_first_frame": False,
        "schedule_shift": float(recipe["flow_shift"]),
        "num_frames": int(recipe["num_frames"]),
        "height": int(recipe["height"]),
        "width": int(recipe["width"]),
    }
    if _is_causal(root, config):
        source = str(root / "training_config.yaml") if (root / "training_config.yaml").is_file() else str(root)
        conventions["causal"] = _stream_config(recipe, source).to_dict()
    return {"model": model, "text_encoder_dim": int(text_dim), "ema": True, "conventions": conventions}


def wantrack_codec(path: str | os.PathLike) -> tuple[str, str] | None:
    """(codec name, checkpoint) of the bundle at ``path``: the Wan 2.1 VAE of its ``vae/`` folder; None when
    ``path`` is not a bundle."""
    folder = find_wantrack(path)
    if folder is None:
        return None
    return "wan2.1-vae", str(bundle_root(Path(path), folder) / "vae")
