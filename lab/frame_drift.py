"""Where a network's videos drift from the ground truth: brightness gap and texture energy per pixel frame.

    python lab/frame_drift.py --run EXPORT --codec codec.pt --config config.yaml [--frames 25] [--samples 8] \
        [--guidance joint --w-text 3 --w-motion 1.5] --out OUT.json

``EXPORT`` is a teacher or student export (``eval.generate.generate_videos`` streams a student, samples a
teacher with the given guidance and 24 Euler steps). Held-out clips of the config's world at ``--frames``
frames, with all their grid tracks (the synthetic benchmark). Per pixel frame, over the clips: the brightness gap (mean grey level of the
video minus the ground truth's, grey levels of 255) and the texture-energy ratio (detail finer than a few
pixels, video / ground truth), both ``eval.metrics.frame_stats``; the same per streamed chunk
(``chunk_spans``) and over the last 8 frames. This is how a video that goes dark or turns into a block
mosaic past some frame is told apart from one whose tracks are merely followed loosely.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from trackstream.data.clips import DataConfig
from trackstream.diffusion.samplers import GuidanceConfig, SamplerConfig
from trackstream.eval.benchmarks import BenchmarkConfig, load_benchmark
from trackstream.eval.generate import GenerateConfig, generate_videos
from trackstream.eval.metrics import frame_stats
from trackstream.eval.quality import chunk_spans, late_span
from trackstream.stream.options import add_precision_args, parsed_precision


def drift(videos: dict, samples: list, spans: list[tuple[int, int]]) -> dict:
    """Per span, pooled over the samples: brightness gap (mean of the per-video gaps) and texture ratio (the
    videos' summed energy over the ground truth's)."""
    parts = [frame_stats(videos[s.id], s.frames, spans) for s in samples]
    gap = np.mean([p["brightness_gap"] for p in parts], axis=0)
    ratio = np.sum([p["energy"] for p in parts], axis=0) / np.sum([p["gt_energy"] for p in parts], axis=0)
    return {"spans": spans, "brightness_gap": gap.round(2).tolist(), "texture_ratio": ratio.round(3).tolist()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a teacher or student export folder")
    ap.add_argument("--codec", type=Path, required=True)
    ap.add_argument("--config", type=Path, required=True, help="the teacher run's config.yaml (its world)")
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--steps", type=int, default=24, help="a teacher's Euler steps")
    ap.add_argument("--guidance", default="joint")
    ap.add_argument("--w-text", type=float, default=3.0)
    ap.add_argument("--w-motion", type=float, default=1.5)
    ap.add_argument("--threads", type=int, default=1)
    add_precision_args(ap)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    parsed_precision(ap, args)  # a bad --device / --dtype ends here, in one line
    torch.set_num_threads(args.threads)
    cfg = OmegaConf.to_container(OmegaConf.load(args.config), resolve=True)
    data = dataclasses.replace(DataConfig(**cfg["data"]), num_frames=args.frames)
    bench = BenchmarkConfig(name="synthetic", num_samples=args.samples, num_frames=args.frames)
    samples = load_benchmark(bench, data_cfg=data)
    guidance = GuidanceConfig(mode=args.guidance, w_text=args.w_text, w_motion=args.w_motion)
    gen = GenerateConfig(
        codec={"name": cfg["codec"]["name"], "checkpoint": str(args.codec)},
        sampler=SamplerConfig(steps=args.steps, guidance=guidance),
        device=args.device,
        dtype=args.dtype,
    )
    videos = generate_videos(args.run, samples, mode="with_tracks", cfg=gen)
    T = args.frames
    out = {
        "run": str(args.run),
        "frames": T,
        "samples": len(samples),
        "guidance": dataclasses.asdict(guidance),
        "per_frame": drift(videos, samples, [(t, t + 1) for t in range(T)]),
        "per_chunk": drift(videos, samples, chunk_spans(T)),
        "late": drift(videos, samples, [late_span(T)]),
    }
    pf = out["per_frame"]
    print("frame       " + " ".join(f"{t:5d}" for t in range(T)))
    print("bright gap  " + " ".join(f"{x:5.1f}" for x in pf["brightness_gap"]))
    print("texture     " + " ".join(f"{x:5.2f}" for x in pf["texture_ratio"]))
    late = out["late"]
    print(
        f"last 8 frames: brightness gap {late['brightness_gap'][0]:+.1f}, texture ratio {late['texture_ratio'][0]:.2f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
