"""A student's long streams per window of the horizon, on the panning and the knowable world, with and without
the sink (``trackstream.eval.long_horizon``, the measures make run reports).

    python lab/long_horizon.py --student assets/tiny-student [--factors 1,4,10] [--clips 2] --out OUT.json

``--student``: a shipped student folder (``student/`` + ``config.yaml``, its codec the teacher release's) or a
DMD / RL run directory (``export/student`` + ``config.yaml``, ``codec.checkpoint`` in it). The world, frame
size and horizon are the student's run config's (``data.*``); clips come from make run's long seed namespace.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from trackstream.data.batching import derive_seed
from trackstream.data.clips import DataConfig, make_world
from trackstream.eval.long_horizon import long_horizon_figures
from trackstream.eval.stream_eval import student_network
from trackstream.eval.stream_scoring import StreamEvalConfig
from trackstream.models.network import Network
from trackstream.stream.engine import StreamingGenerator
from trackstream.stream.options import add_precision_args, parsed_precision

TEACHER = Path(__file__).resolve().parents[1] / "assets" / "tiny-teacher"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", type=Path, required=True)
    ap.add_argument("--teacher", type=Path, default=TEACHER / "teacher", help="its conditioner (text, image)")
    ap.add_argument("--codec", type=Path, default=None, help="default: the student run's codec.checkpoint")
    ap.add_argument("--factors", default="1,4,10")
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    add_precision_args(ap)
    args = ap.parse_args(argv)
    device, dtype = parsed_precision(ap, args)
    torch.set_num_threads(args.threads)
    folder = args.student / "student" if (args.student / "student").is_dir() else args.student / "export" / "student"
    cfg = OmegaConf.to_container(OmegaConf.load(args.student / "config.yaml"), resolve=True)
    teacher = Network.open(args.teacher, "--teacher")
    codec = teacher.codec_for(None, None if args.codec is None else str(args.codec), field="--codec")
    factors = tuple(int(f) for f in args.factors.split(","))
    horizon = int(cfg["data"]["num_frames"])
    data = DataConfig(**{**cfg["data"], "num_frames": 1 + max(factors) * (horizon - 1)})
    _, codec_m, cond = teacher.for_inference(codec=codec, device=device, dtype=dtype)
    student = student_network(folder, device=device, dtype=dtype)
    engine = StreamingGenerator(student, codec_m, config=student.conventions.stream_config(str(folder)))
    ev = StreamEvalConfig(num_tracks=128)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figures = long_horizon_figures(
        args.out.parent,
        {"student": engine},
        codec_m,
        cond,
        make_world(data),
        [derive_seed(data.eval_seed, "long", i) for i in range(args.clips)],
        horizon_frames=horizon,
        factors=factors,
        cfg=ev,
    )
    figures = figures["student"]
    for key, r in figures.items():
        print(key, {w: {m: round(v, 3) for m, v in s.items()} for w, s in r["windows"].items()})
    summary = {k: {"windows": r["windows"], "num_clips": r["num_clips"]} for k, r in figures.items()}
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "student": str(args.student), **summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
