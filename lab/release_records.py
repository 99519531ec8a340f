"""What a release run logged, read from its ``metrics.jsonl``: its losses and its training seconds (the
manifests of ``lab.ship_teacher`` and ``lab.small_world_ship``, and their tests)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["logged_losses", "training_seconds"]


def logged_losses(metrics: Path, key: str = "train/loss", limit: int | None = None) -> list[tuple[int, float]]:
    """(step, value) of ``key`` from a metrics.jsonl, in step order, each step once (a resumed run
    re-logs nothing before its checkpoint, but a crash between a log and a checkpoint can)."""
    seen: dict[int, float] = {}
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if key in row:
                seen[int(row["step"])] = float(row[key])
    out = sorted(seen.items())
    return out[:limit] if limit else out


def training_seconds(metrics: Path) -> float:
    """Wall seconds of training steps, summed from the logged mean step times (resume-proof)."""
    total, last = 0.0, 0
    if metrics.is_file():
        rows = {}
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if "perf/step_time_s" in row:
                rows[int(row["step"])] = float(row["perf/step_time_s"])
        for step in sorted(rows):
            total += rows[step] * (step - last)
            last = step
    return total
