"""The record of one training stage: its name, its typed config, its builder and what the memory plan
(``bench/plan_stages.py``) reads of it. Each stage's file (train/teacher.py, train/dmd.py, ...) defines its
``STAGE``; ``train.registry.STAGES`` collects them by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Optional

if TYPE_CHECKING:
    from trackstream.train.plan import StagePlan
    from trackstream.train.train_config import TrainConfig
    from trackstream.trainer.dist import Runtime

__all__ = ["Stage", "Builder"]

Builder = Callable[["TrainConfig", "Runtime", Path], "StagePlan"]


@dataclass(frozen=True)
class Stage:
    """``stage.name=<name>`` validates against ``schema`` (a dataclass with a ``name`` field; its
    conf/stage/<name>.yaml extends ``<name>_schema``) and trains ``builder(cfg, runtime, run_dir)``'s plan.

    * ``sequence_parallel``: its DiTs run on token slices under ``parallel.sequence_parallel`` > 1;
    * ``lora``: ``model.lora`` applies to the network it trains (the RL stage trains without adapters);
    * ``cache``: how it streams through the rolling KV cache: ``"rollout"`` (its own few-step rollout,
      differentiated chunk by chunk), ``"walk"`` (clean context, one pass over the clip), None (not causal);
    * ``planned``: ``trackstream plan`` sizes it.
    """

    name: str
    schema: type
    builder: Builder
    sequence_parallel: bool = False
    lora: bool = True
    cache: Optional[Literal["rollout", "walk"]] = None
    planned: bool = True

    def __post_init__(self) -> None:
        default = getattr(self.schema, "name", None)
        assert default in (None, self.name), f"{self.schema.__name__}.name={default!r} is not the stage {self.name!r}"
