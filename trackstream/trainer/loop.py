"""The one training loop, shared by every stage (codec fit, teacher, ODE init, DMD, RL).

Read top to bottom: resume -> for each step: fetch ``grad_accum`` micro-batches, ask the
objective which networks to update, accumulate their gradients, step their optimizers (clip,
LR schedule, EMA inside ``TrainedNetwork.step``) -> log -> periodic hooks -> checkpoint ->
stop on max_steps or on a preemption signal. What differs between stages lives in the
objective (trackstream/trainer/objective.py); what differs between DDP/FSDP/DeepSpeed lives in
``TrainedNetwork`` (trackstream/trainer/trained_network.py). Nothing here branches on either.

``step`` counts completed loop steps: metrics, checkpoints and hooks at step s describe the
state after s steps. A resumed run continues from the checkpoint's s with bit-identical
batches, noise and optimizer state (tests/test_train_resume.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from trackstream.models.precision import precision_name
from trackstream.trainer.checkpoint import CheckpointManager, PreemptionHandler, TrainingStopped, find_latest
from trackstream.trainer.dist import Runtime
from trackstream.trainer.metrics import MetricLogger, Throughput
from trackstream.trainer.objective import Objective
from trackstream.trainer.trained_network import TrainedNetwork

__all__ = ["TrainerConfig", "Hook", "TrainResult", "NonFiniteLoss", "train"]

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    grad_accum: int = 1  # micro-batches per optimizer update
    # samples per optimizer update over all processes; when set, grad_accum is derived from it
    # (global_batch / (data.batch_size x processes)), so a recipe keeps its batch on any GPU count
    global_batch: int | None = None
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on the CPU) | bf16 | fp32 (models.precision)
    device: str = "auto"  # auto (CUDA when present; a launcher places each process's GPU) | cpu | cuda
    seed: int = 0  # every value is a real seed (0 included)
    log_every: int = 10
    ckpt_every: int = 500  # 0: only at the end (and on preemption)
    keep_last: int = 3
    sample_every: int = 0  # periodic sample hooks (0: only the end-of-training evaluation)
    resume: str = "auto"  # auto: latest checkpoint of the run dir | never | a checkpoint directory
    num_threads: int | None = None  # CPU intra-op threads (None: torch's default)
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on GPU)
    requeue_on_preempt: bool = True  # scontrol requeue after a preemption save under Slurm

    def __post_init__(self) -> None:
        for name in ("max_steps", "grad_accum", "log_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name}={getattr(self, name)} must be >= 1")
        for name in ("ckpt_every", "sample_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"trainer.{name}={getattr(self, name)} must be >= 0 (0 disables)")
        self.precision = precision_name(self.precision, field="trainer.precision", training=True)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(
                f"trainer.device={self.device!r}: choose auto, cpu or cuda (the launcher places each process's GPU)"
            )
        if self.global_batch is not None and self.global_batch < 1:
            raise ValueError(f"trainer.global_batch={self.global_batch} must be >= 1 or null")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"trainer.num_threads={self.num_threads} must be >= 1 or null")


@dataclass
class Hook:
    """A periodic side task (sampling videos, evaluation); ``fn(step, logger)`` runs on every rank."""

    every: int
    fn: Callable[[int, MetricLogger], None]


@dataclass
class TrainResult:
    step: int
    status: str  # "done" | "preempted"
    resumed_from: Path | None
    last_metrics: dict


class NonFiniteLoss(TrainingStopped):
    pass


def _every(step: int, n: int) -> bool:
    return n > 0 and step % n == 0


def _resume(
    cfg: TrainerConfig,
    checkpoints: CheckpointManager,
    networks: dict[str, TrainedNetwork],
    objective: Objective,
    data: Iterable,
) -> tuple[int, Path | None, dict]:
    """Load the checkpoint ``cfg.resume`` names; returns (step, resumed_from, loop_state)."""
    step, resumed_from, loop_state = 0, None, {}
    found = None
    if cfg.resume == "auto":  # the newest checkpoint that can be read; damaged newer ones are skipped, with a warning
        found = checkpoints.resume_latest(networks=networks, objective=objective)
    elif cfg.resume != "never":  # a checkpoint the user named: no fallback, its error is the answer
        ckpt_path = Path(cfg.resume)
        if not (ckpt_path / "meta.pt").is_file():
            raise ValueError(f"trainer.resume={cfg.resume!r} is not a complete checkpoint directory (no meta.pt)")
        found = (ckpt_path, *checkpoints.load(ckpt_path, networks=networks, objective=objective))
    if found is not None:
        resumed_from, step, loop_state, data_state = found
        data.load_state_dict(data_state)
        log.info("resumed from %s at step %d", resumed_from, step)
    return step, resumed_from, loop_state


def _accumulate(sums: dict[str, torch.Tensor], counts: dict[str, int], key: str, value: torch.Tensor) -> None:
    sums[key] = sums.get(key, 0.0) + value
    counts[key] = counts.get(key, 0) + 1


def _update(
    name: str,
    net: TrainedNetwork,
    micro: list,
    *,
    objective: Objective,
    runtime: Runtime,
    cfg: TrainerConfig,
    step: int,
    sums: dict[str, torch.Tensor],
    counts: dict[str, int],
) -> torch.Tensor:
    """Accumulate ``net``'s gradients over the micro-batches and step it; returns "losses and grad norm finite"."""
    finite = torch.ones((), dtype=torch.bool, device=runtime.device)
    for i, batch in enumerate(micro):
        last = i == len(micro) - 1
        with contextlib.nullcontext() if last else net.no_sync():
            with runtime.autocast():
                loss, extra = objective.loss(name, batch, step=step)
            net.backward(loss, accum=cfg.grad_accum, last=last)
        for key, value in {f"loss/{name}": loss, **extra}.items():
            _accumulate(sums, counts, key, value.detach().float())
        finite = finite & torch.isfinite(loss.detach()).all()
    grad_norm = net.step()
    _accumulate(sums, counts, f"grad_norm/{name}", grad_norm.float())
    return finite & torch.isfinite(grad_norm).all()


def _stop_if_non_finite(checks: list, step: int, runtime: Runtime, checkpoints: CheckpointManager) -> None:
    bad = (~torch.stack([ok for _, ok in checks])).nonzero().flatten().tolist() if checks else []
    if runtime.any_flag(bool(bad)):  # every rank stops, before this step is logged or saved
        names = ", ".join(f"train/loss/{checks[i][0]} or its gradient norm" for i in bad) or "another rank's loss"
        latest = find_latest(checkpoints.directory)
        kept = f"the last checkpoint is {latest}" if latest else "no checkpoint was saved yet"
        raise NonFiniteLoss(
            f"{names} became non-finite at step {step}: training stopped without saving that step, and "
            f"{kept}; resume from it with a lower optim.lr, or look for non-finite values in the data"
        )


def _interval_scalars(
    sums: dict[str, torch.Tensor],
    counts: dict[str, int],
    runtime: Runtime,
    networks: dict[str, TrainedNetwork],
    throughput: Throughput,
    headline: str,
    last_primary: float | None,
    samples_seen: int,
) -> tuple[dict, float | None]:
    """The scalars of one log interval (one all-reduce); returns them and the updated last primary loss."""
    means = runtime.reduce_mean({k: v / counts[k] for k, v in sums.items()})
    scalars = {f"train/{k}": v for k, v in means.items()}
    if headline in scalars:
        last_primary = scalars[headline]
    if last_primary is not None:
        scalars["train/loss"] = last_primary
    for name, net in networks.items():
        scalars[f"train/lr/{name}"] = net.lr()
    scalars.update(throughput.read())
    scalars["perf/samples_seen"] = samples_seen
    if runtime.device.type == "cuda":
        scalars["perf/max_memory_gib"] = torch.cuda.max_memory_allocated(runtime.device) / 2**30
    return scalars, last_primary


def _step_updates(
    micro: list,
    step: int,
    objective: Objective,
    networks: dict[str, TrainedNetwork],
    runtime: Runtime,
    cfg: TrainerConfig,
    sums: dict[str, torch.Tensor],
    counts: dict[str, int],
) -> list[tuple[str, torch.Tensor]]:
    """One update per network the objective schedules at ``step``; returns (network, all finite) per update."""
    checks = []
    for name in objective.updates(step):
        ok = _update(
            name,
            networks[name],
            micro,
            objective=objective,
            runtime=runtime,
            cfg=cfg,
            step=step,
            sums=sums,
            counts=counts,
        )
        checks.append((name, ok))
    return checks


@contextlib.contextmanager
def _closing(batches: Iterator):
    """``batches``, closed on the way out when it can be (a loader's generator ends its worker processes)."""
    try:
        yield batches
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _after_preempt_save(step: int, cfg: TrainerConfig, runtime: Runtime, preempt: PreemptionHandler) -> None:
    log.warning("preempted at step %d: checkpoint saved, exiting", step)
    if cfg.requeue_on_preempt and runtime.is_main:
        preempt.requeue()


def train(
    *,
    objective: Objective,
    networks: dict[str, TrainedNetwork],
    data: Iterable,
    cfg: TrainerConfig,
    runtime: Runtime,
    checkpoints: CheckpointManager,
    logger: MetricLogger,
    hooks: Iterable[Hook] = (),
) -> TrainResult:
    """Train until ``cfg.max_steps`` (or a preemption signal); see the module docstring."""
    missing = set(objective.networks) - set(networks)
    assert not missing, f"objective needs networks {sorted(missing)} that were not prepared"

    step, resumed_from, loop_state = _resume(cfg, checkpoints, networks, objective, data)
    logger.start_at(step)
    samples_seen = int(loop_state.get("samples_seen", 0))
    last_primary = loop_state.get("last_primary_loss")

    def save() -> Path:
        state = {"samples_seen": samples_seen, "last_primary_loss": last_primary}
        return checkpoints.save(
            step, networks=networks, objective=objective, loop_state=state, data_state=data.state_dict()
        )

    for net in networks.values():
        net.module.train()
    throughput = Throughput()
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    last_metrics: dict = {}
    status, saved_at = "done", -1
    primary = objective.primary_name()
    headline = f"train/{objective.headline or f'loss/{primary}'}"  # what train/loss (and the bar) shows

    # the stream closed before the handler goes: its loader workers end while a signal still only sets the flag
    with PreemptionHandler() as preempt, _closing(iter(data)) as batches:
        while step < cfg.max_steps:
            # ---- one step: micro-batches, then one update per scheduled network ---------------
            t_data = time.perf_counter()
            micro = [objective.prepare_batch(next(batches)) for _ in range(cfg.grad_accum)]
            data_s = time.perf_counter() - t_data
            # (network, its losses and gradient norm all finite) per update of this step
            checks = _step_updates(micro, step, objective, networks, runtime, cfg, sums, counts)
            step += 1
            _stop_if_non_finite(checks, step, runtime, checkpoints)
            n_samples = sum(objective.batch_size(b) for b in micro) * runtime.data_world_size
            samples_seen += n_samples
            throughput.add(n_samples, data_s)
            logger.advance()

            # ---- logging (one all-reduce per log interval) --------------------------------------
            if _every(step, cfg.log_every) or step == cfg.max_steps:
                last_metrics, last_primary = _interval_scalars(
                    sums, counts, runtime, networks, throughput, headline, last_primary, samples_seen
                )
                logger.log(step, last_metrics)
                sums, counts = {}, {}

            # ---- periodic hooks, checkpoints, preemption ---------------------------------------
            for hook in hooks:
                if _every(step, hook.every) and step < cfg.max_steps:
                    hook.fn(step, logger)
            if _every(step, cfg.ckpt_every) or step == cfg.max_steps:
                save()
                saved_at = step
            if runtime.any_flag(preempt.requested):  # all ranks agree (an all-reduce + host sync per step)
                if saved_at != step:
                    save()
                status = "preempted"
                _after_preempt_save(step, cfg, runtime, preempt)
                break
    return TrainResult(step=step, status=status, resumed_from=resumed_from, last_metrics=last_metrics)


def set_threads(num_threads: int | None) -> None:
    if num_threads is not None:
        torch.set_num_threads(num_threads)


def configure_determinism(deterministic: bool) -> None:
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
