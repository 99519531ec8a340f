"""Wiring of ``stage=ode_init`` and ``stage=dmd`` for the one training loop (trackstream/train/loop.py).

ode_init: the frozen teacher (an exported network folder, ``stage.teacher``) makes the ODE pairs
  if ``stage.pairs`` has none yet (``obtain_ode_pairs``: renders the conditions, encodes them with
  the teacher's codec and text encoder, samples with joint guidance, writes shards; under several
  processes each rank writes its share of the shards);
  the student starts as a copy of the teacher and regresses the pairs (``ODEInitObjective``);
  ``finish`` exports it (EMA weights) to ``<run_dir>/export/student``.
dmd: generator = the ODE-init export (``stage.student``), critic = a copy of the teacher,
  real score = the frozen teacher; two optimizers with their own LRs (``stage.generator_optim``,
  ``stage.critic_optim``), the generator's EMA (``stage.generator_ema``); conditions (first
  frame, tracks, text) come from the pair folder; ``finish`` exports the student again.
The teacher's export is opened once (``stages.exports.NetworkExport``: its network.json, its codec, the
checks against it, the student's export in its format).
Both stages use the one step grid ``cfg.schedule`` (shift, student_steps). With ``trainer.sample_every``
(and ``eval.enabled``) the student streams a few held-out clips periodically (stages/periodic.py).
Several processes (parallel=ddp or fsdp): per-sample random draws are keyed by the global sample
id, so a global batch gives the same losses on any number of processes. The DMD rollout drives the
student's DiT through its streaming path (not the module's forward), which a DDP wrapper does not
see: under ddp the generator is left unwrapped and its gradients are averaged after backward
(``grad_sync="manual"``); under fsdp every module the streaming path calls is an FSDP unit of its
own (``parallel.fsdp_leaf_units``), so FSDP gathers and reduce-scatters as in a forward; the frozen
teacher is sharded too (DMD calls it in lockstep on every rank). DeepSpeed is refused for DMD.
ODE pairs keep a full teacher per rank: ranks write different shards and never call it in lockstep.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from trackstream.data.batching import derive_seed
from trackstream.data.clips import PoolStream
from trackstream.diffusion.schedule import sampling_sigmas
from trackstream.distill.dmd import DMDConfig, DMDObjective
from trackstream.distill.horizons import check_horizons, rollout_frames
from trackstream.distill.ode_init import ODEInitConfig, ODEInitObjective
from trackstream.distill.ode_pairs import generate_ode_pairs
from trackstream.distill.pair_shards import PairSet, pairs_complete
from trackstream.models.conditioner import Conditioner
from trackstream.models.formats.checkpoint import split_subkey
from trackstream.models.motion_wan import load_network
from trackstream.models.tracks import latent_frames
from trackstream.stages.common import StagePlan, load_text_encoder, trained_network
from trackstream.stages.exports import NetworkExport
from trackstream.stages.pair_conditions import PairConditions
from trackstream.stages.periodic import sampling_clips, with_student_samples
from trackstream.stages.snapshots import with_snapshots
from trackstream.train.dist import Runtime
from trackstream.train.loop import TrainResult
from trackstream.train.parallel import attach_sequence_parallel, prepare_frozen, unwrap
from trackstream.train.weights import load_frozen, load_student

if TYPE_CHECKING:
    from trackstream.stages.config import TrainConfig

__all__ = ["build_ode_init", "build_dmd", "obtain_ode_pairs", "condition_stream", "CONDITION_KEYS"]

log = logging.getLogger(__name__)
CONDITION_KEYS = ("image_latent", "tracks", "visibility", "text_emb", "text_len", "track_ids")
OPTIONAL_KEYS = ("image", "image_features")  # layout channels (not t2v / ti2v); CLIP tokens (I2V branch only)


@torch.no_grad()
def obtain_ode_pairs(cfg: "TrainConfig", runtime: Runtime, out_dir: Path) -> Path:
    """Generate the ODE pairs of ``cfg.stage`` into ``out_dir`` unless complete (resumable; under
    several processes each rank writes its share of the shards, rank 0 the index)."""
    st: ODEInitConfig = cfg.stage
    out_dir = Path(out_dir)
    if pairs_complete(out_dir):
        return out_dir
    export = NetworkExport(st.teacher)
    device = runtime.device  # every rank builds the teacher and writes its share of the shards
    teacher = load_network(export.dir)
    attach_sequence_parallel(teacher, runtime, "teacher (ODE pairs)")  # a group samples its shards together
    teacher = prepare_frozen(runtime, teacher)
    conditioner = export.conditioner(cfg, runtime, load_text_encoder(cfg, runtime))
    conditions = PairConditions(
        cfg, conditioner, count=st.pool_size or st.ode_pairs.num_pairs, text_dim=export.text_dim
    )
    if runtime.is_main:
        log.info(
            "ODE pairs: %d pairs from %s, %d teacher steps, %d process(es) -> %s",
            st.ode_pairs.num_pairs,
            conditions.describe(),
            st.ode_pairs.teacher_steps,
            runtime.world_size,
            out_dir,
        )

    generate_ode_pairs(
        teacher,
        conditions=conditions,
        cfg=st.ode_pairs,
        student_steps=cfg.schedule.student_steps,
        shift=cfg.schedule.shift,
        null_text=conditioner.null_text,
        null_text_lengths=conditioner.null_lengths,
        embed_dim=teacher.track_embed_dim,
        height=cfg.data.height,
        width=cfg.data.width,
        out_dir=out_dir,
        device=device,
        rank=runtime.data_rank,
        world_size=runtime.data_world_size,
        barrier=runtime.barrier,
        writer=runtime.rank % runtime.sequence_parallel == 0,
    )
    runtime.barrier()
    return out_dir


def _pair_stream(cfg: "TrainConfig", runtime: Runtime, pairs: PairSet, keys: tuple[str, ...]) -> PoolStream:
    return condition_stream(cfg, runtime, pairs, keys, horizons=1)


def condition_stream(
    cfg: "TrainConfig",
    runtime: Runtime,
    pairs: PairSet | None,
    keys: tuple[str, ...],
    *,
    horizons: int,
    conditioner: Conditioner | None = None,
    text_dim: int | None = None,
    count: int | None = None,
) -> PoolStream:
    """The pair folder's ``keys`` (the teacher's horizon), or the conditions (first frame, tracks, text) of the
    same clips rendered at ``1 + N (T_h - 1)`` frames for a rollout over ``horizons`` > 1 horizons, encoded per
    batch with the teacher's ``conditioner``; without a pair folder (``pairs`` None: a student started by
    teacher forcing or consistency distillation) the first ``count`` training clips' conditions, rendered the
    same way. Every batch carries its global sample ids (``gid``): they key per-sample randomness, so a global
    batch draws the same on any world size."""
    if pairs is not None:
        keys = keys + tuple(k for k in OPTIONAL_KEYS if k in pairs)
        count = len(pairs)
    if pairs is not None and horizons == 1:

        def make(idx: list[int], gids: list[int]) -> dict:
            return {**pairs.batch(idx, keys), "gid": torch.tensor(gids)}

    else:
        assert conditioner is not None and text_dim is not None and count
        keys = keys + OPTIONAL_KEYS
        frames = rollout_frames(cfg.data.num_frames, horizons, cfg.stage.causal)
        long_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_frames=frames))
        needed_by = f"stage.rollout_horizons={horizons} (rollouts of {frames} frames)"
        conditions = PairConditions(long_cfg, conditioner, count=count, text_dim=text_dim, needed_by=needed_by)
        if conditions.pool is None:  # shards: a clip too short for the rollout is refused now, not mid-run
            conditions.samples.get(0)
        if runtime.is_main:
            log.info("conditions: %s at %d frames (%d teacher horizons)", conditions.describe(), frames, horizons)

        def make(idx: list[int], gids: list[int]) -> dict:
            batch = conditions(idx)
            return {**{k: batch[k].cpu() for k in keys if batch.get(k) is not None}, "gid": torch.tensor(gids)}

    return PoolStream(
        count,
        batch_size=cfg.data.batch_size,
        seed=derive_seed(cfg.data.seed, "pairs"),
        make_batch=make,
        rank=runtime.data_rank,  # the K ranks of a sequence group train on the same samples
        world_size=runtime.data_world_size,
    )


def build_ode_init(cfg: "TrainConfig", runtime: Runtime, run_dir: Path) -> StagePlan:
    st: ODEInitConfig = cfg.stage
    export = NetworkExport(st.teacher)
    export.check_teacher_of(cfg)
    heldout = sampling_clips(cfg, runtime)  # before the pairs: a missing held-out set fails first
    t0 = time.perf_counter()
    pairs_dir = obtain_ode_pairs(cfg, runtime, Path(st.pairs) if st.pairs else run_dir / "ode_pairs")
    pairs_seconds = round(time.perf_counter() - t0, 2)
    K = cfg.schedule.student_steps
    pairs = PairSet(pairs_dir, student_steps=K, shift=cfg.schedule.shift)
    # the student starts as the teacher (causal attention from here on), or as stage.student (another size)
    student, student_model = load_student(st.student, export.dir, model=cfg.model)
    trained = trained_network(
        cfg, runtime, "generator", student, optim=cfg.optim, ema=cfg.ema, total_steps=cfg.trainer.max_steps
    )
    objective = ODEInitObjective(
        trained.module,
        cfg=st,
        sigmas=sampling_sigmas(K, shift=cfg.schedule.shift),
        embed_dim=unwrap(trained.module).track_embed_dim,
        height=cfg.data.height,
        width=cfg.data.width,
        seed=derive_seed(cfg.trainer.seed, "ode_init") % 2**62,
        device=runtime.device,
    )
    data = _pair_stream(cfg, runtime, pairs, CONDITION_KEYS + ("trajectory",))

    def finish(result: TrainResult, logger=None) -> dict:
        return {
            "export": str(export.export_student(trained, run_dir, runtime, cfg, model=student_model)),
            "pairs": str(pairs_dir),
            "num_pairs": len(pairs),
            "pairs_seconds": pairs_seconds,
        }

    return with_student_samples(
        StagePlan(objective=objective, networks={"generator": trained}, data=data, finish=finish),
        cfg,
        runtime,
        run_dir,
        model=student_model,
        codec_fn=lambda: export.codec(cfg, runtime),
        text_encoder_fn=lambda: load_text_encoder(cfg, runtime),
        clips=heldout,
    )


def _dmd_networks(cfg: "TrainConfig", runtime: Runtime, export: NetworkExport):
    """The generator (``stage.student``: an exported student, or a Wan / community checkpoint such as
    PATH::generator_ema in the teacher's network) and the critic (a copy of the teacher, the generator's
    starting weights, or a path in the student's network), each with its optimizer; the generator's EMA."""
    st: DMDConfig = cfg.stage
    critic_spec = st.student if st.critic == "student" else st.critic
    if critic_spec and st.critic != "student" and not Path(split_subkey(critic_spec)[0]).exists():
        raise ValueError(f"stage.critic={st.critic!r} does not exist: a path, 'student' or null (the teacher)")
    student_net, student_model = load_student(st.student, export.dir, model=cfg.model)
    critic_net, _ = load_student(
        critic_spec, export.dir, model=None if critic_spec is None else cfg.model, field="stage.critic"
    )
    steps = cfg.trainer.max_steps
    # the self-rollout drives the DiT's streaming path, not the module's forward: under ddp no wrapper
    # (gradients averaged after backward), under fsdp one unit per module the path calls
    generator = trained_network(
        cfg,
        runtime,
        "generator",
        student_net,
        optim=st.generator_optim,
        ema=st.generator_ema,
        total_steps=max(1, steps // st.update_ratio),
        grad_sync="manual",
    )
    critic = trained_network(cfg, runtime, "critic", critic_net, optim=st.critic_optim, ema=None, total_steps=steps)
    return generator, critic, student_model


def build_dmd(cfg: "TrainConfig", runtime: Runtime, run_dir: Path) -> StagePlan:
    st: DMDConfig = cfg.stage
    check_horizons(st.causal, st.rollout_horizons, cfg.data.num_frames)
    export = NetworkExport(st.teacher)
    export.check_teacher_of(cfg)
    heldout = sampling_clips(cfg, runtime)  # before the networks load: a missing held-out set fails first
    count = st.pool_size or cfg.data.pool_size  # without a pair folder: the first `count` training clips
    if not st.pairs and not count:
        raise ValueError(
            "stage.pairs is not set and stage.pool_size is null: give the ODE pair folder (its first frames, tracks "
            "and texts are the DMD conditions) or stage.pool_size=<N> (the first N training clips' conditions)"
        )
    generator, critic, student_model = _dmd_networks(cfg, runtime, export)
    K, ratio = cfg.schedule.student_steps, st.update_ratio
    pairs = PairSet(st.pairs, student_steps=K, shift=cfg.schedule.shift) if st.pairs else None
    teacher = load_frozen(export.dir, runtime, cfg.parallel, name="teacher")
    text_encoder = load_text_encoder(cfg, runtime)
    null_text, null_lengths = text_encoder.encode([""])
    long = st.rollout_horizons > 1
    conditioner = export.conditioner(cfg, runtime, text_encoder) if long or pairs is None else None
    objective = DMDObjective(
        generator.module,
        critic.module,
        teacher,
        cfg=st,
        sigmas=sampling_sigmas(K, shift=cfg.schedule.shift),
        shift=cfg.schedule.shift,
        null_text=null_text,
        null_text_lengths=null_lengths,
        embed_dim=unwrap(generator.module).track_embed_dim,
        height=cfg.data.height,
        width=cfg.data.width,
        seed=derive_seed(cfg.trainer.seed, "dmd") % 2**62,
        device=runtime.device,
        conditioner=conditioner,
        horizon_latents=latent_frames(cfg.data.num_frames),
    )
    data = condition_stream(
        cfg,
        runtime,
        pairs,
        tuple(k for k in CONDITION_KEYS if k != "track_ids"),
        horizons=st.rollout_horizons,
        conditioner=conditioner,
        text_dim=export.text_dim,
        count=count,
    )

    def finish(result: TrainResult, logger=None) -> dict:
        return {
            "export": str(export.export_student(generator, run_dir, runtime, cfg, model=student_model)),
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
    return with_student_samples(
        plan,
        cfg,
        runtime,
        run_dir,
        model=student_model,
        codec_fn=lambda: export.codec(cfg, runtime),
        text_encoder_fn=lambda kept=text_encoder: kept,
        clips=heldout,
    )
