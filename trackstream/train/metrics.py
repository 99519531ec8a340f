"""Rank-0 logging: python logger, tqdm bar, ``metrics.jsonl`` (always) and W&B (optional).

Every scalar logged goes to ``<run_dir>/metrics.jsonl`` as one JSON object per logged step
(``{"step": ..., "train/loss": ..., ...}``), whatever else is enabled, so runs can be compared
without W&B. W&B runs offline by default; the API key is only ever read by wandb itself from
the environment (``WANDB_API_KEY``), never from the config. Videos are written as mp4 files with
PyAV first and handed to ``wandb.Video`` by path (no moviepy, which ``wandb.Video`` of raw frames needs).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LoggerConfig", "WandbConfig", "MetricLogger", "setup_logging"]


@dataclass
class WandbConfig:
    enabled: bool = False
    mode: str = "offline"  # offline | online | disabled
    project: str = "trackstream"
    entity: str | None = None
    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.wandb.mode={self.mode!r}; choose offline, online or disabled")


@dataclass
class LoggerConfig:
    progress_bar: bool = True
    level: str = "INFO"
    wandb: WandbConfig = field(default_factory=WandbConfig)


def setup_logging(*, is_main: bool, level: str = "INFO", log_file: Path | None = None) -> logging.Logger:
    """Rank 0 logs at ``level`` (to stderr and ``log_file``); other ranks only warnings and errors."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_trackstream", False):
            root.removeHandler(h)
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None and is_main:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(fmt)
        h._trackstream = True
        root.addHandler(h)
    root.setLevel(getattr(logging, level.upper()) if is_main else logging.WARNING)
    return logging.getLogger("trackstream")


class MetricLogger:
    """Writes scalars (and media on W&B) from rank 0; a no-op on other ranks."""

    def __init__(
        self, run_dir: Path, cfg: LoggerConfig, *, is_main: bool, total_steps: int, config: dict | None = None
    ):
        self.run_dir, self.cfg, self.is_main = Path(run_dir), cfg, is_main
        self._jsonl = None
        self._wandb = None
        self._bar = None
        if not is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # line-buffered
        if cfg.wandb.enabled and cfg.wandb.mode != "disabled":
            import wandb

            self._wandb = wandb.init(
                project=cfg.wandb.project,
                entity=cfg.wandb.entity,
                name=cfg.wandb.name or self.run_dir.name,
                group=cfg.wandb.group,
                tags=list(cfg.wandb.tags),
                mode=cfg.wandb.mode,
                dir=str(self.run_dir),
                config=config,
                id=_stable_run_id(self.run_dir),
                resume="allow",
            )
        if cfg.progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, dynamic_ncols=True, file=sys.stderr, desc="train", mininterval=1.0)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.is_main:
            return
        record = {"step": int(step), **{k: _finite(v) for k, v in sorted(scalars.items())}}
        self._jsonl.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        if self._bar is not None and "train/loss" in scalars:
            self._bar.set_postfix(loss=f"{scalars['train/loss']:.4f}", refresh=False)

    def start_at(self, step: int) -> None:
        """After a resume: the bar continues from ``step``."""
        if self._bar is not None:
            self._bar.n = self._bar.last_print_n = step
            self._bar.refresh()

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def log_video(self, step: int, key: str, path: Path, *, caption: str | None = None, fps: int = 8) -> None:
        """A video already written to ``path`` (mp4); W&B only, the file stays in the run dir."""
        if self._wandb is not None:
            import wandb

            self._wandb.log({key: wandb.Video(str(path), caption=caption, fps=fps, format="mp4")}, step=step)

    def log_summary(self, values: dict) -> None:
        if self._wandb is not None:
            self._wandb.summary.update(values)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._wandb is not None:
            self._wandb.finish()
        self._bar = self._jsonl = self._wandb = None


def _finite(v: float) -> float | str:
    # JSON has no NaN/inf; keep them visible as strings rather than crashing the logger.
    v = float(v)
    return v if math.isfinite(v) else str(v)


def _stable_run_id(run_dir: Path) -> str:
    # Same W&B run across requeues/resumes of one run directory.
    import hashlib

    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]


class Throughput:
    """Samples/s and step time over the interval since the last ``read``."""

    def __init__(self):
        self.t0, self.samples, self.steps = time.perf_counter(), 0, 0

    def add(self, samples: int) -> None:
        self.samples += samples
        self.steps += 1

    def read(self) -> dict[str, float]:
        now = time.perf_counter()
        dt = max(now - self.t0, 1e-9)
        out = {"perf/samples_per_s": self.samples / dt, "perf/step_time_s": dt / max(self.steps, 1)}
        self.t0, self.samples, self.steps = now, 0, 0
        return out
