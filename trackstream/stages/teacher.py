"""Wiring of ``stage=teacher``: frozen parts, data, network, objective, hooks, evaluation, export.

Order matters: seeds first (identical random init on every rank), then the frozen parts (the
codec may have to be fitted first, in ``<run_dir>/codec``), the data stream (the synthetic pool
encoded once through the frozen codec), the network (built on meta for real flavors and
materialised after sharding by ``prepare_network``), and the objective, which receives the
wrapped network. ``finish`` evaluates EPE with and without tracks on held-out clips using the
EMA weights and exports the teacher (official Wan format + heads) to ``<run_dir>/export``.
The held-out clips (``data.clips.heldout_clips``: the synthetic world's, or with ``source=shards``
those of ``data.eval_shards``) are read first of all, so a missing or unfit held-out set fails before
the text encoder loads or the codec is fitted, not at the first evaluation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from trackstream.data.batching import derive_seed
from trackstream.data.clips import (
    ClipPool,
    PoolStream,
    build_raw_stream,
    check_heldout,
    heldout_clips,
    pool_track_batch,
)
from trackstream.eval.teacher_eval import evaluate_motion
from trackstream.models.conditioner import Conditioner
from trackstream.models.motion_wan import Conventions, build_motion_wan
from trackstream.stages.common import StagePlan, encode_pool, load_text_encoder, obtain_codec, trained_network
from trackstream.train.dist import Runtime
from trackstream.train.loop import Hook, TrainResult
from trackstream.train.metrics import MetricLogger
from trackstream.train.parallel import unwrap
from trackstream.train.teacher import FlowMatchingObjective
from trackstream.train.weights import export_network, initialise

if TYPE_CHECKING:
    from trackstream.stages.config import TrainConfig

__all__ = ["build_teacher"]

log = logging.getLogger(__name__)


def _heldout(cfg: "TrainConfig", *, evaluates: bool) -> ClipPool | None:
    """The held-out clips of the evaluation (None with ``eval.enabled`` false or on a rank that does not
    evaluate; every rank checks the config, so all fail alike)."""
    if not cfg.eval.enabled:
        return None
    data = dataclasses.replace(cfg.data, num_frames=cfg.eval.num_frames or cfg.data.num_frames)
    check_heldout(data, disable="eval.enabled=false")
    return heldout_clips(data) if evaluates else None


def build_teacher(cfg: "TrainConfig", runtime: Runtime, run_dir: Path) -> StagePlan:
    device = runtime.device
    sharded = cfg.parallel.strategy == "fsdp"
    # every rank runs the network's forward in evaluation when it is collective (FSDP gathers, SP all-to-alls)
    collective = sharded or runtime.sequence_parallel > 1
    heldout = _heldout(cfg, evaluates=runtime.is_main or collective)
    text_encoder = load_text_encoder(cfg, runtime)
    pool = ClipPool.training(cfg.data) if cfg.data.pool_size else None
    codec = obtain_codec(cfg, runtime, run_dir, pool)
    conditioner = Conditioner.for_network(cfg.model, codec=codec, text_encoder=text_encoder, device=device)

    if pool is not None:
        entries = encode_pool(pool, conditioner)

        def make(idx, gids):
            return pool_track_batch([entries[i] for i in idx], gids, seed=cfg.data.seed, num_tracks=cfg.data.num_tracks)

        data = PoolStream(
            len(entries),
            batch_size=cfg.data.batch_size,
            seed=cfg.data.seed,
            make_batch=make,
            rank=runtime.data_rank,  # the K ranks of a sequence group read the same samples
            world_size=runtime.data_world_size,
        )
    else:
        data = build_raw_stream(cfg.data, rank=runtime.data_rank, world_size=runtime.data_world_size)

    # Same seed on every rank right before the build: identical random init everywhere.
    torch.manual_seed(cfg.trainer.seed)
    net = build_motion_wan(cfg.model, text_encoder_dim=text_encoder.dim)
    net.conventions = Conventions(clean_first_frame=cfg.stage.clean_first_frame)
    on_meta = any(p.is_meta for p in net.parameters())
    init_fn = None
    if on_meta or cfg.model.init_from or cfg.model.lora.enabled:
        init_fn = partial(
            initialise,
            init_from=cfg.model.init_from,
            adapter=cfg.model.adapter,
            sharded=sharded,
            is_main=runtime.is_main,
        )
    trained = trained_network(
        cfg, runtime, "dit", net, optim=cfg.optim, ema=cfg.ema, total_steps=cfg.trainer.max_steps, init_fn=init_fn
    )
    objective = FlowMatchingObjective(
        trained.module,
        cfg=cfg.stage,
        shift=cfg.schedule.shift,
        conditioner=conditioner,
        null_text=conditioner.null_text,
        null_lengths=conditioner.null_lengths,
        embed_dim=unwrap(trained.module).track_embed_dim,
        splat=unwrap(trained.module).track_splat,
        height=cfg.data.height,
        width=cfg.data.width,
        seed=derive_seed(cfg.trainer.seed, "objective", runtime.data_rank) % 2**62,  # one noise per sample
        device=device,
    )

    def evaluate(tag: str, *, out: Path, logger: MetricLogger, step: int, max_clips: int | None = None) -> dict:
        """Every rank runs the sampler under FSDP or SP (collective forwards); otherwise rank 0 only."""
        figures: dict = {}
        if runtime.is_main or collective:
            clips = heldout.head(max_clips) if max_clips is not None else heldout
            module = trained.module if sharded else trained.raw
            ema = trained.ema if (cfg.eval.use_ema and trained.ema is not None) else None
            ctx = ema.swapped(unwrap(module)) if ema is not None else contextlib.nullcontext()
            was_training = module.training
            with ctx, runtime.autocast():
                figures = evaluate_motion(
                    module,
                    conditioner=conditioner,
                    clips=clips,
                    sampler=cfg.sampler,
                    shift=cfg.schedule.shift,
                    cfg=cfg.eval,
                    embed_dim=unwrap(module).track_embed_dim,
                    device=device,
                    out_dir=out if runtime.is_main else None,
                    fps=cfg.data.fps,
                    tag=tag,
                    clean_first_frame=cfg.stage.clean_first_frame,
                )
            module.train(was_training)
            for v in figures.get("videos", []):  # W&B (if enabled) gets them by file path
                logger.log_video(step, f"samples/{v['mode']}/{v['clip']:03d}", Path(v["path"]), caption=tag)
        runtime.barrier()
        return figures

    hooks = []
    if cfg.trainer.sample_every > 0 and cfg.eval.enabled:

        def periodic(step: int, logger: MetricLogger) -> None:
            figures = evaluate(
                f"step_{step:08d}",
                out=run_dir / "samples",
                logger=logger,
                step=step,
                max_clips=min(cfg.eval.periodic_clips, cfg.data.eval_samples),
            )
            # eval.jsonl and, with W&B, eval/* scalars at this step (rank 0 only)
            logger.log_eval(step, {"num_samples": figures.get("num_samples"), **_scalars(figures)})

        hooks.append(Hook(cfg.trainer.sample_every, periodic))

    def finish(result: TrainResult, logger: MetricLogger) -> dict:
        out: dict = {}
        if cfg.eval.enabled:
            figures = evaluate("final", out=run_dir / "samples", logger=logger, step=result.step)
            if runtime.is_main:
                (run_dir / "eval.json").write_text(json.dumps(figures, indent=2))
                log.info(
                    "EPE with tracks %.3f px, without tracks %.3f px (ratio %.3f); tracker on ground truth %.3f px",
                    figures["epe_with_tracks"],
                    figures["epe_without_tracks"],
                    figures["epe_ratio_with_over_without"],
                    figures["epe_ground_truth_video"],
                )
            out.update({k: v for k, v in figures.items() if k.startswith("epe_")})
            # the final evaluation in the history under the periodic one's prefix (eval/*, the last step)
            logger.log_eval(
                result.step, {"num_samples": figures.get("num_samples"), **_scalars(figures)}, periodic=False
            )
        conventions = Conventions(
            clean_first_frame=cfg.stage.clean_first_frame,
            schedule_shift=cfg.schedule.shift,
            num_frames=cfg.data.num_frames,
            height=cfg.data.height,
            width=cfg.data.width,
        )
        export = export_network(
            trained,
            run_dir / "export" / "teacher",
            model_cfg=asdict(cfg.model),
            runtime=runtime,
            text_encoder_dim=text_encoder.dim,
            conventions=conventions,
        )
        out["export"] = str(export)
        return out

    return StagePlan(objective=objective, networks={"dit": trained}, data=data, hooks=hooks, finish=finish)


def _scalars(figures: dict) -> dict:
    """The evaluation's scalar figures that go to eval.jsonl and W&B (EPE, PSNR, SSIM, lost points, the no-hold
    EPE and the last frames' brightness and texture against the ground truth)."""
    prefixes = ("epe_", "psnr_", "ssim_", "lost_", "no_hold_", "late_")
    return {k: v for k, v in figures.items() if k.startswith(prefixes) and isinstance(v, (int, float))}
