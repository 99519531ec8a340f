"""How the pipeline calls a training stage: the stage's Hydra app in a child process (resumed from its
checkpoints, skipped when done). A stage line names the network it is given and the stage's own choices: the
stage reads the network's settings from it (``train.teacher_record``).

``run`` (make run's stage list) and the lab's chains call stages through it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

__all__ = [
    "ROOT",
    "COMMON",
    "PipelineError",
    "train_stage",
]

ROOT = Path(__file__).resolve().parents[2]
COMMON = ["logger.progress_bar=false"]  # the pipeline draws one bar per stage itself


def train_stage(run_dir: Path, name: str, overrides: list[str]) -> dict:
    """One stage through the real CLI (resumes from its checkpoints; skipped when already done)."""
    from trackstream.pipeline.stage_runner import StageFailed, run_logged

    stage_dir = (run_dir / name).resolve()
    results = stage_dir / "results.json"
    if results.is_file() and json.loads(results.read_text()).get("status") == "done":
        print(f"[pipeline]   {name}: already done in {stage_dir}, reused", flush=True)
        return json.loads(results.read_text())
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "trackstream.train", *COMMON, *overrides, f"hydra.run.dir={stage_dir}"]
    try:
        run_logged(
            cmd,
            stage_dir=stage_dir,
            label=name,
            env=env,
            cwd=ROOT,
            pipeline_log=run_dir / "pipeline.log",
            show_bar=sys.stderr.isatty() or os.environ.get("TRACKSTREAM_PROGRESS") == "1",
        )
    except StageFailed as e:
        raise PipelineError(str(e)) from None
    summary = json.loads(results.read_text())
    if summary.get("status") != "done":
        raise PipelineError(f"stage {name} stopped with status {summary.get('status')!r}; re-run to resume")
    return summary


class PipelineError(RuntimeError):
    """A user-facing failure: printed as one line by ``main``."""
