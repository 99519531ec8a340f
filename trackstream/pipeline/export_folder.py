"""A network as TrackStream's own export folder (network.json, dit/, heads.pt: ``models.motion_wan.save_network``),
what every command loads as it loads a trained stage's export. Its use: a FastVideo WanTrack bundle written as an
export (``trackstream export --format trackstream``, and the transformer of ``--format pipeline``): the track head
folded into ours, the network.json derived from the bundle, the encoders' folders named relative to it (``save_network``), so the export and the bundle move together."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["write_export"]


def write_export(folder: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The network folder ``folder`` (an export or a WanTrack bundle) written to ``out`` as an export folder, with
    the codec its folder records (a bundle's ``vae/``). ``out`` must not hold anything yet; a failure leaves
    nothing there."""
    from trackstream.models.motion_wan import save_network
    from trackstream.models.network import Network

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder: pick a new folder or remove it")
    network = Network.open(folder, "--network")
    own = network.codec
    try:
        save_network(
            network.load().state_dict(),
            out,
            model_cfg=dict(network.meta["model"]),  # its encoders' folders stay where they are, named from out
            text_encoder_dim=network.text_dim,
            ema=bool(network.meta.get("ema", False)),
            conventions=network.meta.get("conventions"),
            codec=None if own is None else {"name": own.name, "checkpoint": own.checkpoint},
        )
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out
