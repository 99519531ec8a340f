"""``stage=ode_init``: the causal student's first start, regressing the frozen teacher's ODE pairs.

The frozen teacher (an exported network folder, ``stage.teacher``) makes the ODE pairs if ``stage.pairs`` has
none yet (``train.pair_data.obtain_ode_pairs``); the student starts as a copy of the teacher (or
``stage.student``) and regresses the pairs (``ODEInitObjective``) on the one step grid ``cfg.schedule``;
``finish`` exports it (EMA weights) to ``<run_dir>/export/student``. With ``trainer.sample_every`` (and
``eval.enabled``) the student streams a few held-out clips periodically (train/periodic.py). Per-sample random
draws are keyed by the global sample id, so a global batch gives the same losses on any number of processes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from trackstream.data.batching import derive_seed
from trackstream.distill.pair_shards import PairSet
from trackstream.train.causal_student import causal_student_network
from trackstream.train.encoders import load_text_encoder
from trackstream.train.exports import NetworkExport
from trackstream.train.ode_init.objective import ODEInitConfig, ODEInitObjective
from trackstream.train.pair_data import CONDITION_KEYS, condition_stream, obtain_ode_pairs
from trackstream.train.periodic import StudentSampling
from trackstream.train.plan import StagePlan
from trackstream.train.stage import ENCODERS, Cost, CostInputs, Held, Stage, Trained
from trackstream.trainer.dist import Runtime
from trackstream.trainer.loop import TrainResult
from trackstream.trainer.parallel import unwrap
from trackstream.trainer.weights import load_student

if TYPE_CHECKING:
    from trackstream.train.train_config import TrainConfig

__all__ = ["STAGE", "build_ode_init", "ode_init_objective"]


def ode_init_objective(cfg: "TrainConfig", runtime: Runtime, generator) -> ODEInitObjective:
    """The stage's objective on the student (the builder's, and the step benchmark's with random weights): its
    streaming levels (``schedule.student_steps`` at ``schedule.shift``) and the run's frame size."""
    st: ODEInitConfig = cfg.stage
    return ODEInitObjective(
        generator,
        cfg=st,
        sigmas=cfg.schedule.streaming(st.causal).sigmas(),
        embed_dim=unwrap(generator).track_embed_dim,
        height=cfg.data.height,
        width=cfg.data.width,
        seed=derive_seed(cfg.trainer.seed, "ode_init") % 2**62,
        device=runtime.device,
    )


def build_ode_init(cfg: "TrainConfig", runtime: Runtime, run_dir: Path) -> StagePlan:
    st: ODEInitConfig = cfg.stage
    export = NetworkExport(st.teacher)
    export.check_teacher_of(cfg.model.text_encoder, flavor=st.teacher_flavor)
    # before the pairs: a missing held-out set fails first
    sampling = StudentSampling.of(cfg)
    heldout = sampling.clips(runtime)
    t0 = time.perf_counter()
    pairs_dir = obtain_ode_pairs(
        st.teacher,
        st.ode_pairs,
        runtime,
        Path(st.pairs) if st.pairs else run_dir / "ode_pairs",
        count=st.pool_size,
        model=cfg.model,
        codec=cfg.codec,
        data=cfg.data,
        schedule=cfg.schedule,
    )
    pairs_seconds = round(time.perf_counter() - t0, 2)
    K = cfg.schedule.student_steps
    pairs = PairSet(pairs_dir, student_steps=K, shift=cfg.schedule.shift)
    # the student starts as the teacher (causal attention from here on), or as stage.student (another size)
    student, student_model = load_student(st.student, export.dir, model=cfg.model)
    # regressed through the module's forward: the layout's own wrapper syncs the gradients
    trained = causal_student_network(cfg, runtime, student, parallel=cfg.parallel, grad_sync="wrapper")
    stream = cfg.schedule.streaming(st.causal)  # what the export records: the rollouts sample its levels
    objective = ode_init_objective(cfg, runtime, trained.module)
    data = condition_stream(cfg.data, runtime, pairs, CONDITION_KEYS + ("trajectory",), causal=st.causal, horizons=1)

    def finish(result: TrainResult, logger=None) -> dict:
        return {
            "export": str(export.export_student(trained, run_dir, runtime, stream, model=student_model)),
            "pairs": str(pairs_dir),
            "num_pairs": len(pairs),
            "pairs_seconds": pairs_seconds,
        }

    return sampling.attach(
        StagePlan(objective=objective, networks={"generator": trained}, data=data, finish=finish),
        heldout,
        runtime,
        run_dir,
        stream=stream,
        model=student_model,
        codec_fn=lambda: export.codec(cfg.codec, runtime),
        text_encoder_fn=lambda: load_text_encoder(cfg.model, runtime),
    )


def ode_init_cost(st: ODEInitConfig, run: CostInputs) -> Cost:
    """The generator trained (its EMA with ``ema.enabled``); nothing frozen until the first periodic sample
    loads the codec, text and image encoders (kept from then on). The pairs are a job of their own."""
    later = tuple(Held(h.kind, later=True) for h in ENCODERS) if run.sampling else ()
    return Cost(
        trained=(Trained("generator", ema=run.ema),),
        frozen=later,
        passes=1.0,
        notes=("the ODE pairs job (trackstream pairs) is separate: it holds a whole frozen teacher per rank",),
    )


STAGE = Stage(
    ODEInitConfig.name, ODEInitConfig, build_ode_init, sequence_parallel=True, cost=ode_init_cost, teacher_size=True
)
