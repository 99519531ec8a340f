"""How the pipeline calls a training stage: the stage's Hydra app in a child process (resumed from its
checkpoints, skipped when done), and the overrides that carry the teacher's settings to later stages.

Kept apart from ``run`` so the stage list stays short; ``run`` re-exports ``PipelineError``,
``train_stage`` and ``teacher_settings`` for code that imports them from there.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from trackstream.data.command_line import hydra_value, settings_of

__all__ = [
    "ROOT",
    "COMMON",
    "PipelineError",
    "train_stage",
    "release_settings",
    "teacher_settings",
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
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cmd = [sys.executable, "-m", "trackstream.stages", *COMMON, *overrides, f"hydra.run.dir={stage_dir}"]
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


def release_settings(asset: Path) -> list[str]:
    """The fine-tune of a release builds the release's network on the release's world and clips: its model
    settings, world, frame size and clip length and its clean-context training, read from its config.yaml
    (a release trained with 4 layers, bilinear track splatting on 25-frame clips of the objects world is
    fine-tuned as that, not as tiny_teacher_finetune's defaults). The stage's own recipe (mid-frame masking,
    learning rate, steps) stays the fine-tune's."""
    from omegaconf import OmegaConf

    cfg = asset / "config.yaml"
    if not cfg.is_file():
        return []
    t = OmegaConf.to_container(OmegaConf.load(cfg), resolve=True)
    out = settings_of(t) + [f"data.num_frames={t['data']['num_frames']}"]
    stage = t.get("stage") or {}
    out += [f"++stage.{k}={hydra_value(stage[k])}" for k in ("clean_prefix_prob", "clean_prefix_chunk") if k in stage]
    return out


def teacher_settings(run_dir: Path) -> list[str]:
    """The distillation stages run on the teacher's world, frame size, shift and model settings
    (read from the teacher run's resolved config), whatever tiny_teacher currently sets."""
    from omegaconf import OmegaConf

    return settings_of(OmegaConf.to_container(OmegaConf.load(run_dir / "teacher" / "config.yaml"), resolve=True))
