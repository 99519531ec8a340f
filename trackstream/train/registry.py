"""The stage registry: ``stage.name`` -> its ``Stage`` record (train/stage.py: the typed config, the builder that
turns a validated config into a ``StagePlan``, what the memory plan reads of it).

Each stage's file defines its record (``STAGE`` in train/codec.py, teacher.py, ode_init.py, teacher_forcing.py,
consistency.py, dmd.py, rl.py, tiny_decoder.py); ``STAGES`` collects them. A builder takes
``(cfg, runtime, run_dir)`` and returns the plan (objective, prepared networks, data stream, hooks, ``finish``);
``run_stage`` trains it through ``trainer.loop.train`` and returns the stage's summary. ``register_stage`` adds a
stage defined outside this package (its conf/stage/<name>.yaml extends ``<name>_schema``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from trackstream.train import codec, consistency, dmd, ode_init, rl, teacher, teacher_forcing, tiny_decoder
from trackstream.train.plan import train_plan
from trackstream.train.stage import Builder, Stage
from trackstream.trainer.dist import Runtime

if TYPE_CHECKING:
    from trackstream.train.train_config import TrainConfig

__all__ = ["STAGES", "register_stage", "run_stage"]

STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        codec.STAGE,
        teacher.STAGE,
        ode_init.STAGE,
        teacher_forcing.STAGE,
        consistency.STAGE,
        dmd.STAGE,
        rl.STAGE,
        tiny_decoder.STAGE,
    )
}


def register_stage(name: str, schema: type, builder: Builder, **facts) -> Stage:
    """Add a stage: ``stage.name=<name>`` validates against ``schema`` and trains ``builder``'s plan; ``facts``
    are the record's other fields (``sequence_parallel``, ``lora``, ``cache``, ``planned``)."""
    from hydra.core.config_store import ConfigStore

    if name in STAGES:
        raise ValueError(f"stage {name!r} is registered already")
    STAGES[name] = stage = Stage(name, schema, builder, **facts)
    ConfigStore.instance().store(group="stage", name=f"{name}_schema", node=schema)
    return stage


def run_stage(cfg: "TrainConfig", runtime: Runtime, run_dir: Path) -> dict:
    """Build the configured stage, train it (resuming if possible), then run its ``finish``."""
    plan = STAGES[cfg.stage.name].builder(cfg, runtime, run_dir)
    return train_plan(
        plan,
        plan.trainer or cfg.trainer,
        cfg.logger,
        runtime,
        run_dir,
        cfg.fingerprint(),
        config=asdict(cfg),
        stage=cfg.stage.name,
        experiment=cfg.task_name,
    )
