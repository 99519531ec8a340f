"""Wiring of ``stage=rl`` (conf/stage/rl.yaml) for the one training loop: AR-Drag's GRPO on the student.

policy = the exported student (``stage.student``: a DMD or ODE-init export), trained with its own AdamW
(``stage.optim``) and optional EMA (``stage.ema``); reference = a frozen copy of the same export (the KL
anchor; not built when ``stage.kl_weight`` is 0); the frozen codec decodes rollouts for the rewards
(``stage.rewards``, eval/rewards.py). Conditions (first frame, tracks, text) come from an ODE pair folder
(``stage.pairs``) as for DMD, or without one from the first ``stage.pool_size`` training clips; the teacher is not
needed. The student must stream as configured: its
network.json ``conventions.streaming`` (chunking, steps, shift) must equal ``stage.causal``,
``schedule.student_steps`` and ``schedule.shift``. ``finish`` exports the policy (EMA weights if kept)
to ``<run_dir>/export/student`` in the student's format. ``trainer.sample_every`` (with ``eval.enabled``)
streams a few held-out clips periodically (train/periodic.py: eval/* figures and sample videos).
Several processes: as DMD's generator, the policy is driven through its streaming path, so under ddp its
gradients are averaged after backward and under fsdp every module of that path is its own unit; the
reference is sharded under fsdp (all ranks call it in lockstep: the same number of chunks and passes).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from trackstream.data.batching import derive_seed
from trackstream.distill.horizons import check_horizons
from trackstream.distill.pair_shards import PairSet
from trackstream.eval.rewards import build_rewards
from trackstream.train.encoders import load_text_encoder
from trackstream.train.exports import NetworkExport
from trackstream.train.pair_data import CONDITION_KEYS, condition_stream
from trackstream.train.periodic import StudentSampling
from trackstream.train.plan import StagePlan, trained_network
from trackstream.train.rl.objective import RLConfig, RLObjective
from trackstream.train.stage import Cost, CostInputs, Held, Stage, Trained
from trackstream.trainer.dist import Runtime
from trackstream.trainer.loop import TrainResult
from trackstream.trainer.parallel import unwrap
from trackstream.trainer.weights import load_frozen

if TYPE_CHECKING:
    from trackstream.train.train_config import TrainConfig

__all__ = ["STAGE", "build_rl"]

log = logging.getLogger(__name__)


def _describe(st: RLConfig, batch_size: int, reward) -> str:
    rewards = ", ".join(f"{r.name} x {w:g}" for r, w in reward.rewards)
    return (
        f"RL: {batch_size} conditions x {st.group_size} rollouts, SDE noise level {st.noise_level:.2f}, "
        f"{st.updates_per_rollout} update(s) per rollout, KL weight {st.kl_weight:g}, rewards {rewards}"
    )


def build_rl(cfg: "TrainConfig", runtime: Runtime, run_dir: Path) -> StagePlan:
    st: RLConfig = cfg.stage
    student = NetworkExport(st.student, "stage.student")
    stream = cfg.schedule.streaming(st.causal)
    student.check_streams_as(stream)
    # equal to the config's but for the noise levels a student may record (FastVideo students): it keeps those
    stream = student.conventions.streaming or stream
    count = st.pool_size or cfg.data.pool_size  # without a pair folder: the first `count` training clips
    if not st.pairs and not count:
        raise ValueError(
            "stage.pairs is not set and stage.pool_size is null: give an ODE pair folder (its first frames, tracks "
            "and texts) or stage.pool_size=<N> (the first N training clips' conditions)"
        )
    K = cfg.schedule.student_steps
    pairs = PairSet(st.pairs, student_steps=K, shift=cfg.schedule.shift) if st.pairs else None
    if pairs is not None and "first_frame" not in pairs:
        raise ValueError(f"stage.pairs={st.pairs}: the pairs have no first_frame (regenerate them)")
    policy = trained_network(
        cfg.parallel,
        runtime,
        "generator",
        student.network.load(),
        optim=st.optim,
        ema=st.ema,
        total_steps=cfg.trainer.max_steps,
        lora=None,  # the policy is fine-tuned whole (AR-Drag)
        grad_sync="manual",  # driven through the streaming path, as DMD's generator
    )
    reference = load_frozen(student.dir, runtime, cfg.parallel, name="KL reference") if st.kl_weight > 0 else None
    reward = build_rewards(st.rewards, device=runtime.device)
    codec = student.codec(cfg.codec, runtime)
    objective = RLObjective(
        policy.module,
        reference,
        codec,
        reward,
        cfg=st,
        sigmas=stream.sigmas(),
        embed_dim=unwrap(policy.module).track_embed_dim,
        height=cfg.data.height,
        width=cfg.data.width,
        seed=derive_seed(cfg.trainer.seed, "rl") % 2**62,
        device=runtime.device,
    )
    keys = tuple(k for k in CONDITION_KEYS if k != "track_ids") + ("first_frame",)
    check_horizons(st.causal, st.rollout_horizons, cfg.data.num_frames)
    data = condition_stream(
        cfg.data,
        runtime,
        pairs,
        keys,
        causal=st.causal,
        horizons=st.rollout_horizons,
        conditioner=(
            student.conditioner(cfg.codec, runtime, load_text_encoder(cfg.model, runtime))
            if st.rollout_horizons > 1 or pairs is None
            else None
        ),
        text_dim=student.text_dim,
        count=count,
    )
    if runtime.is_main:
        log.info(_describe(st, cfg.data.batch_size, reward))

    def finish(result: TrainResult, logger=None) -> dict:
        return {
            "export": str(student.export_student(policy, run_dir, runtime, stream)),
            "policy_updates": policy.num_updates,
            "reward_seconds": round(sum(r.seconds for r, _ in reward.rewards), 2),
            "config": json.loads(json.dumps(asdict(st), default=str)),
        }

    plan = StagePlan(
        objective=objective,
        networks={"generator": policy},
        data=data,
        finish=finish,
        frozen={"reference": reference} if reference is not None else {},
    )
    sampling = StudentSampling.of(cfg)
    heldout = sampling.clips(runtime)
    return sampling.attach(  # periodic held-out samples (trainer.sample_every)
        plan,
        heldout,
        runtime,
        run_dir,
        stream=stream,
        model=student.meta["model"],
        codec_fn=lambda: codec,
        text_encoder_fn=lambda: load_text_encoder(cfg.model, runtime),  # loaded on the first sample only
    )


def rl_cost(st: RLConfig, run: CostInputs) -> Cost:
    """The policy trained (no LoRA; its EMA ``stage.ema``); the frozen reference when ``stage.kl_weight`` > 0;
    the codec (it decodes the rollouts for the rewards); the aesthetic reward's CLIP ViT-L/14 when weighted;
    the text and image encoders when rollouts pass the horizon, else from the first periodic sample. Per
    rollout: S student steps (S/3), the reference pass (1/3 with the KL) and the differentiated passes (1);
    B x G rollouts per micro-batch."""
    horizons = st.rollout_horizons > 1
    frozen = [Held("student", "frozen reference (KL)", shardable=True)] if st.kl_weight > 0 else []
    frozen.append(Held("codec"))
    if st.rewards.aesthetic.weight:
        frozen.append(Held("aesthetic"))
    notes = ()
    if st.rewards.motion.weight and st.rewards.motion.tracker.startswith("cotracker"):
        notes = ("the CoTracker3 reward tracker is not counted",)
    if horizons or run.sampling:
        frozen += [Held("text", later=not horizons), Held("image", later=not horizons)]
    return Cost(
        trained=(Trained("policy", ema=st.ema.enabled),),
        frozen=tuple(frozen),
        passes=run.student_steps / 3 + (1 / 3 if st.kl_weight > 0 else 0) + 1,
        rollouts=st.group_size,
        notes=notes,
    )


STAGE = Stage(
    RLConfig.name,
    RLConfig,
    build_rl,
    sequence_parallel=True,
    lora=False,
    cache="rollout",
    cost=rl_cost,
    manual_grad_sync=True,
)
