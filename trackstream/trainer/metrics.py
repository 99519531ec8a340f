"""Rank-0 logging: python logger, progress bar, ``metrics.jsonl`` (always) and W&B (optional).

Every scalar logged goes to ``<run_dir>/metrics.jsonl`` as one JSON object per logged step
(``{"step": ..., "train/loss": ..., ...}``), whatever else is enabled, so runs can be compared
without W&B. Periodic held-out evaluations go to ``<run_dir>/eval.jsonl`` and, as ``eval/*``
scalars, to W&B (``log_eval``). The API key is only ever read by wandb itself from the environment
(``WANDB_API_KEY``), never from the config. Videos are written as mp4 files with PyAV first and
handed to ``wandb.Video`` by path (no moviepy, which ``wandb.Video`` of raw frames needs).
A run resumed from step s (``start_at``) first drops the rows after s from both files: a crashed or killed
attempt logged steps past its last checkpoint, which the resumed run logs again. W&B keeps its history
(the same run id, ``resume="allow"``, and a step that goes back is refused), so the resumed run sends it
only the steps past those the dropped rows reached: one value per step there too (the killed attempt's,
equal to the resumed run's for an exact resume, ``perf/*`` timings aside).
W&B run identity (docs/wandb.md), each an explicit ``logger.wandb.*`` value first, then:
  * mode      ``WANDB_MODE``, else offline (``trainer.wandb_run.resolve_mode``);
  * group     ``WANDB_RUN_GROUP`` (slurm/chain.sh and the make-run pipeline set one per recipe run);
  * job_type  ``WANDB_JOB_TYPE``, else the stage name;
  * tags      the configured ones plus the experiment (``task_name``) and the stage name.
Parameter counts (per network, total and trainable) go to the W&B config and ``<run_dir>/params.json``;
``logger.wandb.log_checkpoints`` logs the stage's export folder as a model artifact at the end.
The progress bar (``logger.progress_bar``) is a tqdm bar on a terminal and a plain line every 30 s when stderr is
a file (``data.progress``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from trackstream.data.progress import progress_bar
from trackstream.trainer.wandb_run import MODES, resolve_mode

__all__ = ["LoggerConfig", "WandbConfig", "MetricLogger", "setup_logging", "run_identity", "parameter_counts"]

log = logging.getLogger(__name__)


@dataclass
class WandbConfig:
    enabled: bool = False
    mode: str | None = None  # offline | online | disabled; null: WANDB_MODE if set, else offline
    project: str = "trackstream"
    entity: str | None = None
    name: str | None = None  # null: the run directory's name
    group: str | None = None  # null: WANDB_RUN_GROUP (one recipe run), else none
    job_type: str | None = None  # null: WANDB_JOB_TYPE, else the stage name
    tags: list[str] = field(default_factory=list)  # the experiment and the stage name are added
    log_checkpoints: bool = False  # the stage's export folder as a model artifact at the end (a copy of it)

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"logger.wandb.mode={self.mode!r}; choose offline, online, disabled or null (WANDB_MODE)")


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


def run_identity(
    cfg: WandbConfig, *, stage: str | None, experiment: str | None, environ: Mapping[str, str] | None = None
) -> dict:
    """W&B ``mode``, ``group``, ``job_type`` and ``tags`` of a run: the config's, then the environment's; a run
    no chain groups is grouped by its experiment (runs of one recipe side by side), else its stage."""
    env = os.environ if environ is None else environ
    extra = [t for t in (experiment, stage) if t]
    return {
        "mode": resolve_mode(cfg.mode, env),
        "group": cfg.group or env.get("WANDB_RUN_GROUP") or experiment or stage,
        "job_type": cfg.job_type or env.get("WANDB_JOB_TYPE") or stage,
        "tags": list(dict.fromkeys([*cfg.tags, *extra])),  # in order, once each
    }


def parameter_counts(networks: Mapping, frozen: Mapping | None = None) -> dict:
    """``{name: {"total", "trainable"}}`` per network plus ``"all"`` (a tensor two networks share counts once
    there); ``frozen`` networks count in full with nothing trainable. Sharded tensors count whole (FSDP2's
    DTensor numel is the global one; DeepSpeed ZeRO-3 keeps it in ``ds_numel``)."""
    out: dict = {}
    seen: set = set()
    total_all = trainable_all = 0
    both = [*((n, m, True) for n, m in networks.items()), *((n, m, False) for n, m in (frozen or {}).items())]
    for name, module, trained in both:
        total = trainable = 0
        for p in module.parameters():  # each shared tensor once within a module
            n = int(getattr(p, "ds_numel", p.numel()))
            learns = n if (trained and p.requires_grad) else 0
            total, trainable = total + n, trainable + learns
            if id(p) not in seen:
                seen.add(id(p))
                total_all, trainable_all = total_all + n, trainable_all + learns
        out[name] = {"total": total, "trainable": trainable}
    out["all"] = {"total": total_all, "trainable": trainable_all}
    return out


class MetricLogger:
    """Writes scalars (and media on W&B) from rank 0; a no-op on other ranks.

    ``stage`` / ``experiment``: the job type and tags of the W&B run (``run_identity``); ``params``: the
    ``parameter_counts`` of the stage's networks (W&B config ``params``, ``<run_dir>/params.json``)."""

    def __init__(
        self,
        run_dir: Path,
        cfg: LoggerConfig,
        *,
        is_main: bool,
        total_steps: int,
        config: dict | None = None,
        stage: str | None = None,
        experiment: str | None = None,
        params: dict | None = None,
    ):
        self.run_dir, self.cfg, self.is_main = Path(run_dir), cfg, is_main
        self._jsonl = None
        self._wandb = None
        self._wandb_has = -1  # the last step W&B holds from an earlier attempt (start_at)
        self._bar = None
        # only when W&B is on: an odd WANDB_MODE must not stop a run that does not use W&B
        self.identity = run_identity(cfg.wandb, stage=stage, experiment=experiment) if cfg.wandb.enabled else {}
        if not is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # line-buffered
        if params:
            (self.run_dir / "params.json").write_text(json.dumps(params, indent=2) + "\n")
            log.info(
                "parameters: %s",
                ", ".join(f"{k} {v['total']:,} ({v['trainable']:,} trainable)" for k, v in params.items()),
            )
        if self.identity and self.identity["mode"] != "disabled":
            import wandb

            # mode= always given: wandb would otherwise read WANDB_MODE itself, with its own default (online)
            self._wandb = wandb.init(
                project=cfg.wandb.project,
                entity=cfg.wandb.entity,
                name=cfg.wandb.name or self.run_dir.name,
                group=self.identity["group"],
                job_type=self.identity["job_type"],
                tags=self.identity["tags"],
                mode=self.identity["mode"],
                dir=str(self.run_dir),
                config={**(config or {}), **({"params": params} if params else {})},
                id=_stable_run_id(self.run_dir),
                resume="allow",
            )
            if params:
                self._wandb.summary.update({f"params/{k}/{kind}": v[kind] for k, v in params.items() for kind in v})
        if cfg.progress_bar:
            self._bar = progress_bar(
                total=total_steps, dynamic_ncols=True, file=sys.stderr, desc="train", mininterval=1.0
            )

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.is_main:
            return
        record = {"step": int(step), **{k: _finite(v) for k, v in sorted(scalars.items())}}
        self._jsonl.write(json.dumps(record) + "\n")
        if self._to_wandb(step):
            self._wandb.log(scalars, step=step)
        if self._bar is not None and "train/loss" in scalars:
            # the headline, and each other network's loss (DMD: the critic's), in significant digits
            shown = {"loss": f"{scalars['train/loss']:.4g}"}
            shown.update({k.rsplit("/", 1)[1]: f"{v:.4g}" for k, v in scalars.items() if k.startswith("train/loss/")})
            self._bar.set_postfix(shown, refresh=False)

    def start_at(self, step: int) -> None:
        """The run (re)starts after ``step`` steps: rows of later steps in ``metrics.jsonl`` and ``eval.jsonl`` (an
        earlier attempt's, past its last checkpoint) are dropped, W&B gets only steps past what it holds, and the
        bar continues from ``step``."""
        if self._jsonl is not None:
            self._jsonl.close()
            reached = max(_keep_rows_through(self.run_dir / name, step) for name in ("metrics.jsonl", "eval.jsonl"))
            self._wandb_has = max(self._wandb_has, reached)
            self._jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # line-buffered
        if self._bar is not None:
            self._bar.n = self._bar.last_print_n = step
            self._bar.refresh()

    def _to_wandb(self, step: int) -> bool:
        return self._wandb is not None and step > self._wandb_has

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def log_video(self, step: int, key: str, path: Path, *, caption: str | None = None) -> None:
        """A video already written to ``path`` (mp4); W&B only, the file stays in the run dir."""
        if self._to_wandb(step):
            import wandb

            # a file keeps the frame rate it was written with (wandb warns that fps= is ignored for files)
            self._wandb.log({key: wandb.Video(str(path), caption=caption, format="mp4")}, step=step)

    def log_eval(self, step: int, figures: dict, *, prefix: str = "eval", periodic: bool = True) -> None:
        """A held-out evaluation: on W&B the numeric figures as ``<prefix>/<name>`` at ``step``; a periodic one
        also as an ``eval.jsonl`` row (``{"step", **figures}``: the curve of one protocol; the final evaluation
        has its own file). Not in ``metrics.jsonl`` (training rows only)."""
        if not self.is_main:
            return
        if periodic:
            with open(self.run_dir / "eval.jsonl", "a") as f:
                f.write(json.dumps({"step": int(step), **figures}) + "\n")
        if self._to_wandb(step):
            numbers = {f"{prefix}/{k}": float(v) for k, v in figures.items() if isinstance(v, (int, float))}
            self._wandb.log(numbers, step=step)

    def log_summary(self, values: dict) -> None:
        if self._wandb is not None:
            self._wandb.summary.update(values)

    def log_artifact(self, folder: Path, *, kind: str = "model", metadata: dict | None = None) -> str | None:
        """``folder`` (a stage's export) as a W&B artifact named after the run and its job type, if
        ``logger.wandb.log_checkpoints``; returns the artifact's name. wandb copies the files into its
        staging area (and uploads them online): the size of the export, once per stage."""
        if self._wandb is None or not self.cfg.wandb.log_checkpoints:
            return None
        import wandb

        name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self._wandb.name}-{self.identity['job_type'] or 'stage'}")
        artifact = wandb.Artifact(name, type=kind, metadata=metadata or {})
        artifact.add_dir(str(folder))
        self._wandb.log_artifact(artifact, aliases=["latest"])
        return name

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


def _keep_rows_through(path: Path, step: int) -> int:
    """Keep the rows of ``path`` (JSON lines with a ``step``) up to ``step``, rewritten atomically; a line cut
    short by a kill goes too (the next row would be glued to it). Returns the last step dropped (-1: none)."""
    if not path.is_file():
        return -1
    text = path.read_text()
    kept, dropped, last = [], not text.endswith("\n") and bool(text), -1
    for line in text.splitlines():
        try:
            row_step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            dropped = True
            continue
        if row_step <= step:
            kept.append(line + "\n")
        else:
            dropped, last = True, max(last, row_step)
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)
    return last


def _stable_run_id(run_dir: Path) -> str:
    # Same W&B run across requeues/resumes of one run directory.
    import hashlib

    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]


class Throughput:
    """Samples/s, step time and the share of it spent getting the batch, over the interval since the last
    ``read``: ``perf/data_time_s`` is the mean seconds a step waited for its micro-batches and prepared them
    (``objective.prepare_batch``); near ``perf/step_time_s``, the step is the data's, not the network's."""

    def __init__(self):
        self.t0, self.samples, self.steps, self.data_s = time.perf_counter(), 0, 0, 0.0

    def add(self, samples: int, data_s: float = 0.0) -> None:
        self.samples += samples
        self.steps += 1
        self.data_s += data_s

    def read(self) -> dict[str, float]:
        now = time.perf_counter()
        dt = max(now - self.t0, 1e-9)
        steps = max(self.steps, 1)
        out = {
            "perf/samples_per_s": self.samples / dt,
            "perf/step_time_s": dt / steps,
            "perf/data_time_s": self.data_s / steps,
        }
        self.t0, self.samples, self.steps, self.data_s = now, 0, 0, 0.0
        return out
