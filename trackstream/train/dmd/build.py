"""``stage=dmd``: distribution matching distillation of the causal student.

generator = the ODE-init export (``stage.student``), critic = a copy of the teacher, real score = the frozen
teacher; two optimizers with their own LRs (``stage.generator_optim``, ``stage.critic_optim``), the
generator's EMA (``stage.generator_ema``); conditions (first frame, tracks, text) come from the pair folder
(``train.pair_data.condition_stream``); ``finish`` exports the student again. The teacher's export is opened
once (``train.exports.NetworkExport``: its network.json, its codec, the checks against it, the student's
export in its format). With ``trainer.sample_every`` (and ``eval.enabled``) the student streams a few held-out
clips periodically (train/periodic.py).
Several processes (parallel=ddp or fsdp): per-sample random draws are keyed by the global sample id, so a global
batch gives the same losses on any number of processes. The DMD rollout drives the student's DiT through its
streaming path (not the module's forward), which a DDP wrapper does not see: under ddp the generator is left
unwrapped and its gradients are averaged after backward (``grad_sync="manual"``); under fsdp every module the
streaming path calls is an FSDP unit of its own (``parallel.fsdp_leaf_units``), so FSDP gathers and
reduce-scatters as in a forward; the frozen teacher is sharded too (DMD calls it in lockstep on every rank).
DeepSpeed is refused for DMD.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch.nn as nn

from trackstream.data.batching import derive_seed
from trackstream.distill.horizons import check_horizons
from trackstream.distill.pair_shards import PairSet
from trackstream.models.formats.checkpoint import split_subkey
from trackstream.models.motion_wan import ModelConfig
from trackstream.models.tracks import latent_frames
from trackstream.train.dmd.objective import DMDConfig, DMDObjective
from trackstream.train.encoders import load_text_encoder
from trackstream.train.exports import NetworkExport
from trackstream.train.pair_data import CONDITION_KEYS, condition_stream
from trackstream.train.periodic import StudentSampling
from trackstream.train.plan import StagePlan, trained_network
from trackstream.train.snapshots import with_snapshots
from trackstream.train.stage import Cost, CostInputs, Held, Stage, Trained
from trackstream.trainer.dist import Runtime
from trackstream.trainer.loop import TrainResult
from trackstream.trainer.parallel import ParallelConfig, unwrap
from trackstream.trainer.trained_network import TrainedNetwork
from trackstream.trainer.weights import load_frozen, load_student

if TYPE_CHECKING:
    from trackstream.train.train_config import TrainConfig

__all__ = ["STAGE", "build_dmd", "dmd_networks", "dmd_objective"]


def _dmd_modules(st: DMDConfig, export: NetworkExport, *, model: ModelConfig):
    """The generator's module (``stage.student``: an exported student, or a Wan / community checkpoint such as
    PATH::generator_ema in the teacher's network) and the critic's (a copy of the teacher, the generator's
    starting weights, or a path in the student's network); the student's model (``model``: the run's, for
    ``model.flavor`` of a student of another size)."""
    critic_spec = st.student if st.critic == "student" else st.critic
    if critic_spec and st.critic != "student" and not Path(split_subkey(critic_spec)[0]).exists():
        raise ValueError(f"stage.critic={st.critic!r} does not exist: a path, 'student' or null (the teacher)")
    student_net, student_model = load_student(st.student, export.dir, model=model)
    critic_net, _ = load_student(
        critic_spec, export.dir, model=None if critic_spec is None else model, field="stage.critic"
    )
    return student_net, critic_net, student_model


def dmd_networks(
    cfg: "TrainConfig",
    runtime: Runtime,
    student: nn.Module,
    critic: nn.Module,
    *,
    parallel: ParallelConfig,
    init_fn=None,
) -> tuple[TrainedNetwork, TrainedNetwork]:
    """The generator and the critic on the engine (the builder's, and the step benchmark's with random weights):
    each with its optimizer (the generator's stepped every ``stage.update_ratio``-th loop step, with its EMA),
    ``model.lora``'s adapters, in ``parallel``'s layout. The self-rollout drives the DiT's streaming path, not the
    module's forward: under ddp no wrapper (gradients averaged after backward), under fsdp one unit per module
    the path calls."""
    st: DMDConfig = cfg.stage
    steps, lora = cfg.trainer.max_steps, cfg.model.lora
    generator = trained_network(
        parallel,
        runtime,
        "generator",
        student,
        optim=st.generator_optim,
        ema=st.generator_ema,
        total_steps=max(1, steps // st.update_ratio),
        lora=lora,
        grad_sync="manual",
        init_fn=init_fn,
    )
    critic = trained_network(
        parallel, runtime, "critic", critic, optim=st.critic_optim, ema=None, total_steps=steps, lora=lora,
        init_fn=init_fn,
    )  # fmt: skip
    return generator, critic


def dmd_objective(
    cfg: "TrainConfig", runtime: Runtime, generator, critic, teacher, *, null_text: tuple, conditioner=None
) -> DMDObjective:
    """The stage's objective on its three networks (the builder's, and the step benchmark's with random weights):
    the student's streaming levels (``schedule.student_steps`` at ``schedule.shift``), the run's frame size and
    horizon; ``null_text``: the empty prompt's (embedding, lengths); ``conditioner``: re-encodes window frames
    for rollouts past the horizon."""
    st: DMDConfig = cfg.stage
    return DMDObjective(
        generator,
        critic,
        teacher,
        cfg=st,
        sigmas=cfg.schedule.streaming(st.causal).sigmas(),
        shift=cfg.schedule.shift,
        null_text=null_text[0],
        null_text_lengths=null_text[1],
        embed_dim=unwrap(generator).track_embed_dim,
        height=cfg.data.height,
        width=cfg.data.width,
        seed=derive_seed(cfg.trainer.seed, "dmd") % 2**62,
        device=runtime.device,
        conditioner=conditioner,
        horizon_latents=latent_frames(cfg.data.num_frames),
    )


def build_dmd(cfg: "TrainConfig", runtime: Runtime, run_dir: Path) -> StagePlan:
    st: DMDConfig = cfg.stage
    check_horizons(st.causal, st.rollout_horizons, cfg.data.num_frames)
    export = NetworkExport(st.teacher)
    export.check_teacher_of(cfg.model.text_encoder, flavor=st.teacher_flavor)
    # before the networks load: a missing held-out set fails first
    sampling = StudentSampling.of(cfg)
    heldout = sampling.clips(runtime)
    count = st.pool_size or cfg.data.pool_size  # without a pair folder: the first `count` training clips
    if not st.pairs and not count:
        raise ValueError(
            "stage.pairs is not set and stage.pool_size is null: give the ODE pair folder (its first frames, tracks "
            "and texts are the DMD conditions) or stage.pool_size=<N> (the first N training clips' conditions)"
        )
    student_net, critic_net, student_model = _dmd_modules(st, export, model=cfg.model)
    generator, critic = dmd_networks(cfg, runtime, student_net, critic_net, parallel=cfg.parallel)
    K, ratio = cfg.schedule.student_steps, st.update_ratio
    pairs = PairSet(st.pairs, student_steps=K, shift=cfg.schedule.shift) if st.pairs else None
    teacher = load_frozen(export.dir, runtime, cfg.parallel, name="teacher")
    text_encoder = load_text_encoder(cfg.model, runtime)
    null_text, null_lengths = text_encoder.encode([""])
    long = st.rollout_horizons > 1
    conditioner = export.conditioner(cfg.codec, runtime, text_encoder) if long or pairs is None else None
    stream = cfg.schedule.streaming(st.causal)  # what the export records: the rollouts sample its levels
    objective = dmd_objective(
        cfg,
        runtime,
        generator.module,
        critic.module,
        teacher,
        null_text=(null_text, null_lengths),
        conditioner=conditioner,
    )
    data = condition_stream(
        cfg.data,
        runtime,
        pairs,
        tuple(k for k in CONDITION_KEYS if k != "track_ids"),
        causal=st.causal,
        horizons=st.rollout_horizons,
        conditioner=conditioner,
        text_dim=export.text_dim,
        count=count,
    )

    def finish(result: TrainResult, logger=None) -> dict:
        return {
            "export": str(export.export_student(generator, run_dir, runtime, stream, model=student_model)),
            "generator_updates": generator.num_updates,
            "critic_updates": critic.num_updates,
            "config": json.loads(json.dumps(asdict(st), default=str)),
        }

    plan = StagePlan(
        objective=objective,
        networks={"critic": critic, "generator": generator},
        data=data,
        finish=finish,
        frozen={"teacher": teacher},
    )
    if st.snapshot_every is not None:
        plan = with_snapshots(plan, run_dir, runtime, every=st.snapshot_every, update_ratio=ratio)
    # the text encoder stays loaded only when the student is sampled during training (trainer.sample_every)
    return sampling.attach(
        plan,
        heldout,
        runtime,
        run_dir,
        stream=stream,
        model=student_model,
        codec_fn=lambda: export.codec(cfg.codec, runtime),
        text_encoder_fn=lambda kept=text_encoder: kept,
    )


def dmd_cost(st: DMDConfig, run: CostInputs) -> Cost:
    """Generator (its EMA ``stage.generator_ema``) and critic (no EMA) trained, one update at a time; the frozen
    teacher and the text encoder; the codec and the image encoder when rollouts pass the horizon, else from the
    first periodic sample. Per loop step: a rollout of S student steps (S/3), the critic's update (1) and, every
    ``update_ratio``-th step, the generator's exit-step backward with the guided teacher (3 forwards at the
    teacher's cost) and the critic's score (2 in all at one size)."""
    horizons = st.rollout_horizons > 1
    frozen = [Held("teacher", "frozen teacher (real score)", shardable=True), Held("text")]
    if horizons or run.sampling:
        frozen += [Held("codec", later=not horizons), Held("image", later=not horizons)]
    S = run.student_steps
    return Cost(
        trained=(Trained("generator", ema=st.generator_ema.enabled), Trained("critic", ema=False, critic=True)),
        frozen=tuple(frozen),
        passes=S / 3 + 1 + (1 + run.teacher_cost) / st.update_ratio,
    )


STAGE = Stage(
    DMDConfig.name,
    DMDConfig,
    build_dmd,
    sequence_parallel=True,
    cache="rollout",
    cost=dmd_cost,
    teacher_size=True,
    manual_grad_sync=True,
)
