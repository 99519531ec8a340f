"""The record of one training stage: its name, its typed config, its builder and its cost (what one optimizer
step holds on a GPU and how much work it is, which ``trackstream plan`` turns into bytes and seconds:
``bench/plan_stages.py``). Each stage's file (train/teacher/build.py, train/dmd/build.py, ...) defines its ``STAGE``;
``train.registry.STAGES`` collects them by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional

if TYPE_CHECKING:
    from trackstream.train.plan import StagePlan
    from trackstream.train.train_config import TrainConfig
    from trackstream.trainer.dist import Runtime

__all__ = ["Stage", "Builder", "Cost", "CostInputs", "Held", "Trained"]

Builder = Callable[["TrainConfig", "Runtime", Path], "StagePlan"]


@dataclass(frozen=True)
class Trained:
    """A network a stage trains: its name in the plan's rows, whether it keeps an EMA, and whether it has the
    critic's size (a copy of the teacher when ``stage.critic`` is null) rather than the trained model's."""

    name: str
    ema: bool
    critic: bool = False


@dataclass(frozen=True)
class Held:
    """A frozen network a stage keeps on a GPU. ``kind``: ``"text"``, ``"codec"``, ``"image"`` (the CLIP image
    encoder, when the model reads one), ``"aesthetic"`` (the reward's CLIP ViT-L/14), ``"teacher"`` (the
    distillation's teacher at its own size) or ``"student"`` (a DiT of the trained model's size); ``label``:
    the row's words for a DiT; ``shardable``: sharded under fsdp; ``later``: loaded from the first periodic
    sample on, not from the start."""

    kind: Literal["text", "codec", "image", "aesthetic", "teacher", "student"]
    label: str = ""
    shardable: bool = False
    later: bool = False


@dataclass(frozen=True)
class CostInputs:
    """What a stage's cost reads besides its own config: the run's ``ema.enabled``; whether the run samples
    the student periodically (``eval.enabled`` and ``trainer.sample_every`` > 0); the student's steps
    (``schedule.student_steps``); the teacher's FLOPs over the trained model's (1 at one size)."""

    ema: bool
    sampling: bool
    student_steps: int
    teacher_cost: float = 1.0


@dataclass(frozen=True)
class Cost:
    """One optimizer step of a stage, per sample: the networks it trains (updated one at a time), the frozen
    networks it holds, its work in teacher-training-step units (a training step = 1: forward + backward; a
    no-grad forward = 1/3), the samples it makes of one clip (RL's group), and what the plan should say."""

    trained: tuple[Trained, ...]
    frozen: tuple[Held, ...]
    passes: float
    rollouts: int = 1
    notes: tuple[str, ...] = ()


ENCODERS = (Held("text"), Held("codec"), Held("image"))


@dataclass(frozen=True)
class Stage:
    """``stage.name=<name>`` validates against ``schema`` (a dataclass with a ``name`` field; its
    conf/stage/<name>.yaml extends ``<name>_schema``) and trains ``builder(cfg, runtime, run_dir)``'s plan.

    * ``sequence_parallel``: its DiTs run on token slices under ``parallel.sequence_parallel`` > 1;
    * ``lora``: ``model.lora`` applies to the network it trains (the RL stage trains without adapters);
    * ``cache``: how it streams through the rolling KV cache: ``"rollout"`` (its own few-step rollout,
      differentiated chunk by chunk), ``"walk"`` (clean context, one pass over the clip), None (not causal);
    * ``planned``: ``trackstream plan`` sizes it;
    * ``cost(stage config, CostInputs) -> Cost``: what the plan counts of it (None: a plan of its own, or none);
    * ``teacher_size``: it distills a teacher that may be of another flavor (``stage.teacher_flavor`` or the
      export's), counted at its own size;
    * ``manual_grad_sync``: it trains a network outside the module's forward (the self-rollout), so its
      gradients are averaged by hand and DeepSpeed is refused.
    """

    name: str
    schema: type
    builder: Builder
    sequence_parallel: bool = False
    lora: bool = True
    cache: Optional[Literal["rollout", "walk"]] = None
    planned: bool = True
    cost: Optional[Callable[[Any, CostInputs], Cost]] = None
    teacher_size: bool = False
    manual_grad_sync: bool = False

    def __post_init__(self) -> None:
        default = getattr(self.schema, "name", None)
        assert default in (None, self.name), f"{self.schema.__name__}.name={default!r} is not the stage {self.name!r}"
