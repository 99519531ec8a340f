"""Export a trained network as a diffusers ``WanTransformer3DModel`` folder or in the official Wan layout
(what Wan-AI release folders hold for the DiT), or a student as a whole diffusers pipeline that streams, or a
network as TrackStream's own export folder.

    trackstream export --network runs/x/export/teacher --format diffusers --out OUT
    trackstream export --network runs/x --format official --out OUT     # a run with one export
    trackstream export --network runs/x/export/student --format pipeline --out OUT    # with the codec it records
    trackstream export --network Track-v0 --format trackstream --out OUT   # a WanTrack bundle as an export

``--format pipeline``: ``DiffusionPipeline.from_pretrained(OUT, trust_remote_code=True)`` loads it, whole clips
or chunk by chunk (``pipeline.export_pipeline``, ``stream.diffusers_pipeline``; docs/diffusers.md).

``--network``: an exported network folder (network.json, dit/, heads.pt: what a training stage writes to
``<run>/export/<name>``), a FastVideo WanTrack bundle, or a run directory with exactly one export.
``--format trackstream`` writes that export folder (``models.motion_wan.save_network``): a bundle's track head
folded into ours, its network.json derived from the bundle, naming the encoders' folders and the bundle's VAE
relative to the export (move the two together and it still streams, with no codec option). Both formats are
``config.json`` +
``diffusion_pytorch_model.safetensors`` (``models.wan_io.save_wan``); they differ in key names and config
fields. The DiT goes out with the input width it was trained with: ``in_channels`` (diffusers) / ``in_dim``
(official) counts the noisy latent AND the condition channels concatenated after it
(``models.channel_layouts``: e.g. wan_i2v with 32 track channels = 16 + 4 + 16 + 32 = 68), so a diffusers
user passes ``hidden_states = cat([x, y], dim=1)``.

What is not a Wan DiT travels beside it, where neither diffusers nor Wan's loader looks:
- ``trackstream_heads.pt``: the track head (``track_encoder.*``: rasterised track embeddings ->
  the track channels of y) and the text projection (``text_proj.*``: the frozen text encoder's
  width -> the DiT's text_dim), as a torch state dict with MotionWan's key names;
- ``trackstream_network.json``: the export's ``network.json`` (model config, conventions) plus
  ``dit_input``: how the DiT's input channels are ordered (docs/checkpoints.md).
``model.init_from=OUT`` reads the folder back, heads included (``models.motion_wan.read_init``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch

from trackstream.models.formats.checkpoint import SIDE_HEADS, SIDE_NETWORK

__all__ = ["FORMATS", "find_network", "export_wan", "export_trackstream", "dit_input", "main"]

FORMATS = ("diffusers", "official", "pipeline", "trackstream")
DIT_FORMATS = ("diffusers", "official")  # the DiT alone, by export_wan


def find_network(path: str | os.PathLike) -> Path:
    """The exported network folder ``path`` names (``models.network.Network``: an export, a run directory holding
    one, a release folder, a WanTrack bundle); otherwise a one-line ValueError saying what to pass."""
    from trackstream.models.network import Network

    if not Path(path).exists():
        raise ValueError(f"--network {path} does not exist: pass an exported network folder (<run>/export/<name>)")
    return Network.open(path, "--network").folder


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
    from trackstream.models.network import Network
    from trackstream.models.wan_io import save_wan

    if fmt not in DIT_FORMATS:
        raise ValueError(f"--format {fmt!r} is not one of {DIT_FORMATS}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder: pick a new folder or remove it")
    folder = find_network(network)
    opened = Network.open(folder, "--network")
    meta, net = opened.meta, opened.load()
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


def export_trackstream(network: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the network at ``network`` (an export, a WanTrack bundle or a run with one export) to ``out`` as
    TrackStream's export folder (``pipeline.export_folder.write_export``)."""
    from trackstream.pipeline.export_folder import write_export

    return write_export(find_network(network), out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="trackstream export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--network", type=Path, required=True, help="exported network folder, or a run with one export")
    # not argparse choices: an unknown format is the same one-line error as every other bad input
    ap.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    ap.add_argument("--out", type=Path, required=True, help="a new (or empty) folder")
    ap.add_argument(
        "--codec", default=None, help="--format pipeline: another checkpoint of the student's codec (default: its own)"
    )
    ap.add_argument("--codec-name", default=None, help="--format pipeline: the codec's name (default: its folder's)")
    args = ap.parse_args(argv)
    try:
        if args.format == "pipeline":
            from trackstream.pipeline.export_pipeline import export_pipeline

            folder = find_network(args.network)  # here: export_pipeline does not import this module (no circle)
            out = export_pipeline(folder, args.out, codec=args.codec, codec_name=args.codec_name)
            print(
                f"[export_network] {out}: diffusers pipeline (DiffusionPipeline.from_pretrained(..., trust_remote_code=True))"
            )
            return 0
        if args.format == "trackstream":
            out = export_trackstream(args.network, args.out)
            print(f"[export_network] {out}: a TrackStream export (network.json, dit/, heads.pt)")
            return 0
        if args.format not in FORMATS:
            raise ValueError(f"--format {args.format!r} is not one of {FORMATS}")
        out = export_wan(args.network, args.out, fmt=args.format)
    except ValueError as e:  # CheckpointError included: one line, no traceback
        print(f"[export_network] error: {e}", file=sys.stderr)
        return 2
    print(f"[export_network] {out}: {args.format} DiT + trackstream_heads.pt + trackstream_network.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
