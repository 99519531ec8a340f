"""Wiring of ``stage=rl`` (conf/stage/rl.yaml) for the one training loop: AR-Drag's GRPO on the student.

policy = the exported student (``stage.student``: a DMD or ODE-init export), trained with its own AdamW
(``stage.optim``) and optional EMA (``stage.ema``); reference = a frozen copy of the same export (the KL
anchor; not built when ``stage.kl_weight`` is 0); the frozen codec decodes rollouts for the rewards
(``stage.rewards``, eval/rewards.py). Conditions (first frame, tracks, text) come from an ODE pair folder
(``stage.pairs``) as for DMD; the teacher is not needed. The student must stream as configured: its
network.json ``conventions.streaming`` (chunking, steps, shift) must equal ``stage.causal``,
``schedule.student_steps`` and ``schedule.shift``. ``finish`` exports the policy (EMA weights if kept)
to ``<run_dir>/export/student`` in the student's format. ``trainer.sample_every`` (with ``eval.enabled``)
streams a few held-out clips periodically (stages/periodic.py: eval/* figures and sample videos).
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
from trackstream.diffusion.schedule import sampling_sigmas
from trackstream.distill.horizons import check_horizons
from trackstream.distill.pair_shards import PairSet
from trackstream.distill.rl import RLConfig, RLObjective
from trackstream.eval.rewards import build_rewards
from trackstream.models.motion_wan import Conventions, load_network
from trackstream.stages.common import StagePlan, load_text_encoder
from trackstream.stages.distill import (
    CONDITION_KEYS,
    condition_stream,
    export_student,
    horizon_conditioner,
    require_export,
    student_steps,
)
from trackstream.stages.periodic import with_student_samples
from trackstream.train.dist import Runtime
from trackstream.train.loop import TrainResult
from trackstream.train.parallel import attach_sequence_parallel, prepare_frozen, prepare_network, unwrap
from trackstream.train.weights import load_frozen

if TYPE_CHECKING:
    from trackstream.stages.config import TrainConfig

__all__ = ["build_rl", "check_student_streaming", "student_codec"]

log = logging.getLogger(__name__)


def check_student_streaming(cfg: "TrainConfig", student_dir: Path) -> None:
    """The rollout must be the student's inference: its recorded chunking, steps and shift (if recorded)."""
    meta = json.loads((student_dir / "network.json").read_text())
    conv = Conventions.from_dict(meta.get("conventions", {}), source=str(student_dir / "network.json"))
    s = conv.streaming
    if s is None:
        return  # an export from before streaming conventions were recorded: the config decides
    errors = []
    if s.causal != cfg.stage.causal:
        errors.append(f"stage.causal={cfg.stage.causal} (student: {s.causal})")
    if s.steps != student_steps(cfg):
        errors.append(f"schedule.student_steps={student_steps(cfg)} (student: {s.steps})")
    if abs(s.shift - cfg.schedule.shift) > 1e-9:
        errors.append(f"schedule.shift={cfg.schedule.shift} (student: {s.shift})")
    if errors:
        raise ValueError(f"the student {student_dir} streams differently: {', '.join(errors)}; pass its values")


def student_codec(cfg: "TrainConfig", runtime: Runtime, student_dir: Path):
    """The frozen codec of the student's latent space: ``codec.checkpoint`` or a released codec, else (the
    trainable tiny codec) the one of the teacher named by the student's run config (``stage.teacher``)."""
    from omegaconf import OmegaConf

    from trackstream.stages.distill import teacher_codec
    from trackstream.train.codec import TRAINABLE, build_codec_module

    if cfg.codec.checkpoint or cfg.codec.name not in TRAINABLE:
        return prepare_frozen(runtime, build_codec_module(cfg.codec))
    run_cfg = student_dir.parents[1] / "config.yaml" if len(student_dir.parents) > 1 else None
    teacher = OmegaConf.load(run_cfg).get("stage", {}).get("teacher") if run_cfg and run_cfg.is_file() else None
    if not teacher:
        raise ValueError(
            f"codec.checkpoint is not set and {student_dir} is not in a run directory naming its teacher: pass the "
            "teacher's codec (codec.checkpoint=<teacher_run>/codec/codec.pt)"
        )
    return teacher_codec(cfg, runtime, Path(teacher))


def build_rl(cfg: "TrainConfig", runtime: Runtime, run_dir: Path) -> StagePlan:
    st: RLConfig = cfg.stage
    student_dir = require_export(st.student, "stage.student")
    check_student_streaming(cfg, student_dir)
    if not st.pairs:
        raise ValueError("stage.pairs is not set: give an ODE pair folder (its first frames, tracks and texts)")
    K = student_steps(cfg)
    pairs = PairSet(st.pairs, student_steps=K, shift=cfg.schedule.shift)
    if "first_frame" not in pairs:
        raise ValueError(f"stage.pairs={st.pairs}: the pairs have no first_frame (regenerate them)")
    policy_net = load_network(student_dir)
    attach_sequence_parallel(policy_net, runtime, "policy")  # parallel.sequence_parallel: the rollout on token slices
    policy = prepare_network(
        runtime,
        cfg.parallel,
        name="generator",
        module=policy_net,
        optim=st.optim,
        ema=st.ema,
        total_steps=cfg.trainer.max_steps,
        grad_sync="manual",  # driven through the streaming path, as DMD's generator
    )
    reference = load_frozen(student_dir, runtime, cfg.parallel, name="KL reference") if st.kl_weight > 0 else None
    reward = build_rewards(st.rewards, device=runtime.device)
    codec = student_codec(cfg, runtime, student_dir)
    objective = RLObjective(
        policy.module,
        reference,
        codec,
        reward,
        cfg=st,
        sigmas=sampling_sigmas(K, shift=cfg.schedule.shift),
        embed_dim=unwrap(policy.module).track_embed_dim,
        height=cfg.data.height,
        width=cfg.data.width,
        seed=derive_seed(cfg.trainer.seed, "rl") % 2**62,
        device=runtime.device,
    )
    keys = tuple(k for k in CONDITION_KEYS if k != "track_ids") + ("first_frame",)
    check_horizons(st.causal, st.rollout_horizons, cfg.data.num_frames)
    data = condition_stream(
        cfg,
        runtime,
        pairs,
        keys,
        horizons=st.rollout_horizons,
        conditioner=(
            horizon_conditioner(cfg, runtime, student_dir, load_text_encoder(cfg, runtime), codec)
            if st.rollout_horizons > 1
            else None
        ),
        text_dim=int(json.loads((student_dir / "network.json").read_text())["text_encoder_dim"]),
    )
    if runtime.is_main:
        log.info(
            "RL: %d conditions x %d rollouts, SDE noise level %.2f, %d update(s) per rollout, KL weight %g, rewards %s",
            cfg.data.batch_size,
            st.group_size,
            st.noise_level,
            st.updates_per_rollout,
            st.kl_weight,
            ", ".join(f"{r.name} x {w:g}" for r, w in reward.rewards),
        )

    def finish(result: TrainResult, logger=None) -> dict:
        return {
            "export": str(export_student(policy, run_dir, student_dir, runtime, cfg)),
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
    return with_student_samples(  # periodic held-out samples (trainer.sample_every)
        plan,
        cfg,
        runtime,
        run_dir,
        model=json.loads((student_dir / "network.json").read_text())["model"],
        codec_fn=lambda: codec,
        text_encoder_fn=lambda: load_text_encoder(cfg, runtime),  # loaded on the first sample only
    )
