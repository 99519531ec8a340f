"""A teacher release run's held-out figures against training steps: where its EPE ratio and its boundary losses flatten.

    python lab/teacher_curve.py --run RUN_DIR --out docs/embedded_world

RUN_DIR is a release run (``python -m lab.ship_teacher start --run-dir RUN_DIR``): its periodic
evaluations (``eval.jsonl``, ``eval.periodic_clips`` held-out clips each) and its final one (``eval.json``, 16 clips).
Per point: EPE with tracks over without, and the share of points lost entering a latent frame's 4-frame group and
inside one (``metrics.track_motion``). Writes ``release_curve.json`` and ``release_curve.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KEYS = (
    ("epe_ratio_with_over_without", "EPE with / without tracks"),
    ("lost_at_group_start_with_tracks", "lost entering a group"),
    ("lost_inside_group_with_tracks", "lost inside a group"),
)


def curve(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines() if x.strip()]
    points = [{"step": r["step"], "clips": "periodic"} | {k: r.get(k) for k, _ in KEYS} for r in rows]
    final = run / "eval.json"
    if final.is_file():
        f = json.loads(final.read_text())
        step = json.loads((run / "results.json").read_text()).get("step")
        points.append({"step": step, "clips": f.get("num_samples")} | {k: f.get(k) for k, _ in KEYS})
    return points


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if not (args.run / "eval.jsonl").is_file():
        print(f"error: {args.run / 'eval.jsonl'}: no periodic evaluations; pass a teacher release run", file=sys.stderr)
        return 2
    points = curve(args.run)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "release_curve.json").write_text(json.dumps({"run": str(args.run), "points": points}, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for key, label in KEYS:
        pts = [(p["step"], p[key]) for p in points if p.get(key) is not None]
        ax = axes[0] if key.startswith("epe") else axes[1]
        ax.plot([s for s, _ in pts], [v for _, v in pts], "o-", label=label, ms=3)
    axes[0].axhline(0.35, color="r", ls="--", lw=1, label="target 0.35")
    axes[0].set_ylabel("EPE with / without tracks")
    axes[1].set_ylabel("share of live points lost")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out / "release_curve.png", dpi=110)
    for p in points:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
