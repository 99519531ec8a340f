"""The ``codec`` stage: fit the trainable tiny codec alone (``codec.*`` settings; ``trainer.max_steps``
sets its length), then its latent statistics, and save ``<run_dir>/codec.pt``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trackstream.data.clips import ClipPool
from trackstream.stages.common import StagePlan, codec_plan
from trackstream.stages.stage import Stage
from trackstream.train.codec import save_codec_file
from trackstream.train.dist import Runtime
from trackstream.train.loop import TrainResult
from trackstream.train.metrics import MetricLogger
from trackstream.train.parallel import unwrap

if TYPE_CHECKING:
    from trackstream.stages.train_config import TrainConfig

__all__ = ["STAGE", "CodecStageConfig", "build_codec_stage"]


@dataclass
class CodecStageConfig:
    """``stage=codec``: fit the trainable tiny codec alone (its settings are the root's ``codec.fit``)."""

    name: str = "codec"


def build_codec_stage(cfg: "TrainConfig", runtime: Runtime, run_dir: Path) -> StagePlan:
    pool = ClipPool.training(cfg.data) if cfg.data.pool_size else None
    plan = codec_plan(cfg, runtime, pool, steps=cfg.trainer.max_steps)
    plan.trainer = None  # a stand-alone codec stage uses cfg.trainer for its length and intervals

    def finish(result: TrainResult, logger: MetricLogger) -> dict:
        codec = unwrap(plan.networks["codec"].module).codec
        if runtime.is_main and pool is not None:
            videos = pool.videos(list(range(min(len(pool), cfg.codec.fit.stats_clips))))
            codec.fit_latent_stats(videos[i : i + 8].to(runtime.device) for i in range(0, len(videos), 8))
            save_codec_file(codec, run_dir / "codec.pt")
        runtime.barrier()
        return {"codec": str(run_dir / "codec.pt")}

    plan.finish = finish
    return plan


# not planned: trackstream plan sizes DiT stages and the tiny decoder
STAGE = Stage(CodecStageConfig.name, CodecStageConfig, build_codec_stage, planned=False)
