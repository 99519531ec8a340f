"""Export a trained network as a diffusers ``WanTransformer3DModel`` folder or in the official Wan layout.

    python -m trackstream.pipeline.export_network --network runs/x/export/teacher --format diffusers --out OUT
    trackstream export --network runs/x --format official --out OUT     # a run with one export

``--network``: an exported network folder (network.json, dit/, heads.pt: what a training stage writes to
``<run>/export/<name>``) or a run directory with exactly one export. The DiT goes out with its real input
width (latent + condition channels); the track head and text projection go beside it in
``trackstream_heads.pt`` and the model config in ``trackstream_network.json`` (``models.wan_export``;
docs/checkpoints.md). ``model.init_from=OUT`` reads the folder back.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trackstream.models.wan_export import FORMATS, export_wan

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m trackstream.pipeline.export_network", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--network", type=Path, required=True, help="exported network folder, or a run with one export")
    # not argparse choices: an unknown format is the same one-line error as every other bad input
    ap.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    ap.add_argument("--out", type=Path, required=True, help="a new (or empty) folder")
    args = ap.parse_args(argv)
    try:
        out = export_wan(args.network, args.out, fmt=args.format)
    except ValueError as e:  # CheckpointError included: one line, no traceback
        print(f"[export_network] error: {e}", file=sys.stderr)
        return 2
    print(f"[export_network] {out}: {args.format} DiT + trackstream_heads.pt + trackstream_network.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
