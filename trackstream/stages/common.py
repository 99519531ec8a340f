"""What the stages share: the ``StagePlan`` every builder returns, the resume fingerprint, the plan's
run through ``train.loop.train``, the frozen text encoder, the encoded clip pool, and the frozen codec
(fitted first when it is trainable and no checkpoint is given).

A ``StagePlan`` is an objective + prepared networks + a data stream + hooks + a ``finish`` callback.
Each stage's builder is in the file named after the stage (stages/teacher.py, stages/dmd.py, ...; the records
are collected in ``stages.registry.STAGES``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn

from trackstream.data.batching import derive_seed
from trackstream.data.clips import ClipPool, PoolStream, build_raw_stream
from trackstream.models.conditioner import Conditioner
from trackstream.models.precision import resolve_dtype
from trackstream.train.checkpoint import CheckpointManager
from trackstream.train.codec import (
    TRAINABLE,
    CodecObjective,
    ReconstructionModel,
    build_codec_module,
    load_codec_file,
    save_codec_file,
)
from trackstream.train.dist import Runtime
from trackstream.train.loop import Hook, TrainerConfig, TrainResult, train
from trackstream.train.metrics import LoggerConfig, MetricLogger, parameter_counts
from trackstream.train.objective import Objective
from trackstream.train.optim import OptimConfig
from trackstream.train.parallel import attach_sequence_parallel, prepare_frozen, prepare_network
from trackstream.train.trained_network import TrainedNetwork

if TYPE_CHECKING:
    from trackstream.stages.train_config import TrainConfig

__all__ = [
    "StagePlan",
    "fingerprint",
    "codec_fingerprint",
    "train_plan",
    "codec_plan",
    "obtain_codec",
    "load_text_encoder",
    "EncodedPool",
    "StagePreempted",
    "trained_network",
]

log = logging.getLogger(__name__)


@dataclass
class StagePlan:
    objective: Objective
    networks: dict[str, TrainedNetwork]
    data: Any  # iterable of batches with state_dict() / load_state_dict()
    hooks: list[Hook] = field(default_factory=list)
    finish: Callable[[TrainResult, MetricLogger], dict] = lambda result, logger: {}
    trainer: TrainerConfig | None = None  # overrides cfg.trainer (nested codec fit)
    frozen: dict[str, nn.Module] = field(default_factory=dict)  # frozen networks the stage calls (parameter counts)


def fingerprint(cfg: "TrainConfig") -> dict:
    """Config fields that must not change across a resume (the stream and the math depend on them)."""
    return {
        "model": json.dumps(asdict(cfg.model), sort_keys=True, default=str),
        "data": json.dumps(asdict(cfg.data), sort_keys=True, default=str),
        "stage": json.dumps(asdict(cfg.stage), sort_keys=True, default=str),
        "schedule": json.dumps(asdict(cfg.schedule), sort_keys=True),
        "seed": cfg.trainer.seed,
        "grad_accum": cfg.trainer.grad_accum,
        "sequence_parallel": cfg.parallel.sequence_parallel,  # the data streams are per data rank
    }


def codec_fingerprint(cfg: "TrainConfig") -> dict:
    """The nested codec fit's fingerprint (``<run_dir>/codec/checkpoints``): its own config and the data."""
    return {
        "codec": json.dumps(asdict(cfg.codec), sort_keys=True),
        "data": json.dumps(asdict(cfg.data), sort_keys=True),
    }


def trained_network(
    cfg: "TrainConfig",
    runtime: Runtime,
    name: str,
    module: nn.Module,
    *,
    optim: OptimConfig,
    ema,
    total_steps: int,
    grad_sync: str = "wrapper",
    init_fn: Callable[[nn.Module], None] | None = None,
    lora: bool = True,
) -> TrainedNetwork:
    """One trainable network of a stage on the engine: its DiT on token slices under
    ``parallel.sequence_parallel``, then wrapped, materialised and given its optimizer (and EMA);
    ``lora``: ``model.lora`` applies (adapters injected before sharding)."""
    attach_sequence_parallel(module, runtime, name)
    return prepare_network(
        runtime,
        cfg.parallel,
        name=name,
        module=module,
        optim=optim,
        ema=ema,
        total_steps=total_steps,
        init_fn=init_fn,
        grad_sync=grad_sync,
        lora=cfg.model.lora if lora else None,
    )


def train_plan(
    plan: StagePlan,
    trainer: TrainerConfig,
    logger_cfg: LoggerConfig,
    runtime: Runtime,
    run_dir: Path,
    fp: dict,
    config: dict | None = None,
    *,
    stage: str | None = None,
    experiment: str | None = None,
) -> dict:
    """Train ``plan`` in ``run_dir``; ``stage`` / ``experiment`` name the W&B run (job type, tags)."""
    ckpt = CheckpointManager(run_dir / "checkpoints", runtime, keep_last=trainer.keep_last, fingerprint=fp)
    params = parameter_counts({k: n.raw for k, n in plan.networks.items()}, plan.frozen)
    logger = MetricLogger(
        run_dir,
        logger_cfg,
        is_main=runtime.is_main,
        total_steps=trainer.max_steps,
        config=config,
        stage=stage,
        experiment=experiment,
        params=params,
    )
    try:
        result = train(
            objective=plan.objective,
            networks=plan.networks,
            data=plan.data,
            cfg=trainer,
            runtime=runtime,
            checkpoints=ckpt,
            logger=logger,
            hooks=plan.hooks,
        )
        summary = {
            "step": result.step,
            "status": result.status,
            "resumed_from": str(result.resumed_from) if result.resumed_from else None,
            "last_metrics": result.last_metrics,
        }
        if result.status == "done":
            summary.update(plan.finish(result, logger))
            # the run's own numbers; evaluation figures are in the history under eval/ (the stage logs them)
            logger.log_summary(
                {f"run/{k}": v for k, v in summary.items() if isinstance(v, (int, float)) and not k.startswith("epe_")}
            )
            if summary.get("export"):  # the stage's exported network (logger.wandb.log_checkpoints)
                logger.log_artifact(Path(summary["export"]), metadata={"step": result.step, "stage": stage})
    finally:
        logger.close()
    return summary


# ----------------------------------------------------------------------------- frozen parts


def load_text_encoder(cfg: "TrainConfig", runtime: Runtime) -> nn.Module:
    from trackstream.models.text_encoders import build_text_encoder

    kwargs = {"path": cfg.model.text_encoder_path} if cfg.model.text_encoder_path else {}
    if cfg.model.text_encoder.lower().startswith("umt5"):  # 5.7B parameters: in the auto precision
        kwargs["dtype"] = resolve_dtype("auto", runtime.device)
    enc = build_text_encoder(cfg.model.text_encoder, **kwargs)
    return prepare_frozen(runtime, enc)


class EncodedPool:
    """The pool's clips encoded by the frozen codec / text encoder (CPU-resident entries), each on its first
    use and alone: a short run (a fine-tune, a first-losses check) encodes only the clips it draws, and a clip's
    tensors do not depend on which clips it was first drawn with, so a resumed run reads the values the
    uninterrupted one did. ``pool[i]`` = {latents, text_emb, text_len, tracks, visibility, caption, meta, and
    image / image_features where the network's layout has them}."""

    def __init__(self, pool: ClipPool, conditioner: Conditioner):
        self.pool, self.conditioner = pool, conditioner
        self._entries: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, i: int) -> dict:
        if i not in self._entries:
            self._entries[i] = self._encode(i)
        return self._entries[i]

    @torch.no_grad()
    def _encode(self, i: int) -> dict:
        c, clip = self.conditioner, self.pool.clips[i]
        video = self.pool.videos([i])  # [1, 3, T, H, W]
        text, lens = c.text([clip["caption"]])
        entry = {
            "latents": c.latents(video).cpu()[0],
            "text_emb": text[0, : int(lens[0])].cpu(),
            "text_len": int(lens[0]),
            "tracks": torch.from_numpy(clip["tracks"]),
            "visibility": torch.from_numpy(clip["visibility"]),
            "caption": clip["caption"],
            "meta": clip["meta"],
        }
        image = c.image(video[:, :, 0], num_frames=video.shape[2])
        features = c.image_features(video[:, :, 0])
        if image is not None:
            entry["image"] = image[0].cpu()
        if features is not None:
            entry["image_features"] = features[0].cpu()
        return entry


def _nested_trainer(cfg: "TrainConfig", steps: int) -> TrainerConfig:
    t = cfg.trainer
    return TrainerConfig(
        max_steps=steps,
        grad_accum=1,
        precision=t.precision,
        seed=t.seed,
        log_every=t.log_every,
        ckpt_every=t.ckpt_every,
        keep_last=1,
        resume="auto",
        num_threads=t.num_threads,
        requeue_on_preempt=t.requeue_on_preempt,
    )


def codec_plan(cfg: "TrainConfig", runtime: Runtime, pool: ClipPool | None, *, steps: int) -> StagePlan:
    fit = cfg.codec.fit
    if cfg.codec.name not in TRAINABLE:
        raise ValueError(f"codec.name={cfg.codec.name!r} cannot be fitted here; trainable: {TRAINABLE}")
    model = ReconstructionModel(build_codec_module(cfg.codec), latent_l2=fit.latent_l2)
    optim = OptimConfig(
        lr=fit.lr, warmup_steps=fit.warmup_steps, schedule="cosine", min_lr_ratio=0.1, clip_grad_norm=1.0
    )
    net = prepare_network(runtime, cfg.parallel, name="codec", module=model, optim=optim, ema=None, total_steps=steps)
    objective = CodecObjective(
        net.module,
        fit=fit,
        device=runtime.device,
        seed=derive_seed(cfg.trainer.seed, "codec", runtime.data_rank) % 2**62,
    )
    if pool is not None:
        data = PoolStream(
            len(pool),
            batch_size=fit.batch_size,
            seed=derive_seed(cfg.data.seed, "codec"),
            make_batch=lambda idx, gids: {"video": pool.videos(idx)},
            rank=runtime.data_rank,  # under sequence parallelism a group fits on one stream, as it trains
            world_size=runtime.data_world_size,
        )
    else:
        data = build_raw_stream(cfg.data, rank=runtime.data_rank, world_size=runtime.data_world_size)
    return StagePlan(objective=objective, networks={"codec": net}, data=data, trainer=_nested_trainer(cfg, steps))


def fit_codec(cfg: "TrainConfig", runtime: Runtime, directory: Path, pool: ClipPool | None) -> Path:
    """Train the tiny codec (resumable, in ``directory``), fit its latent statistics, save ``codec.pt``."""
    final = directory / "codec.pt"
    plan = codec_plan(cfg, runtime, pool, steps=cfg.codec.fit.steps)
    fp = codec_fingerprint(cfg)
    quiet = LoggerConfig(progress_bar=cfg.logger.progress_bar, level=cfg.logger.level)
    summary = train_plan(plan, plan.trainer, quiet, runtime, directory, fp, stage="codec_fit")
    if summary["status"] != "done":
        return final  # preempted: the caller exits; the next run resumes the fit
    # the fitted weights gathered whole (collective under FSDP, where the trained module's parameters are
    # shards that only its FSDP forward can use), in a plain codec that rank 0 fits its statistics with
    from trackstream.train.weights import full_state_dict

    sd = full_state_dict(plan.networks["codec"], use_ema=False)
    codec = None
    if runtime.is_main:
        with torch.random.fork_rng(devices=[]):  # its random init is overwritten: the run's random stream is untouched
            codec = build_codec_module(cfg.codec).to(runtime.device)
        codec.load_state_dict({k.removeprefix("codec."): v for k, v in sd.items() if k.startswith("codec.")})
    if runtime.is_main:
        videos = pool.videos(list(range(min(len(pool), cfg.codec.fit.stats_clips)))) if pool is not None else None
        codec.eval()
        if videos is not None:
            codec.fit_latent_stats(videos[i : i + 8].to(runtime.device) for i in range(0, len(videos), 8))
        save_codec_file(codec, final)
        log.info("codec fitted: %s (final loss %s)", final, summary["last_metrics"].get("train/loss"))
    runtime.barrier()
    return final


def obtain_codec(cfg: "TrainConfig", runtime: Runtime, run_dir: Path, pool: ClipPool | None) -> nn.Module:
    """The frozen codec: from ``codec.checkpoint`` (a fine-tune's is its start's: ``stages.teacher_record``), or
    fitted in ``<run_dir>/codec`` first."""
    if cfg.codec.checkpoint or cfg.codec.name not in TRAINABLE:
        return prepare_frozen(runtime, build_codec_module(cfg.codec))
    final = run_dir / "codec" / "codec.pt"
    if not final.is_file():
        fit_codec(cfg, runtime, run_dir / "codec", pool)
    if not final.is_file():
        raise StagePreempted()
    return prepare_frozen(runtime, load_codec_file(cfg.codec, final))


class StagePreempted(Exception):
    """The nested codec fit was preempted: the whole run exits and resumes later."""
