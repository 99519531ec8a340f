"""Periodic held-out samples of the streaming student while ode_init, dmd or rl trains (docs/wandb.md).

Every ``trainer.sample_every`` steps (with ``eval.enabled``) the student being trained (its EMA weights
when it keeps them and ``eval.use_ema``) streams ``eval.periodic_clips`` held-out clips through the
streaming engine, scored by ``eval.stream_scoring.evaluate_stream_motion`` as the evaluation of ``make run``
scores students (the one EPE protocol, ``eval.metrics.motion_epe``; the first frame and the input tracks
visible in it, with and without tracks from the same noise). The figures go to ``<run_dir>/eval.jsonl``
and W&B ``eval/*``; per clip a side-by-side mp4 (ground truth | with tracks | without tracks, the input
tracks drawn on each) goes to ``<run_dir>/samples/`` and W&B ``samples/student/<i>``.
The codec and text encoder are loaded on the first call, so a run that never samples pays nothing; a call
costs 2 x clips streamed videos, their decoding and the tracker. The tiny experiments leave it off.
The held-out clips (``data.clips.heldout_clips``: with ``source=shards`` the first samples of ``data.eval_shards``)
are read when the stage is built (``sampling_clips``; ODE init before its pairs), so a missing held-out set
fails before any work.
Several processes: under fsdp every rank streams (each module of the streaming path is an FSDP unit,
gathered in lockstep) and rank 0 writes; otherwise rank 0 streams the unwrapped network alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Callable

import torch

from trackstream.data.clips import DataConfig, check_heldout, heldout_clips
from trackstream.eval.scorebook import input_tracks
from trackstream.eval.stream_scoring import StreamEvalConfig, evaluate_stream_motion
from trackstream.eval.teacher_eval import EvalConfig
from trackstream.models.conditioner import Conditioner
from trackstream.models.motion_wan import ModelConfig
from trackstream.models.streaming import StreamConfig
from trackstream.stream.engine import StreamingGenerator
from trackstream.train.plan import StagePlan
from trackstream.trainer.dist import Runtime
from trackstream.trainer.loop import Hook, TrainResult
from trackstream.trainer.metrics import MetricLogger
from trackstream.trainer.parallel import unwrap

log = logging.getLogger(__name__)

__all__ = ["StudentSampling", "sampling_clips", "with_student_samples", "write_sample_videos"]

FIGURES = ("epe_", "psnr_", "ssim_")


def write_sample_videos(folder: Path, tag: str, clips: list[dict], frames: dict, *, num_tracks, fps: int) -> list:
    """Per clip ``<folder>/<tag>_<i>.mp4``: ground truth | with tracks | without tracks, input tracks drawn."""
    from trackstream.data.video_io import write_mp4
    from trackstream.stream.visualize import side_by_side

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, clip in enumerate(clips):
        tr, vi, counts = input_tracks([clip], num_tracks)
        panels = [("ground truth", clip["frames"]), ("tracks", frames["with_tracks"][i])]
        panels.append(("no tracks", frames["without_tracks"][i]))
        scale = max(1, round(192 / clip["frames"].shape[2]))  # 64-px frames enlarged 3x, 480p ones left as they are
        video = side_by_side(panels, tr[0, :, : counts[0]].numpy(), vi[0, :, : counts[0]].numpy(), scale=scale)
        path = folder / f"{tag}_{i:03d}.mp4"
        write_mp4(str(path), video, fps=fps)
        paths.append(path)
    return paths


@dataclasses.dataclass(frozen=True)
class StudentSampling:
    """How a student stage samples its student while it trains: every ``every`` steps (``trainer.sample_every``),
    scored as ``eval_cfg`` (``eval``) says, on held-out clips of ``data`` (videos at its fps); ``strategy``:
    ``parallel.strategy`` (under fsdp every rank streams)."""

    every: int
    eval_cfg: EvalConfig
    data: DataConfig
    strategy: str

    @classmethod
    def of(cls, cfg) -> "StudentSampling":
        """The four settings of a stage's TrainConfig."""
        return cls(cfg.trainer.sample_every, cfg.eval, cfg.data, cfg.parallel.strategy)

    def clips(self, runtime: Runtime) -> list[dict] | None:
        """``sampling_clips`` of these settings."""
        return sampling_clips(self.eval_cfg, self.data, runtime, sample_every=self.every, strategy=self.strategy)

    def attach(self, plan: StagePlan, clips: list[dict] | None, runtime: Runtime, run_dir: Path, **parts) -> StagePlan:
        """``with_student_samples`` of these settings; ``parts``: its stream, model, codec_fn and text_encoder_fn."""
        return with_student_samples(
            plan,
            clips,
            runtime,
            run_dir,
            every=self.every,
            eval_cfg=self.eval_cfg,
            fps=self.data.fps,
            sharded=self.strategy == "fsdp",
            **parts,
        )


def sampling_clips(
    eval_cfg: EvalConfig, data: DataConfig, runtime: Runtime, *, sample_every: int, strategy: str
) -> list[dict] | None:
    """The held-out clips the student is streamed on every ``sample_every`` steps (``trainer.sample_every``):
    the first ``eval.periodic_clips`` (at most ``data.eval_samples``) of ``eval.num_frames`` frames; None when
    sampling is off, [] on a rank that does not stream (``strategy``: ``parallel.strategy``). Every rank checks
    the config, so all refuse alike."""
    if sample_every <= 0 or not eval_cfg.enabled:
        return None
    if strategy == "deepspeed":
        raise ValueError(
            "trainer.sample_every > 0 with parallel.strategy=deepspeed: the student is streamed outside the "
            "engine's forward; set trainer.sample_every=0 (or eval.enabled=false) and evaluate the export"
        )
    if data.source == "shards" and not data.eval_shards:  # samples need held-out clips of the user's data
        log.warning(
            "no student samples: data.eval_shards is not set (held-out clips prepared like data.shards); "
            "set it to see the student stream every trainer.sample_every=%d steps",
            sample_every,
        )
        return None
    n = min(eval_cfg.periodic_clips, data.eval_samples)
    held = dataclasses.replace(data, num_frames=eval_cfg.num_frames or data.num_frames, eval_samples=n)
    check_heldout(held, disable="trainer.sample_every=0 (or eval.enabled=false)")
    if not (runtime.is_main or strategy == "fsdp"):
        return []
    return heldout_clips(held).clips  # the first n held-out clips


def with_student_samples(
    plan: StagePlan,
    clips: list[dict] | None,
    runtime: Runtime,
    run_dir: Path,
    *,
    every: int,
    stream: StreamConfig,
    eval_cfg: EvalConfig,
    fps: int,
    sharded: bool,
    model: dict,
    codec_fn: Callable[[], torch.nn.Module],
    text_encoder_fn: Callable[[], object],
) -> StagePlan:
    """A student stage's ``plan`` with the periodic sampling hook of its ``generator`` (every ``every`` steps:
    ``trainer.sample_every``) and a sample of the result before its ``finish`` (the loop skips hooks at the last
    step); ``plan`` as it is when ``clips`` (``sampling_clips``) is None. The student streams as ``stream``
    (its export records it), is scored as ``eval_cfg`` (``eval``) says (with its EMA weights when it keeps them and
    ``eval.use_ema``) and its videos are written at ``fps``; ``sharded`` (``parallel.strategy=fsdp``): every
    rank streams. ``model``: the student's ``network.json`` model config; ``codec_fn`` / ``text_encoder_fn``
    load the frozen codec and text encoder (called once, on the first sample)."""
    if clips is None:
        return plan
    trained = plan.networks["generator"]
    scoring = StreamEvalConfig(
        tracker=eval_cfg.tracker,
        batch_size=eval_cfg.batch_size,
        seed=eval_cfg.seed,
        num_tracks=eval_cfg.num_tracks,
        preview_clips=0,
    )
    parts: dict = {}

    def load() -> dict:
        if not parts:
            conditioner = Conditioner.for_network(
                ModelConfig(**model), codec=codec_fn(), text_encoder=text_encoder_fn(), device=runtime.device
            )
            parts.update(conditioner=conditioner, clips=clips)
        return parts

    def sample(step: int, logger: MetricLogger) -> None:
        if runtime.is_main or sharded:
            p = load()
            net = unwrap(trained.module if sharded else trained.raw)
            ema = trained.ema if (eval_cfg.use_ema and trained.ema is not None) else None
            was_training = net.training
            # rank 0 alone (not sharded) streams the whole sequence: its DiT leaves its sequence group for it
            alone = contextlib.nullcontext() if sharded else _whole_sequence(net)
            with ema.swapped(net) if ema is not None else contextlib.nullcontext(), runtime.autocast(), alone:
                # fast=False: the reference step, no static buffers left on the network being trained
                engine = StreamingGenerator(
                    net,
                    p["conditioner"].codec,
                    config=stream,
                    image_features_fn=p["conditioner"].image_features,
                    fast=False,
                )
                figures = evaluate_stream_motion(
                    engine, clips=p["clips"], text_fn=p["conditioner"].text, cfg=scoring, out_dir=None, fps=fps
                )
            net.train(was_training)
            if runtime.is_main:
                _log_samples(figures, p["clips"], run_dir, step, logger, num_tracks=eval_cfg.num_tracks, fps=fps)
        runtime.barrier()

    finish = plan.finish

    def sample_then_finish(result: TrainResult, logger: MetricLogger | None = None) -> dict:
        if logger is not None:
            sample(result.step, logger)
        return finish(result, logger)

    hooks = [*plan.hooks, Hook(every, sample)]
    return dataclasses.replace(plan, hooks=hooks, finish=sample_then_finish)


def _log_samples(figures: dict, clips: list[dict], run_dir: Path, step: int, logger, *, num_tracks, fps: int) -> None:
    """The student's figures to eval.jsonl (and W&B) and its sample videos to ``<run_dir>/samples``."""
    keep = {k: v for k, v in figures.items() if k.startswith(FIGURES)}
    logger.log_eval(step, {"num_samples": figures["num_samples"], **keep})
    tag = f"step_{step:08d}"
    paths = write_sample_videos(run_dir / "samples", tag, clips, figures["frames"], num_tracks=num_tracks, fps=fps)
    for i, path in enumerate(paths):
        logger.log_video(step, f"samples/student/{i:03d}", path, caption=f"{tag}: ground truth | tracks | no tracks")


@contextlib.contextmanager
def _whole_sequence(net: torch.nn.Module):
    """``net``'s DiT without its sequence shard for the duration (one rank streaming alone)."""
    dit = getattr(net, "dit", None)
    shard = getattr(dit, "sequence_shard", None)
    if shard is not None:
        dit.sequence_shard = None
    try:
        yield
    finally:
        if shard is not None:
            dit.sequence_shard = shard
