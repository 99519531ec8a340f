"""The stage registry: ``stage.name`` -> its ``Stage`` record (train/stage.py: the typed config, the builder that
turns a validated config into a ``StagePlan``, what the memory plan reads of it).

Each stage is a folder of its own (train/teacher/, ode_init/, teacher_forcing/, consistency/, dmd/, rl/,
tiny_decoder/: ``objective.py``, its schema and loss; ``build.py``, its record ``STAGE`` with the builder and the
plan cost); the codec's fit is train/codec.py (its objective and the run's codec config: trainer/codec.py).
``STAGES`` collects the records. A builder takes
``(cfg, runtime, run_dir)`` and returns the plan (objective, prepared networks, data stream, hooks, ``finish``);
``train.app.run_stage`` trains it through ``trainer.loop.train`` and returns the stage's summary. ``register_stage`` adds a
stage defined outside this package (its conf/stage/<name>.yaml extends ``<name>_schema``).
"""

from __future__ import annotations

from trackstream.train import codec
from trackstream.train.consistency import build as consistency
from trackstream.train.dmd import build as dmd
from trackstream.train.ode_init import build as ode_init
from trackstream.train.rl import build as rl
from trackstream.train.stage import Builder, Stage
from trackstream.train.teacher import build as teacher
from trackstream.train.teacher_forcing import build as teacher_forcing
from trackstream.train.tiny_decoder import build as tiny_decoder

__all__ = ["STAGES", "register_stage"]

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
