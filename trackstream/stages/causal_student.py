"""What ``stage=teacher_forcing`` and ``stage=consistency`` share, the causal student's starts that need no ODE
pairs (``stage=ode_init`` is the third, stages/ode_init.py; each is followed by ``stage=dmd`` unchanged): the
student trained on the teacher's own data (clips encoded by the teacher's codec and text encoder, as the teacher
stage encodes its pool), exported (EMA weights) to ``<run_dir>/export/student`` in the teacher's format, recording
how it streams (chunking, steps, shift), and streaming held-out clips every ``trainer.sample_every`` steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trackstream.data.clips import ClipPool
from trackstream.stages.common import StagePlan, load_text_encoder, trained_network
from trackstream.stages.exports import NetworkExport
from trackstream.stages.periodic import sampling_clips, with_student_samples
from trackstream.stages.teacher import training_data
from trackstream.train.dist import Runtime
from trackstream.train.loop import TrainResult
from trackstream.train.weights import load_student

if TYPE_CHECKING:
    from trackstream.stages.train_config import TrainConfig

__all__ = ["student_on_data", "student_plan"]


def student_on_data(cfg: "TrainConfig", runtime: Runtime, export: NetworkExport):
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


def student_plan(cfg, runtime, run_dir, export, objective, trained, data, heldout, text_encoder, student_model):
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
