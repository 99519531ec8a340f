"""The stage registry: ``stage.name`` -> the builder that turns a validated config into a ``StagePlan``.

A builder takes ``(cfg, runtime, run_dir)`` and returns the plan (objective, prepared networks, data
stream, hooks, ``finish``); ``run_stage`` trains it through ``train.loop.train`` and returns the stage's
summary. The typed config of each stage is ``stages.config.SCHEMAS``; ``register_stage`` adds both for a
stage defined outside this package (its conf/stage/<name>.yaml extends ``<name>_schema``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

from trackstream.stages.causal_start import build_consistency, build_teacher_forcing
from trackstream.stages.codec import build_codec_stage
from trackstream.stages.common import StagePlan, fingerprint, train_plan
from trackstream.stages.config import SCHEMAS, TrainConfig
from trackstream.stages.distill import build_dmd, build_ode_init
from trackstream.stages.rl import build_rl
from trackstream.stages.teacher import build_teacher
from trackstream.stages.tiny_decoder import build_tiny_decoder
from trackstream.train.dist import Runtime

__all__ = ["BUILDERS", "register_stage", "run_stage"]

Builder = Callable[[TrainConfig, Runtime, Path], StagePlan]

BUILDERS: dict[str, Builder] = {
    "codec": build_codec_stage,
    "teacher": build_teacher,
    "ode_init": build_ode_init,
    "teacher_forcing": build_teacher_forcing,
    "consistency": build_consistency,
    "dmd": build_dmd,
    "rl": build_rl,
    "tiny_decoder": build_tiny_decoder,
}
assert BUILDERS.keys() == SCHEMAS.keys()


def register_stage(name: str, schema: type, builder: Builder) -> None:
    """Add a stage: ``stage.name=<name>`` validates against ``schema`` and trains ``builder``'s plan."""
    from hydra.core.config_store import ConfigStore

    if name in BUILDERS:
        raise ValueError(f"stage {name!r} is registered already")
    SCHEMAS[name], BUILDERS[name] = schema, builder
    ConfigStore.instance().store(group="stage", name=f"{name}_schema", node=schema)


def run_stage(cfg: TrainConfig, runtime: Runtime, run_dir: Path) -> dict:
    """Build the configured stage, train it (resuming if possible), then run its ``finish``."""
    plan = BUILDERS[cfg.stage.name](cfg, runtime, run_dir)
    return train_plan(
        plan,
        plan.trainer or cfg.trainer,
        cfg.logger,
        runtime,
        run_dir,
        fingerprint(cfg),
        config=asdict(cfg),
        stage=cfg.stage.name,
        experiment=cfg.task_name,
    )
