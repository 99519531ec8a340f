"""``stage=teacher_forcing``: the student starts as the teacher export (``stage.teacher``; or ``stage.student``)
and is trained on the teacher's own data with the flow-matching loss on clean context
(``train.teacher_forcing.objective``); train/causal_student.py holds what it shares with ``stage=consistency``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from trackstream.data.batching import derive_seed
from trackstream.train.causal_student import build_causal_student
from trackstream.train.exports import NetworkExport
from trackstream.train.plan import StagePlan
from trackstream.train.stage import ENCODERS, Cost, CostInputs, Stage, Trained
from trackstream.train.teacher_forcing.objective import TeacherForcingConfig, TeacherForcingObjective
from trackstream.trainer.dist import Runtime
from trackstream.trainer.parallel import unwrap

if TYPE_CHECKING:
    from trackstream.train.train_config import TrainConfig

__all__ = ["STAGE", "build_teacher_forcing", "teacher_forcing_objective"]


def teacher_forcing_objective(
    cfg: "TrainConfig", runtime: Runtime, generator, *, null_text: tuple, conditioner=None
) -> TeacherForcingObjective:
    """The stage's objective on the student (the builder's, and the step benchmark's with random weights);
    ``null_text``: the empty prompt's (embedding, lengths); ``conditioner``: encodes raw clips (None: the batches
    arrive encoded)."""
    return TeacherForcingObjective(
        generator,
        cfg=cfg.stage,
        shift=cfg.schedule.shift,
        embed_dim=unwrap(generator).track_embed_dim,
        height=cfg.data.height,
        width=cfg.data.width,
        seed=derive_seed(cfg.trainer.seed, "teacher_forcing", runtime.data_rank) % 2**62,
        device=runtime.device,
        conditioner=conditioner,
        null_text=null_text[0],
        null_lengths=null_text[1],
    )


def build_teacher_forcing(cfg: "TrainConfig", runtime: Runtime, run_dir: Path) -> StagePlan:
    st: TeacherForcingConfig = cfg.stage
    export = NetworkExport(st.teacher)
    export.check_teacher_of(cfg.model.text_encoder, flavor=st.teacher_flavor)

    def objective_of(trained, conditioner):
        null_text = (conditioner.null_text, conditioner.null_lengths)
        return teacher_forcing_objective(cfg, runtime, trained.module, null_text=null_text, conditioner=conditioner), {}

    return build_causal_student(cfg, runtime, run_dir, export, objective_of)


def teacher_forcing_cost(st: TeacherForcingConfig, run: CostInputs) -> Cost:
    """The generator trained (its EMA with ``ema.enabled``); the encoders loaded for the whole run (the data is
    encoded per batch). Per sample: the noisy pass with gradient + the clean pass that fills the cache."""
    return Cost(trained=(Trained("generator", ema=run.ema),), frozen=ENCODERS, passes=1 + 1 / 3)


STAGE = Stage(
    TeacherForcingConfig.name, TeacherForcingConfig, build_teacher_forcing, cache="walk", cost=teacher_forcing_cost
)
