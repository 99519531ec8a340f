"""Wiring of ``stage=teacher_forcing`` and ``stage=consistency``: the causal student's starts that need no ODE
pairs (``stage=ode_init`` is the third, stages/distill.py). Each is followed by ``stage=dmd`` unchanged.

teacher_forcing: the student starts as the teacher export (``stage.teacher``; or ``stage.student``) and is trained
  on the teacher's own data (clips encoded once by the teacher's codec and text encoder, as the teacher stage
  encodes its pool) with the flow-matching loss on clean context (``distill.teacher_forcing``).
consistency: the student starts as the autoregressive teacher (``stage.teacher``: a teacher-forcing export) and
  is distilled from it on the same data (``distill.consistency``); the frozen teacher runs through its own cache.
Both export the student (EMA weights) to ``<run_dir>/export/student`` in the teacher's format, recording how it
streams (chunking, steps, shift), and stream held-out clips every ``trainer.sample_every`` steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from trackstream.data.batching import derive_seed
from trackstream.data.clips import ClipPool
from trackstream.distill.consistency import ConsistencyObjective
from trackstream.distill.teacher_forcing import TeacherForcingObjective
from trackstream.stages.common import StagePlan, load_text_encoder, trained_network
from trackstream.stages.exports import NetworkExport
from trackstream.stages.periodic import sampling_clips, with_student_samples
from trackstream.stages.teacher import training_data
from trackstream.train.dist import Runtime
from trackstream.train.loop import TrainResult
from trackstream.train.parallel import unwrap
from trackstream.train.weights import load_frozen, load_student

if TYPE_CHECKING:
    from trackstream.stages.config import TrainConfig

__all__ = ["build_teacher_forcing", "build_consistency"]


def _student_on_data(cfg: "TrainConfig", runtime: Runtime, export: NetworkExport):
    """What both stages share: the held-out clips (read first: a missing set fails before anything loads), the
    teacher's encoders, its data encoded by them, and the student to train (its network.json model)."""
    heldout = sampling_clips(cfg, runtime)
    text_encoder = load_text_encoder(cfg, runtime)
    conditioner = export.conditioner(cfg, runtime, text_encoder)
    pool = ClipPool.training(cfg.data) if cfg.data.pool_size else None
    data = training_data(cfg, runtime, pool, conditioner)
    student, student_model = load_student(cfg.stage.student, export.dir, model=cfg.model)
    # the loss streams the DiT chunk by chunk, not through the module's forward: under ddp no wrapper (gradients
    # averaged after backward), under fsdp one unit per module the path calls (as DMD's rollout)
    trained = trained_network(
        cfg,
        runtime,
        "generator",
        student,
        optim=cfg.optim,
        ema=cfg.ema,
        total_steps=cfg.trainer.max_steps,
        grad_sync="manual",
    )
    return heldout, text_encoder, conditioner, data, trained, student_model


def _student_plan(cfg, runtime, run_dir, export, objective, trained, data, heldout, text_encoder, student_model):
    def finish(result: TrainResult, logger=None) -> dict:
        return {"export": str(export.export_student(trained, run_dir, runtime, cfg, model=student_model))}

    return with_student_samples(
        StagePlan(objective=objective, networks={"generator": trained}, data=data, finish=finish),
        cfg,
        runtime,
        run_dir,
        model=student_model,
        codec_fn=lambda: export.codec(cfg, runtime),
        text_encoder_fn=lambda kept=text_encoder: kept,
        clips=heldout,
    )


def build_teacher_forcing(cfg: "TrainConfig", runtime: Runtime, run_dir: Path) -> StagePlan:
    export = NetworkExport(cfg.stage.teacher)
    export.check_teacher_of(cfg)
    heldout, text_encoder, conditioner, data, trained, student_model = _student_on_data(cfg, runtime, export)
    objective = TeacherForcingObjective(
        trained.module,
        cfg=cfg.stage,
        shift=cfg.schedule.shift,
        embed_dim=unwrap(trained.module).track_embed_dim,
        height=cfg.data.height,
        width=cfg.data.width,
        seed=derive_seed(cfg.trainer.seed, "teacher_forcing", runtime.data_rank) % 2**62,
        device=runtime.device,
        conditioner=conditioner,
        null_text=conditioner.null_text,
        null_lengths=conditioner.null_lengths,
    )
    return _student_plan(cfg, runtime, run_dir, export, objective, trained, data, heldout, text_encoder, student_model)


def build_consistency(cfg: "TrainConfig", runtime: Runtime, run_dir: Path) -> StagePlan:
    export = NetworkExport(cfg.stage.teacher)
    export.check_teacher_of(cfg)
    if export.conventions.streaming is None:
        raise ValueError(
            f"stage.teacher={export.dir} is a bidirectional network: causal consistency distillation needs an "
            "autoregressive teacher, the export of a stage=teacher_forcing run (its export/student)"
        )
    heldout, text_encoder, conditioner, data, trained, student_model = _student_on_data(cfg, runtime, export)
    teacher = load_frozen(export.dir, runtime, cfg.parallel, name="teacher")
    objective = ConsistencyObjective(
        trained.module,
        teacher,
        trained.ema,
        cfg=cfg.stage,
        shift=cfg.schedule.shift,
        student_steps=cfg.schedule.student_steps,
        null_text=conditioner.null_text,
        null_lengths=conditioner.null_lengths,
        embed_dim=unwrap(trained.module).track_embed_dim,
        height=cfg.data.height,
        width=cfg.data.width,
        seed=derive_seed(cfg.trainer.seed, "consistency", runtime.data_rank) % 2**62,
        device=runtime.device,
        conditioner=conditioner,
    )
    plan = _student_plan(cfg, runtime, run_dir, export, objective, trained, data, heldout, text_encoder, student_model)
    plan.frozen = {"teacher": teacher}
    return plan
