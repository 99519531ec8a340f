"""A trained network out to the community's formats: a diffusers ``WanTransformer3DModel`` folder or
the official Wan layout (what Wan-AI release folders hold for the DiT).

Both are ``config.json`` + ``diffusion_pytorch_model.safetensors`` (``models.checkpoint.save_wan``);
they differ in key names and config fields. The DiT is written with the input width it was trained
with: ``in_channels`` (diffusers) / ``in_dim`` (official) counts the noisy latent AND the condition
channels concatenated after it (``models.channel_layouts``: e.g. wan_i2v with 32 track channels =
16 + 4 + 16 + 32 = 68), so a diffusers user passes ``hidden_states = cat([x, y], dim=1)``.

What is not a Wan DiT travels beside it, where neither diffusers nor Wan's loader looks:
- ``trackstream_heads.pt``: the track head (``track_encoder.*``: rasterised track embeddings ->
  the track channels of y) and the text projection (``text_proj.*``: the frozen text encoder's
  width -> the DiT's text_dim), as a torch state dict with MotionWan's key names;
- ``trackstream_network.json``: the export's ``network.json`` (model config, conventions) plus
  ``dit_input``: how the DiT's input channels are ordered.
``model.init_from=<folder>`` reads the folder back, heads included (``models.motion_wan.read_init``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from trackstream.models.checkpoint import SIDE_HEADS, SIDE_NETWORK, save_wan

__all__ = ["FORMATS", "find_network", "export_wan", "dit_input"]

FORMATS = ("diffusers", "official")


def find_network(path: str | os.PathLike) -> Path:
    """An exported network folder (``network.json``), given directly or as a run directory whose
    ``export/`` holds exactly one; otherwise a one-line ValueError saying what to pass."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"--network {path} does not exist: pass an exported network folder (<run>/export/<name>)")
    if (path / "network.json").is_file():
        return path
    found = sorted(p.parent for p in path.glob("export/*/network.json"))
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"--network {path} is a run with several exports {[p.name for p in found]}: pass one of them")
    raise ValueError(
        f"--network {path} has no network.json (nor export/*/network.json): pass a folder written by a "
        "training stage's export (<run>/export/teacher or <run>/export/student)"
    )


def dit_input(model_cfg: dict, in_dim: int, latent: int) -> dict:
    """The channel order of the DiT's input, for whoever calls the exported DiT without TrackStream."""
    layout, track = model_cfg.get("layout", "wan_i2v"), int(model_cfg.get("track_channels", 0))
    return {
        "in_channels": in_dim,
        "layout": layout,
        "track_channels": track,
        "order": f"noisy latent ({latent}), then y ({in_dim - latent}) as models.channel_layouts.compose_condition"
        f"({layout!r}) builds it; the track channels are track_encoder's output ({SIDE_HEADS})",
    }


def export_wan(network: str | os.PathLike, out: str | os.PathLike, *, fmt: str) -> Path:
    """Write the exported network at ``network`` to ``out`` as ``fmt`` ("diffusers" | "official"),
    with the heads and the network description as side files. ``out`` must not hold anything yet."""
    from trackstream.models.motion_wan import load_network, read_network_json

    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r} is not one of {FORMATS}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder: pick a new folder or remove it")
    folder = find_network(network)
    meta = read_network_json(folder)
    net = load_network(folder)
    save_wan(net.dit, out, fmt=fmt)  # written aside and renamed: never half a DiT under out
    try:
        heads = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items() if not k.startswith("dit.")}
        torch.save(heads, out / SIDE_HEADS)
        side = {
            **meta,
            "source": str(folder),
            "format": fmt,
            "dit_input": dit_input(meta["model"], net.dit.in_dim, net.dit.out_dim),
        }
        (out / SIDE_NETWORK).write_text(json.dumps(side, indent=2, default=str))
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out
