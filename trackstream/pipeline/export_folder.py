"""A network as TrackStream's own export folder (network.json, dit/, heads.pt: ``models.motion_wan.save_network``),
what every command loads as it loads a trained stage's export. Its use: a FastVideo WanTrack bundle written as an
export (``trackstream export --format trackstream``, and the transformer of ``--format pipeline``): the track head
folded into ours, the network.json derived from the bundle, the encoders' folders named by absolute paths."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["write_export"]


def write_export(folder: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The network folder ``folder`` (an export or a WanTrack bundle) written to ``out`` as an export folder. ``out``
    must not hold anything yet; a failure leaves nothing there."""
    from trackstream.models.motion_wan import load_network, read_network_json, save_network

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder: pick a new folder or remove it")
    meta = read_network_json(folder)
    model = dict(meta["model"])
    for key in ("text_encoder_path", "image_encoder_path", "image_processor"):  # the folders stay where they are
        if model.get(key):
            model[key] = str(Path(model[key]).resolve())
    net = load_network(folder)
    try:
        save_network(
            net.state_dict(),
            out,
            model_cfg=model,
            text_encoder_dim=int(meta["text_encoder_dim"]),
            ema=bool(meta.get("ema", False)),
            conventions=meta.get("conventions"),
        )
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out
