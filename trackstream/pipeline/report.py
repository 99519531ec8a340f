"""The end-to-end report: ``report.json``, ``report.md`` and its plots, from the figures of one run.

``report.json`` holds the run's figures as measured. ``report.md`` states them beside the floors
(``eval.floors``: the ground truth through the tracker, the codec's round trip, a pixel oracle copier and the
frozen first frame, on the same held-out clips) and judges nothing. Every EPE is ``eval.metrics.motion_epe``
(the one protocol, the same as ``python -m trackstream.eval``'s: a lost point is held where it was last seen,
never dropped). Beside every EPE the quality columns (``eval.quality``; their cells and per-chunk section in
``pipeline/report_quality.py``): the no-hold EPE over the frozen first frame's, the share of points lost, and
the brightness gap and texture ratio against the ground truth per chunk and over the last 8 frames.
``write_report`` renders the markdown summary (its tables and sentences: ``pipeline/report_tables.py``) with
matplotlib plots (Agg backend, PNG files next to the report):
  epe.png        EPE with / without tracks per model, with the floors (trackstream/eval/floors.py)
  drift.png      per-chunk drift measures of the long rollout, with and without the sink
  latency.png    per-chunk latency over the long rollout
  training.png   training losses: the shipped teacher's own training run, the teacher fine-tune,
                 ODE init, DMD and, when the run has one, the RL stage (its loss and mean reward per
                 round, ``train/rl/reward``) from their metrics.jsonl
  samples.png    (written by eval.stream_eval) held-out frames: ground truth, teacher, students
  strip.png      (written by eval.stream_eval) two held-out clips at frames 0, 8, 16, 24, every model with tracks
and embeds the side-by-side GIFs of the first held-out samples (ground truth | teacher | students).
A run with an RL stage (``rl_*`` figures) gets a row "student after RL" beside the DMD student's; the
ratios, samples, long rollouts and latency stay the DMD student's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from trackstream.pipeline.report_figures import models
from trackstream.pipeline.report_plots import get_path as _get
from trackstream.pipeline.report_plots import write_plots
from trackstream.pipeline.report_quality import chunk_section
from trackstream.pipeline.report_tables import (
    dmd_section,
    long_horizon_section,
    overview,
    ratios_table,
    rl_sentences,
    run_sections,
    teacher_sentences,
)
from trackstream.train.dmd.build import STAGE as DMD
from trackstream.train.teacher.build import STAGE as TEACHER

__all__ = ["write_report", "read_metrics", "json_safe"]


def json_safe(obj):
    """JSON-safe copy: non-finite floats become null (strict JSON has no NaN), tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (int, str, bool)) or obj is None:
        return obj
    return str(obj)


def read_metrics(path: Path) -> list[dict]:
    """A ``metrics.jsonl`` (or ``eval.jsonl``) as rows; [] when absent. A line that does not parse is the
    one a running stage is writing, and is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def _opening(f: dict, run_dir: Path) -> list[str]:
    """The title, what was measured where, and the shipped teacher the run fine-tuned (when it did)."""
    lines = [
        "# TrackStream end-to-end run",
        "",
        f"Run directory `{run_dir}`"
        + (f" (`--sizes {f['sizes']}`)" if f.get("sizes") else "")
        + ". Every figure below was measured in this run"
        + (f", on {f['num_heldout']} held-out clips of {f.get('num_frames')} frames" if f.get("num_heldout") else "")
        + ".",
        "",
    ]
    release = _get(f, "stages", TEACHER.name) or {}
    if release.get("release"):
        lines += [
            f"Teacher: the shipped release `{release['release']}` ({release.get('release_steps')} steps, trained "
            f"from commit {str(release.get('release_commit'))[:10]}), fine-tuned here for "
            f"{release.get('steps')} steps with mid-frame masking.",
            "",
        ]
    dmd = _get(f, "stages", DMD.name) or {}
    if dmd.get("from_generator_updates") is not None:  # --sizes full: the DMD stage continued a shipped checkpoint
        lines += [
            f"DMD student: the shipped student's DMD checkpoint `{dmd['from']}` ({dmd['from_generator_updates']} "
            f"generator updates, hours of CPU), continued here for {dmd.get('generator_updates')} more with a critic "
            "started from the teacher; the ODE-init student was trained here from nothing.",
            "",
        ]
    return lines


def _plots_section(run_dir: Path, plots: list[str]) -> list[str]:
    """The plots, after the held-out samples and the README's strip when eval.stream_eval wrote them."""
    if (run_dir / "samples.png").is_file():
        plots = ["samples.png", *plots]
    if (run_dir / "strip.png").is_file():  # two clips at frames 0, 8, 16, 24 (the README's status strip)
        plots = ["strip.png", *plots]
    if plots:
        return ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return []


def write_report(run_dir: Path, figures: dict, *, metrics: dict[str, list[dict]] | None = None) -> dict:
    """Write report.json (the figures) and report.md (+ plots); returns the report."""
    run_dir = Path(run_dir)
    f = figures
    report = dict(figures)
    (run_dir / "report.json").write_text(json.dumps(json_safe(report), indent=2))
    plots = write_plots(run_dir, figures, metrics or {}, models=models(f))
    lines = _opening(f, run_dir)
    lines += ["## At a glance", "", *overview(f)]
    lines += teacher_sentences(f)
    lines += rl_sentences(f)
    lines += ratios_table(f)
    lines += dmd_section(f)
    lines += chunk_section(f, models(f))
    lines += long_horizon_section(f, run_dir)
    lines += run_sections(f)
    lines += _plots_section(run_dir, plots)
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    return report
