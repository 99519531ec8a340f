"""Benchmark: the time to score N synthetic clips with every metric a CPU can compute (16 clips on 2 cores by
default).

Scores the held-out clips of the shipped tiny teacher's world as two rows (a degraded copy of the
ground truth, standing in for a generated video, and the frozen first frame) plus the ground-truth
reference: EPE (lk_plain), PSNR, SSIM, the codec proxy FVD (the shipped codec), and LPIPS (AlexNet)
and FID (Inception-v3 pool3) with RANDOMLY INITIALISED networks of the official architectures: the
time of a forward does not depend on the weights, the values printed for them mean nothing (so the
benchmark needs no weight files). FVD's I3D is a TorchScript file only, so it is left out.

    trackstream bench-eval                 # 16 clips, 2 threads
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
ASSET = ROOT / "assets" / "tiny-teacher"


def main(argv: list[str] | None = None) -> dict:
    from trackstream.data.trackers import build_tracker
    from trackstream.eval.benchmarks import BenchmarkConfig, load_benchmark
    from trackstream.eval.command import EvalCommandConfig, benchmark_world
    from trackstream.eval.floors import reference_rows
    from trackstream.eval.harness import Extractors, score_rows
    from trackstream.eval.inception import FIDInceptionV3
    from trackstream.eval.lpips import LPIPS
    from trackstream.models.codecs import build_codec

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="outputs/bench_eval.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    cfg = EvalCommandConfig(
        run="bench", data_config=str(ASSET / "config.yaml"), benchmark=BenchmarkConfig(num_samples=args.clips)
    )
    samples = load_benchmark(cfg.benchmark, data_cfg=benchmark_world(cfg, None))
    rng = np.random.default_rng(0)
    degraded = {s.id: np.clip(s.frames + rng.normal(0, 12, s.frames.shape), 0, 255).astype(np.uint8) for s in samples}
    rows = {"degraded": degraded, **reference_rows(samples)}
    torch.manual_seed(0)
    ext = Extractors(codec=build_codec("tiny-ae", checkpoint=str(ASSET / "codec.pt")).eval())
    ext._cache["lpips"] = LPIPS("alex").eval()  # random weights: timing only
    ext._cache["fid"] = FIDInceptionV3().eval()
    t0 = time.perf_counter()
    results = score_rows(
        rows,
        samples,
        metrics=["epe", "psnr", "ssim", "lpips", "fid", "proxy_fvd"],
        tracker=build_tracker("lk_plain"),
        extractors=ext,
        progress=False,
    )
    seconds = time.perf_counter() - t0
    frames = sum(s.frames.shape[0] for s in samples)
    out = {
        "clips": len(samples),
        "rows": len(rows),
        "frames_per_clip": samples[0].frames.shape[0],
        "size": list(samples[0].frames.shape[1:3]),
        "threads": args.threads,
        "seconds": round(seconds, 1),
        "frames_scored": frames * len(rows),
        "values": {
            r: {k: v for k, v in res.items() if k in ("epe", "psnr", "ssim", "proxy_fvd")} for r, res in results.items()
        },
        "note": "lpips and fid were timed with random-weight networks; their values are not reported",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
