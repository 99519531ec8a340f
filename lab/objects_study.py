"""The capacity and loss study on the objects world: curves against training minutes, and the final measures.

    python -m lab.objects_study --runs RUNS [--measure] --out docs/embedded_world

``RUNS`` holds the study's runs (``python -m lab.teacher_study --out RUNS --recipes obj-25f,... --evals 4
--codec CODEC``; the ``obj-*`` and ``rel-*`` recipes) and, from ``python -m lab.teacher_study --cost``, every
candidate's seconds per step measured on one machine (``RUNS/cost.json``); candidates of earlier sessions
(in ``OUT/objects_study.json``, their runs elsewhere) are kept, re-costed on those figures. Per candidate, from its periodic held-out evaluations
(``eval.jsonl``, 8 clips at 25 frames, the teacher evaluation's figures): the EPE ratio with / without tracks,
points lost entering a latent group and inside one, the brightness gap and texture ratio of the last 8
frames against the ground truth, all against training minutes (each step costed at the median logged step time of the
run's second half); the slope of the ratio over the second half of the run (per 10 minutes: the study chooses by
it, not by the first point); the cost per step. ``--measure`` adds, for each finished run, the last 8 frames'
brightness and texture of its final export (``lab/frame_drift.py``, ``--clips`` 8, cached as ``RUN/drift.json``) and
the native-track drags of that export on the drag benchmark's translate scenes (``lab/teacher_drag.py``: ObjMC with the
sprite's tracks / without, ``--scenes`` 8), cached as ``RUN/drag.json``. Writes ``objects_study.json``, ``.md``
and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lab.teacher_study import RECIPES
from trackstream.eval.tables import markdown_table

KEYS = {
    "ratio": "epe_ratio_with_over_without",
    "lost entering": "lost_at_group_start_with_tracks",
    "lost inside": "lost_inside_group_with_tracks",
    "late brightness gap": "late_brightness_gap_with_tracks",
    "late texture ratio": "late_texture_ratio_with_tracks",
}


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _slope(points: list[dict]) -> float | None:
    """The ratio's slope per 10 training minutes over the second half of the run (the study chooses by it)."""
    half = [p for p in points if p["step"] >= points[-1]["step"] / 2] if points else []
    if len(half) < 2:
        return None
    x, y = np.array([p["minutes"] for p in half]), np.array([p["ratio"] for p in half])
    return float(np.polyfit(x, y, 1)[0] * 10)


def recosted(c: dict, cost: float) -> dict:
    """A candidate measured before (its steps and figures kept) on another cost per step."""
    points = [{**p, "minutes": round(p["step"] * cost / 60, 2)} for p in c["points"]]
    slope = _slope(points)
    return {
        **c,
        "seconds_per_step": round(cost, 2),
        "points": points,
        "ratio_slope_per_10_min": slope and round(slope, 4),
    }


def candidate(run: Path, cost: float | None = None) -> dict:
    # a step's cost: RUNS/cost.json's (every candidate measured on one machine, two at a time, one thread each:
    # lab.teacher_study --cost), else the median logged step time over the second half of the run
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "perf/step_time_s" in r]
    if cost is None:
        cost = float(np.median([r["perf/step_time_s"] for r in steps if r["step"] >= steps[-1]["step"] / 2]))
    minutes = {int(r["step"]): int(r["step"]) * cost / 60 for r in steps}
    points = []
    rows = _rows(run / "eval.jsonl")
    if (run / "eval.json").is_file() and (run / "results.json").is_file():  # the final evaluation
        rows.append(
            {
                "step": json.loads((run / "results.json").read_text())["step"],
                **json.loads((run / "eval.json").read_text()),
            }
        )
    for r in rows:
        near = min(minutes, key=lambda s: abs(s - r["step"]))
        points.append({"step": r["step"], "minutes": round(minutes[near], 2), **{k: r.get(v) for k, v in KEYS.items()}})
    slope = _slope(points)
    drag = json.loads((run / "drag.json").read_text()) if (run / "drag.json").is_file() else None
    drift = json.loads((run / "drift.json").read_text()) if (run / "drift.json").is_file() else None
    if drift is not None and points:  # the final export's last 8 frames (8 clips), where eval.jsonl has none
        last = points[-1]
        last["late brightness gap"] = last.get("late brightness gap") or drift["late"]["brightness_gap"][0]
        last["late texture ratio"] = last.get("late texture ratio") or drift["late"]["texture_ratio"][0]
    return {
        "overrides": list(RECIPES.get(run.name, ((), 0))[0]),
        "seconds_per_step": round(cost, 2),
        "points": points,
        "ratio_slope_per_10_min": None if slope is None else round(slope, 4),
        "native_over_no_drag": None if drag is None else round(drag["native / no drag"], 3),
        "objmc": None if drag is None else {k: round(drag[k]["objmc"], 2) for k in ("no drag", "native tracks")},
    }


def measure(run: Path, *, scenes: int = 8, clips: int = 8, steps: int = 24) -> None:
    from lab import teacher_drag

    export = run / "export" / "teacher"
    done = (run / "results.json").is_file() and json.loads((run / "results.json").read_text()).get("status") == "done"
    if not (done and export.is_dir()):
        return
    euler = ["--steps", str(steps)]
    if not (run / "drag.json").is_file():
        drag = ["--teacher", str(export), "--scenes", str(scenes), *euler, "--out", str(run / "drag.json")]
        teacher_drag.main(drag)
    if not (run / "drift.json").is_file():
        from omegaconf import OmegaConf

        from lab import frame_drift

        codec = OmegaConf.load(run / "config.yaml").codec.checkpoint
        args = ["--run", str(export), "--codec", str(codec), "--config", str(run / "config.yaml")]
        frame_drift.main([*args, "--samples", str(clips), *euler, "--out", str(run / "drift.json")])


def table(study: dict) -> str:
    head = [
        "candidate",
        "s / step",
        "minutes",
        "EPE with / without",
        "ratio slope / 10 min (2nd half)",
        "lost entering / inside",
        "late brightness gap",
        "late texture",
        "drags: native / no drag (ObjMC px)",
    ]
    rows = []
    for name, c in study.items():
        if not c["points"]:
            continue
        p = c["points"][-1]
        drag = (
            ""
            if c["objmc"] is None
            else (f"{c['native_over_no_drag']:.2f} ({c['objmc']['native tracks']:.1f} / {c['objmc']['no drag']:.1f})")
        )
        fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
        rows.append(
            [
                name,
                f"{c['seconds_per_step']:.2f}",
                f"{p['minutes']:.1f}",
                fmt(p["ratio"], ".3f"),
                fmt(c["ratio_slope_per_10_min"], "+.4f"),
                f"{fmt(p['lost entering'], '.1%')} / {fmt(p['lost inside'], '.1%')}",
                fmt(p["late brightness gap"], "+.1f"),
                fmt(p["late texture ratio"], ".2f"),
                drag,
            ]
        )
    # a study with no point yet still ends in a blank line after the rule, as objects_study.md always has
    return "\n".join(markdown_table(head, rows)) + "\n" + ("" if rows else "\n")


def plot(study: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(KEYS)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.3))
    for ax, key in zip(axes, panels):
        for name, c in study.items():
            pts = [p for p in c["points"] if p.get(key) is not None]
            ax.plot([p["minutes"] for p in pts], [p[key] for p in pts], "o-", label=name, ms=3)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("training minutes (1 thread)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].axhline(0.35, color="red", ls=":", lw=1)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--measure", action="store_true", help="native-track drags of each finished run's export")
    ap.add_argument("--scenes", type=int, default=8, help="--measure: translate scenes dragged per run")
    ap.add_argument("--clips", type=int, default=8, help="--measure: clips whose last frames are measured per run")
    ap.add_argument("--steps", type=int, default=24, help="--measure: the teacher's Euler steps per video")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    names = [n for n in RECIPES if n.startswith(("obj-", "rel-")) and (args.runs / n / "eval.jsonl").is_file()]
    if args.measure:
        for n in names:
            measure(args.runs / n, scenes=args.scenes, clips=args.clips, steps=args.steps)
    costs = json.loads((args.runs / "cost.json").read_text()) if (args.runs / "cost.json").is_file() else {}
    study = {n: candidate(args.runs / n, costs.get(n)) for n in names}
    # candidates measured in earlier sessions (their runs are not in RUNS) stay, on this machine's costs if known
    before = args.out / "objects_study.json"
    for n, c in (json.loads(before.read_text()) if before.is_file() else {}).items():
        if n not in study:
            study[n] = recosted(c, costs[n]) if n in costs else c
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "objects_study.json").write_text(json.dumps(study, indent=1))
    (args.out / "objects_study.md").write_text(table(study))
    plot(study, args.out / "objects_study.png")
    print(table(study))
    return 0


if __name__ == "__main__":
    sys.exit(main())
