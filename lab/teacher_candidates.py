"""Tiny-teacher candidates at equal CPU minutes: held-out EPE ratio and where points are lost, per candidate.

    python lab/teacher_candidates.py --run NAME=RUN_DIR:LOSSES.json ... --out docs/embedded_world

Each RUN_DIR is a teacher run started by ``python -m lab.ship_teacher start --run-dir RUN_DIR
--threads 1 --until STEPS <overrides>`` (its overrides in ``release_run.json``); LOSSES.json is
``lab/teacher_losses.py`` on its last checkpoint (16 held-out clips at 25 frames). The periodic evaluations
(``eval.jsonl``, 8 clips) give the earlier points. Training minutes are summed from the logged step times
(one thread each, two candidates at a time on 2 cores). Writes ``candidates.json`` and ``candidates.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def minutes_at(run: Path, step: int) -> float:
    rows = [r for r in _rows(run / "metrics.jsonl") if "perf/step_time_s" in r and r["step"] <= step]
    return sum(r["perf/step_time_s"] for r in rows) / 60.0  # logged every step (the release's log_every: 1)


def candidate(name: str, run: Path, losses: Path) -> dict:
    rec = json.loads((run / "release_run.json").read_text())
    points = [
        {
            "step": r["step"],
            "minutes": minutes_at(run, r["step"]),
            "ratio": r["epe_ratio_with_over_without"],
            "clips": 8,
        }
        for r in _rows(run / "eval.jsonl")
    ]
    loss = json.loads(losses.read_text())
    step = int(Path(loss["checkpoint"]).name.split("_")[-1])
    points.append({"step": step, "minutes": minutes_at(run, step), "ratio": loss["ratio"], "clips": 16})
    return {
        "name": name,
        "run": str(run),
        "overrides": rec.get("command", [])[4:-1],
        "points": points,
        "lost_at_group_start": loss["lost_at_group_start_with_tracks"],
        "lost_inside_group": loss["lost_inside_group_with_tracks"],
        "epe_with_tracks": loss["epe_with_tracks"],
        "epe_without_tracks": loss["epe_without_tracks"],
        "codec_round_trip": loss["floors"]["epe_codec_round_trip"],
        "frozen": loss["floors"]["epe_frozen_frame"],
        "hazard_per_frame": loss["hazard_per_frame"]["with_tracks"],
    }


def plot(cands: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for c in cands:
        p = c["points"]
        axes[0].plot([x["minutes"] for x in p], [x["ratio"] for x in p], "o-", label=c["name"])
        axes[1].plot(range(1, len(c["hazard_per_frame"])), c["hazard_per_frame"][1:], ".-", label=c["name"])
    axes[0].axhline(0.35, color="k", ls=":", lw=0.8, label="target 0.35")
    axes[0].set(
        xlabel="training minutes (1 thread)", ylabel="EPE with / without tracks", title="teacher at equal minutes"
    )
    for t in range(1, len(cands[0]["hazard_per_frame"]), 4):
        axes[1].axvline(t, color="grey", lw=0.5)
    axes[1].set(xlabel="pixel frame t (grey: a latent group's first frame)", ylabel="share of held points lost at t")
    axes[1].set_title("where the teacher's videos lose points", fontsize=10)
    names = [c["name"] for c in cands]
    x = range(len(cands))
    axes[2].bar([i - 0.2 for i in x], [c["lost_at_group_start"] for c in cands], 0.4, label="entering a group")
    axes[2].bar([i + 0.2 for i in x], [c["lost_inside_group"] for c in cands], 0.4, label="inside a group")
    axes[2].set_xticks(list(x), names, fontsize=7, rotation=15)
    axes[2].set(ylabel="share of held points lost per frame", title="at the last checkpoint")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR:LOSSES.json")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    cands = []
    for spec in args.run:
        name, rest = spec.split("=", 1)
        run, losses = rest.rsplit(":", 1)
        cands.append(candidate(name, Path(run), Path(losses)))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "candidates.json").write_text(
        json.dumps({"command": " ".join(sys.argv), "candidates": cands}, indent=1)
    )
    plot(cands, args.out / "candidates.png")
    for c in cands:
        last = c["points"][-1]
        print(
            f"{c['name']}: ratio {last['ratio']:.3f} at step {last['step']} ({last['minutes']:.1f} min); lost entering a "
            f"group {c['lost_at_group_start']:.3f}, inside {c['lost_inside_group']:.3f}; codec {c['codec_round_trip']:.2f} px"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
