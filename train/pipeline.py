"""`make run`: the end-to-end job on the embedded default (synthetic world, tiny models).

The full MotionStream pipeline is codec -> teacher -> ODE pairs -> ODE init -> Self-Forcing
DMD -> streaming generation -> report. Stages are added here as they are wired in; the ones not
wired in yet are listed as such in ``report.json`` and on the console, never faked.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

# (name, issue that builds it) of every stage of the full pipeline, in order.
PIPELINE = [
    ("foundation", 2), ("data", 5), ("codec", 4), ("teacher", 6), ("ode_pairs", 7),
    ("ode_init", 7), ("dmd", 7), ("stream", 7),
]


def stage_foundation(run_dir: Path) -> dict:
    """Wan DiT: real flavors on meta with official counts; tiny forward; checkpoint round trip."""
    from models.checkpoint import load_wan, save_wan
    from models.flavors import OFFICIAL_COUNTS, build_wan

    counts = {}
    for name, (expected, _) in OFFICIAL_COUNTS.items():
        n = sum(p.numel() for p in build_wan(name).parameters())
        counts[name] = {"params": n, "official": expected, "match": n == expected}
    torch.manual_seed(0)
    model = build_wan("tiny").eval()
    x, ctx = torch.randn(1, 16, 5, 8, 8), torch.randn(1, 8, model.text_dim)
    t0 = time.perf_counter()
    with torch.no_grad():
        v = model(x, torch.tensor([500.0]), ctx)
    fwd_ms = (time.perf_counter() - t0) * 1e3
    off = save_wan(model, run_dir / "checkpoints" / "tiny-official")
    dif = save_wan(load_wan(off), run_dir / "checkpoints" / "tiny-diffusers", fmt="diffusers")
    back = load_wan(dif)
    lossless = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    return {
        "real_flavor_param_counts": counts,
        "tiny_params": sum(p.numel() for p in model.parameters()),
        "tiny_forward_ms_cpu": round(fwd_ms, 2),
        "tiny_output_shape": list(v.shape),
        "checkpoint_round_trip_official_diffusers_lossless": lossless,
    }


STAGES: dict[str, Callable[[Path], dict]] = {"foundation": stage_foundation}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default=os.environ.get("RUN_DIR", "runs/make-run"))
    args = ap.parse_args(argv)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"run_dir": str(run_dir), "stages": {}}
    for name, issue in PIPELINE:
        if name not in STAGES:
            print(f"[pipeline] {name:11s} not part of make run yet (issue {issue}) - skipped")
            report["stages"][name] = {"status": f"not part of make run yet (issue {issue})"}
            continue
        print(f"[pipeline] {name:11s} running ...", flush=True)
        t0 = time.perf_counter()
        result = STAGES[name](run_dir)
        result = {"status": "done", "seconds": round(time.perf_counter() - t0, 2), **result}
        report["stages"][name] = result
        print(f"[pipeline] {name:11s} done in {result['seconds']} s")
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    missing = [n for n, _ in PIPELINE if n not in STAGES]
    print(f"[pipeline] report: {run_dir / 'report.json'}")
    if missing:
        print(f"[pipeline] the end-to-end pipeline is incomplete: {', '.join(missing)} are not part of make run yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
