"""The root training config ``TrainConfig``: each component's schema lives next to the component
(``OptimConfig`` in trackstream/trainer/optim.py, ...) and is composed here; what has no other home is defined here
(``FamilyConfig``, ``ScheduleConfig``, ``PathsConfig``). ``stage`` is typed by ``stage.name``: its record's
schema (``train.registry.STAGES``); train/config.py registers these schemas with Hydra and validates a
composed config against them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from trackstream.data.clips import DataConfig
from trackstream.diffusion.samplers import SamplerConfig
from trackstream.eval.teacher_eval import EvalConfig
from trackstream.models.motion_wan import ModelConfig
from trackstream.models.streaming import CausalConfig, StreamConfig
from trackstream.trainer.codec import CodecConfig
from trackstream.trainer.ema import EMAConfig
from trackstream.trainer.loop import TrainerConfig
from trackstream.trainer.metrics import LoggerConfig
from trackstream.trainer.optim import OptimConfig
from trackstream.trainer.parallel import ParallelConfig

__all__ = ["FamilyConfig", "ScheduleConfig", "PathsConfig", "TrainConfig"]


@dataclass
class FamilyConfig:
    """What a model family (conf/family: Wan 2.1 at 480p, Wan 2.2 TI2V-5B at 704p, FastVideo's WanTrack at 480p)
    fixes that has no other home in the tree: the student's chunking beyond its chunk size, which the causal
    stages' ``causal`` interpolate. ``first_chunk_frames`` the kind of chunk 0 (1: one latent; None: sampled like
    the others), ``first_chunk_sampled`` whether a one-latent chunk 0 is sampled (FastVideo's [1] + [3] x k),
    ``window_chunks`` / ``window_frames`` the window in chunks or in latent frames (``models.streaming.CausalConfig``)."""

    first_chunk_frames: Optional[int] = CausalConfig.first_chunk_frames
    first_chunk_sampled: bool = CausalConfig.first_chunk_sampled
    window_chunks: Optional[int] = CausalConfig.window_chunks
    window_frames: Optional[int] = CausalConfig.window_frames


@dataclass
class ScheduleConfig:
    """The one step grid of every stage (diffusion.schedule): shift k of sigma' = k s / (1 + (k-1) s)."""

    shift: float = 5.0
    student_steps: int = 3  # the few-step student's denoising steps, points of the same grid

    def __post_init__(self) -> None:
        if not self.shift > 0:
            raise ValueError(f"schedule.shift={self.shift} must be > 0 (1 = no shift)")
        if self.student_steps < 1:
            raise ValueError(f"schedule.student_steps={self.student_steps} must be >= 1")

    def streaming(self, causal: CausalConfig) -> StreamConfig:
        """How the few-step student on this grid streams with the chunking ``causal`` (``stage.causal``): what
        its export records and what its periodic samples and an RL start are streamed with."""
        return StreamConfig(causal=causal, steps=self.student_steps, shift=self.shift)


@dataclass
class PathsConfig:
    root_dir: str = "."
    log_dir: str = "runs"
    data_dir: str = "data_cache"
    output_dir: str = "."  # the run directory (set from hydra.runtime.output_dir)


@dataclass
class TrainConfig:
    task_name: str = "train"
    model: ModelConfig = field(default_factory=ModelConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stage: Any = None  # STAGES[stage.name].schema
    family: FamilyConfig = field(default_factory=FamilyConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)

    def fingerprint(self) -> dict:
        """The settings that must not change across a resume (the stream and the math depend on them); the
        checkpoints record it and a resume under other settings is refused."""
        return {
            "model": json.dumps(asdict(self.model), sort_keys=True, default=str),
            "data": json.dumps(asdict(self.data), sort_keys=True, default=str),
            "stage": json.dumps(asdict(self.stage), sort_keys=True, default=str),
            "schedule": json.dumps(asdict(self.schedule), sort_keys=True),
            "seed": self.trainer.seed,
            "grad_accum": self.trainer.grad_accum,
            "sequence_parallel": self.parallel.sequence_parallel,  # the data streams are per data rank
        }
