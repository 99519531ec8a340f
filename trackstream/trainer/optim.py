"""Optimizers, parameter groups and learning-rate schedules (one optimizer per trainable network).

Schedules count the updates of their own optimizer, not loop steps: under a 5:1 critic:generator
ratio the generator's warmup lasts ``warmup_steps`` generator updates, which is what a recipe
means by it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

__all__ = ["OptimConfig", "param_groups", "use_foreach", "build_optimizer", "build_scheduler", "lr_factor"]

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine", "linear")


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    # No weight decay on biases, norms, modulations and 1-d parameters (the usual DiT recipe).
    decay_matrices_only: bool = True
    fused: bool | None = None  # None: fused kernels on GPU, foreach on CPU
    clip_grad_norm: float = 1.0  # <= 0 disables clipping (the norm is still measured and logged)
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_steps: int | None = None  # horizon of cosine/linear decay (default: trainer.max_steps)
    # the decay begins here (the lr held until then: warmup, stable, decay), so a run continued past a constant
    # phase decays from where it is without a jump
    decay_start: int = 0
    min_lr_ratio: float = 0.0  # final lr / lr for cosine and linear

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optim.name={self.name!r}; choose one of {OPTIMIZERS}")
        if not self.lr > 0:
            raise ValueError(f"optim.lr={self.lr} must be > 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas={list(self.betas)} must be two values in [0, 1)")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay={self.weight_decay} must be >= 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule={self.schedule!r}; choose one of {SCHEDULES}")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps={self.warmup_steps} must be >= 0")
        if self.decay_steps is not None and self.decay_steps < 1:
            raise ValueError(f"optim.decay_steps={self.decay_steps} must be >= 1 (or null for trainer.max_steps)")
        if self.decay_start < 0 or (self.decay_steps is not None and self.decay_start >= self.decay_steps):
            raise ValueError(
                f"optim.decay_start={self.decay_start} must be >= 0 and before optim.decay_steps={self.decay_steps}"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")


def param_groups(module: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Trainable parameters split into decayed (matrices, convs) and non-decayed groups.

    Groups are never empty (an empty group would still be a distinct entry in the optimizer
    state and break resharding of optimizer checkpoints).
    """
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        matrix = p.ndim >= 2 and "modulation" not in name
        (decay if (matrix or not cfg.decay_matrices_only) else no_decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": cfg.weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if not groups:
        raise ValueError(f"{type(module).__name__} has no trainable parameters (all requires_grad=False)")
    return groups


def use_foreach(params, device: torch.device) -> bool:
    """Whether the multi-tensor (foreach) kernels pay off: not for sharded (DTensor) parameters on CPU, where each
    foreach op's first call propagates the sharding of every tensor in its list (a first step several times the
    per-tensor one's) and a CPU run under FSDP is a rehearsal of a few steps. The per-tensor and foreach updates
    are the same arithmetic."""
    from torch.distributed.tensor import DTensor

    return device.type != "cpu" or not any(isinstance(p, DTensor) for p in params)


def build_optimizer(groups: list[dict], cfg: OptimConfig, *, device: torch.device) -> torch.optim.Optimizer:
    fused = cfg.fused if cfg.fused is not None else device.type == "cuda"
    foreach = use_foreach((p for g in groups for p in g["params"]), device)
    kw: dict = {"lr": cfg.lr}
    if cfg.name in ("adamw", "adam"):
        kw.update(betas=tuple(cfg.betas), eps=cfg.eps)
        kw.update({"fused": True} if fused else {"foreach": foreach})
        cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        return cls(groups, **kw)
    return torch.optim.SGD(groups, momentum=cfg.momentum, foreach=foreach, **kw)


def lr_factor(update: int, cfg: OptimConfig, *, total: int) -> float:
    """Multiplier of the base lr at optimizer update ``update`` (0-based): linear warmup from
    1/(warmup+1), then constant, or held until ``decay_start`` and then a cosine or linear decay to
    ``min_lr_ratio`` at ``decay_steps`` (default ``total``)."""
    if update < cfg.warmup_steps:
        return (update + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule == "constant":
        return 1.0
    start = max(cfg.warmup_steps, cfg.decay_start)
    horizon = max(1, (cfg.decay_steps or total) - start)
    progress = min(1.0, max(0, update - start) / horizon)
    if cfg.schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        shape = 1.0 - progress
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, *, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda u: lr_factor(u, cfg, total=total))
