"""The trainable tiny codec's fit, as the ``codec`` stage and nested in the stages that need a frozen codec.

``stage=codec`` fits the codec alone (``codec.*`` settings; ``trainer.max_steps`` sets its length), then its
latent statistics, and saves ``<run_dir>/codec.pt``. A stage that needs the frozen codec (``obtain_codec``) reads
``codec.checkpoint``, or fits it first in ``<run_dir>/codec`` (resumable: its own checkpoints and fingerprint,
``codec_fingerprint``); a preempted nested fit ends the whole run (``StagePreempted``), which resumes it later.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from trackstream.data.batching import derive_seed
from trackstream.data.clips import ClipPool, DataConfig, build_raw_stream
from trackstream.data.pool_stream import PoolStream
from trackstream.train.plan import StagePlan, train_plan
from trackstream.train.stage import Stage
from trackstream.trainer.codec import (
    TRAINABLE,
    CodecConfig,
    CodecObjective,
    ReconstructionModel,
    build_codec_module,
    load_codec_file,
    save_codec_file,
)
from trackstream.trainer.dist import Runtime
from trackstream.trainer.loop import TrainerConfig, TrainResult
from trackstream.trainer.metrics import LoggerConfig, MetricLogger
from trackstream.trainer.optim import OptimConfig
from trackstream.trainer.parallel import ParallelConfig, prepare_frozen, prepare_network, unwrap

if TYPE_CHECKING:
    from trackstream.train.train_config import TrainConfig

__all__ = [
    "STAGE",
    "CodecStageConfig",
    "StagePreempted",
    "build_codec_stage",
    "codec_fingerprint",
    "obtain_codec",
]

log = logging.getLogger(__name__)


@dataclass
class CodecStageConfig:
    """``stage=codec``: fit the trainable tiny codec alone (its settings are the root's ``codec.fit``)."""

    name: str = "codec"


class StagePreempted(Exception):
    """The nested codec fit was preempted: the whole run exits and resumes later."""


def codec_fingerprint(codec: CodecConfig, data: DataConfig) -> dict:
    """The nested codec fit's fingerprint (``<run_dir>/codec/checkpoints``): its own config and the data."""
    return {
        "codec": json.dumps(asdict(codec), sort_keys=True),
        "data": json.dumps(asdict(data), sort_keys=True),
    }


def _codec_plan(
    codec: CodecConfig,
    data: DataConfig,
    parallel: ParallelConfig,
    runtime: Runtime,
    pool: ClipPool | None,
    *,
    steps: int,
    seed: int,
) -> StagePlan:
    """The codec's reconstruction fit over ``steps`` steps: the pool's clips (``data.pool_size``), else rendered
    clips streamed as they come; ``seed``: the run's (``trainer.seed``), which keys the objective's draws."""
    fit = codec.fit
    if codec.name not in TRAINABLE:
        raise ValueError(f"codec.name={codec.name!r} cannot be fitted here; trainable: {TRAINABLE}")
    model = ReconstructionModel(build_codec_module(codec), latent_l2=fit.latent_l2)
    optim = OptimConfig(
        lr=fit.lr, warmup_steps=fit.warmup_steps, schedule="cosine", min_lr_ratio=0.1, clip_grad_norm=1.0
    )
    net = prepare_network(runtime, parallel, name="codec", module=model, optim=optim, ema=None, total_steps=steps)
    objective = CodecObjective(
        net.module,
        fit=fit,
        device=runtime.device,
        seed=derive_seed(seed, "codec", runtime.data_rank) % 2**62,
    )
    if pool is not None:
        stream = PoolStream(
            len(pool),
            batch_size=fit.batch_size,
            seed=derive_seed(data.seed, "codec"),
            make_batch=lambda idx, gids: {"video": pool.videos(idx)},
            rank=runtime.data_rank,  # under sequence parallelism a group fits on one stream, as it trains
            world_size=runtime.data_world_size,
        )
    else:
        stream = build_raw_stream(data, rank=runtime.data_rank, world_size=runtime.data_world_size)
    return StagePlan(objective=objective, networks={"codec": net}, data=stream)


def _nested_trainer(trainer: TrainerConfig, steps: int) -> TrainerConfig:
    """The nested fit's loop: the run's precision, seed, intervals and threads, its own length, no accumulation."""
    return TrainerConfig(
        max_steps=steps,
        grad_accum=1,
        precision=trainer.precision,
        seed=trainer.seed,
        log_every=trainer.log_every,
        ckpt_every=trainer.ckpt_every,
        keep_last=1,
        resume="auto",
        num_threads=trainer.num_threads,
        requeue_on_preempt=trainer.requeue_on_preempt,
    )


def _fit_latent_stats(codec: nn.Module, pool: ClipPool, clips: int, device: torch.device) -> None:
    """The codec's latent statistics over the pool's first ``clips`` clips (``codec.fit.stats_clips``)."""
    videos = pool.videos(list(range(min(len(pool), clips))))
    codec.fit_latent_stats(videos[i : i + 8].to(device) for i in range(0, len(videos), 8))


def _fit_codec(
    runtime: Runtime,
    directory: Path,
    pool: ClipPool | None,
    *,
    codec: CodecConfig,
    data: DataConfig,
    trainer: TrainerConfig,
    parallel: ParallelConfig,
    logger: LoggerConfig,
) -> Path:
    """Train the tiny codec (resumable, in ``directory``), fit its latent statistics, save ``codec.pt``."""
    final = directory / "codec.pt"
    plan = _codec_plan(codec, data, parallel, runtime, pool, steps=codec.fit.steps, seed=trainer.seed)
    plan.trainer = _nested_trainer(trainer, codec.fit.steps)
    quiet = LoggerConfig(progress_bar=logger.progress_bar, level=logger.level)
    summary = train_plan(
        plan, plan.trainer, quiet, runtime, directory, codec_fingerprint(codec, data), stage="codec_fit"
    )
    if summary["status"] != "done":
        return final  # preempted: the caller exits; the next run resumes the fit
    # the fitted weights gathered whole (collective under FSDP, where the trained module's parameters are
    # shards that only its FSDP forward can use), in a plain codec that rank 0 fits its statistics with
    from trackstream.trainer.weights import full_state_dict

    sd = full_state_dict(plan.networks["codec"], use_ema=False)
    if runtime.is_main:
        with torch.random.fork_rng(devices=[]):  # its random init is overwritten: the run's random stream is untouched
            fitted = build_codec_module(codec).to(runtime.device)
        fitted.load_state_dict({k.removeprefix("codec."): v for k, v in sd.items() if k.startswith("codec.")})
        fitted.eval()
        if pool is not None:
            _fit_latent_stats(fitted, pool, codec.fit.stats_clips, runtime.device)
        save_codec_file(fitted, final)
        log.info("codec fitted: %s (final loss %s)", final, summary["last_metrics"].get("train/loss"))
    runtime.barrier()
    return final


def obtain_codec(
    runtime: Runtime,
    run_dir: Path,
    pool: ClipPool | None,
    *,
    codec: CodecConfig,
    data: DataConfig,
    trainer: TrainerConfig,
    parallel: ParallelConfig,
    logger: LoggerConfig,
) -> nn.Module:
    """The frozen codec: from ``codec.checkpoint`` (a fine-tune's is its start's: ``train.teacher_record``), or
    fitted in ``<run_dir>/codec`` first (on ``data``'s clips, the run's ``trainer`` settings and layout)."""
    if codec.checkpoint or codec.name not in TRAINABLE:
        return prepare_frozen(runtime, build_codec_module(codec))
    final = run_dir / "codec" / "codec.pt"
    if not final.is_file():
        _fit_codec(
            runtime, run_dir / "codec", pool, codec=codec, data=data, trainer=trainer, parallel=parallel, logger=logger
        )
    if not final.is_file():
        raise StagePreempted()
    return prepare_frozen(runtime, load_codec_file(codec, final))


def build_codec_stage(cfg: "TrainConfig", runtime: Runtime, run_dir: Path) -> StagePlan:
    pool = ClipPool.training(cfg.data) if cfg.data.pool_size else None
    # a stand-alone codec stage uses cfg.trainer for its length and intervals
    plan = _codec_plan(
        cfg.codec, cfg.data, cfg.parallel, runtime, pool, steps=cfg.trainer.max_steps, seed=cfg.trainer.seed
    )

    def finish(result: TrainResult, logger: MetricLogger) -> dict:
        codec = unwrap(plan.networks["codec"].module).codec
        if runtime.is_main and pool is not None:
            _fit_latent_stats(codec, pool, cfg.codec.fit.stats_clips, runtime.device)
            save_codec_file(codec, run_dir / "codec.pt")
        runtime.barrier()
        return {"codec": str(run_dir / "codec.pt")}

    plan.finish = finish
    return plan


# not planned: trackstream plan sizes DiT stages and the tiny decoder
STAGE = Stage(CodecStageConfig.name, CodecStageConfig, build_codec_stage, planned=False)
