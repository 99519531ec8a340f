"""``stage=consistency``: the student starts as the autoregressive teacher (``stage.teacher``: a teacher-forcing
export) and is distilled from it on the teacher's own data (``train.consistency.objective``); the frozen teacher runs
through its own cache. train/causal_student.py holds what it shares with ``stage=teacher_forcing``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from trackstream.data.batching import derive_seed
from trackstream.diffusion.samplers import nfe_per_step
from trackstream.train.causal_student import build_causal_student
from trackstream.train.consistency.objective import ConsistencyConfig, ConsistencyObjective
from trackstream.train.exports import NetworkExport
from trackstream.train.plan import StagePlan
from trackstream.train.stage import ENCODERS, Cost, CostInputs, Held, Stage, Trained
from trackstream.trainer.dist import Runtime
from trackstream.trainer.parallel import unwrap
from trackstream.trainer.weights import load_frozen

if TYPE_CHECKING:
    from trackstream.train.train_config import TrainConfig

__all__ = ["STAGE", "build_consistency", "consistency_objective"]


def consistency_objective(
    cfg: "TrainConfig", runtime: Runtime, trained, teacher, *, null_text: tuple, conditioner=None
) -> ConsistencyObjective:
    """The stage's objective on the trained student (its EMA is the target network) and the frozen
    autoregressive teacher (the builder's, and the step benchmark's with random weights); ``null_text``: the
    empty prompt's (embedding, lengths); ``conditioner``: encodes raw clips (None: the batches arrive encoded)."""
    return ConsistencyObjective(
        trained.module,
        teacher,
        trained.ema,
        cfg=cfg.stage,
        shift=cfg.schedule.shift,
        student_steps=cfg.schedule.student_steps,
        null_text=null_text[0],
        null_lengths=null_text[1],
        embed_dim=unwrap(trained.module).track_embed_dim,
        height=cfg.data.height,
        width=cfg.data.width,
        seed=derive_seed(cfg.trainer.seed, "consistency", runtime.data_rank) % 2**62,
        device=runtime.device,
        conditioner=conditioner,
    )


def build_consistency(cfg: "TrainConfig", runtime: Runtime, run_dir: Path) -> StagePlan:
    st: ConsistencyConfig = cfg.stage
    export = NetworkExport(st.teacher)
    export.check_teacher_of(cfg.model.text_encoder, flavor=st.teacher_flavor)
    if export.conventions.streaming is None:
        raise ValueError(
            f"stage.teacher={export.dir} is a bidirectional network: causal consistency distillation needs an "
            "autoregressive teacher, the export of a stage=teacher_forcing run (its export/student)"
        )

    def objective_of(trained, conditioner):
        # loaded after the student (the order of loads and of the random stream the stage has always had)
        teacher = load_frozen(export.dir, runtime, cfg.parallel, name="teacher")
        null_text = (conditioner.null_text, conditioner.null_lengths)
        objective = consistency_objective(cfg, runtime, trained, teacher, null_text=null_text, conditioner=conditioner)
        return objective, {"teacher": teacher}

    return build_causal_student(cfg, runtime, run_dir, export, objective_of)


def consistency_cost(st: ConsistencyConfig, run: CostInputs) -> Cost:
    """The generator trained (``ema``: its target network); the frozen autoregressive teacher (the student's
    size) and the encoders for the whole run. Per sample: the guided teacher (its terms, noisy + clean passes),
    the EMA target (noisy + clean) and the student (as teacher forcing)."""
    return Cost(
        trained=(Trained("generator", ema=run.ema),),
        frozen=(Held("student", "frozen autoregressive teacher", shardable=True), *ENCODERS),
        passes=nfe_per_step(st.guidance.mode) * 2 / 3 + 2 / 3 + 1 + 1 / 3,
    )


STAGE = Stage(ConsistencyConfig.name, ConsistencyConfig, build_consistency, cache="walk", cost=consistency_cost)
