"""What ``stage=teacher_forcing`` and ``stage=consistency`` share, the causal student's starts that need no ODE
pairs (``stage=ode_init`` is the third, train/ode_init/build.py; each is followed by ``stage=dmd`` unchanged): the
student trained on the teacher's own data (clips encoded by the teacher's codec and text encoder, as the teacher
stage encodes its pool), exported (EMA weights) to ``<run_dir>/export/student`` in the teacher's format, recording
how it streams (chunking, steps, shift), and streaming held-out clips every ``trainer.sample_every`` steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch.nn as nn

from trackstream.data.clips import ClipPool
from trackstream.models.conditioner import Conditioner
from trackstream.train.encoders import load_text_encoder, training_data
from trackstream.train.exports import NetworkExport
from trackstream.train.periodic import StudentSampling
from trackstream.train.plan import StagePlan, trained_network
from trackstream.trainer.dist import Runtime
from trackstream.trainer.loop import TrainResult
from trackstream.trainer.objective import Objective
from trackstream.trainer.parallel import ParallelConfig
from trackstream.trainer.trained_network import TrainedNetwork
from trackstream.trainer.weights import load_student

if TYPE_CHECKING:
    from trackstream.train.train_config import TrainConfig

__all__ = ["build_causal_student", "causal_student_network"]

# the stage's objective of the student being trained and the teacher's conditioner, and the frozen networks it calls
ObjectiveOf = Callable[[TrainedNetwork, Conditioner], tuple[Objective, dict[str, nn.Module]]]


def causal_student_network(
    cfg: "TrainConfig",
    runtime: Runtime,
    student: nn.Module,
    *,
    parallel: ParallelConfig,
    grad_sync: str = "manual",
    init_fn=None,
) -> TrainedNetwork:
    """The causal student on the engine, for its three starts (these builders, ODE init's, and the step benchmarks'
    with random weights): the run's optimizer and EMA over its steps, ``model.lora``'s adapters, in ``parallel``'s
    layout. Teacher forcing's and consistency's losses stream the DiT chunk by chunk, not through the module's
    forward: under ddp no wrapper (``grad_sync="manual"``: gradients averaged after backward), under fsdp one unit
    per module the path calls (as DMD's rollout); ODE init regresses through the forward (``"wrapper"``)."""
    return trained_network(
        parallel,
        runtime,
        "generator",
        student,
        optim=cfg.optim,
        ema=cfg.ema,
        total_steps=cfg.trainer.max_steps,
        lora=cfg.model.lora,
        grad_sync=grad_sync,
        init_fn=init_fn,
    )


def build_causal_student(
    cfg: "TrainConfig", runtime: Runtime, run_dir: Path, export: NetworkExport, objective_of: ObjectiveOf
) -> StagePlan:
    """The plan of a causal student trained on the teacher ``export``'s data with ``objective_of``'s objective.
    The held-out clips are read first (a missing set fails before anything loads), then the teacher's encoders,
    its data encoded by them, the student to train (its network.json model) and the objective."""
    sampling = StudentSampling.of(cfg)
    heldout = sampling.clips(runtime)
    text_encoder = load_text_encoder(cfg.model, runtime)
    conditioner = export.conditioner(cfg.codec, runtime, text_encoder)
    pool = ClipPool.training(cfg.data) if cfg.data.pool_size else None
    data = training_data(cfg.data, runtime, pool, conditioner)
    student, student_model = load_student(cfg.stage.student, export.dir, model=cfg.model)
    trained = causal_student_network(cfg, runtime, student, parallel=cfg.parallel)
    objective, frozen = objective_of(trained, conditioner)
    stream = cfg.schedule.streaming(cfg.stage.causal)

    def finish(result: TrainResult, logger=None) -> dict:
        return {"export": str(export.export_student(trained, run_dir, runtime, stream, model=student_model))}

    return sampling.attach(
        StagePlan(objective=objective, networks={"generator": trained}, data=data, finish=finish, frozen=frozen),
        heldout,
        runtime,
        run_dir,
        stream=stream,
        model=student_model,
        codec_fn=lambda: export.codec(cfg.codec, runtime),
        text_encoder_fn=lambda kept=text_encoder: kept,
    )
