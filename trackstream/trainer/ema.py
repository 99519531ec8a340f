"""Exponential moving average of a network's trainable parameters (fp32 shadow).

Semantics (DiT / Cosmos): before ``start_step`` the shadow is a plain copy of the weights
(decay 0), so it starts from trained weights rather than the random init and every rank holds
the same values; from ``start_step`` on, shadow <- decay * shadow + (1 - decay) * param after
each optimizer update (every ``every`` updates). Under FSDP2 the shadow tensors are DTensors
with the parameters' sharding and the update runs on local shards (``torch._foreach_lerp_``),
so nothing is ever gathered; checkpoints save them sharded like the model.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn

__all__ = ["EMAConfig", "EMA"]


@dataclass
class EMAConfig:
    enabled: bool = True
    decay: float = 0.999
    start_step: int = 0  # optimizer updates before the average starts (copy until then)
    every: int = 1  # update every n optimizer updates

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"ema.decay={self.decay} must be in [0, 1)")
        if self.start_step < 0:
            raise ValueError(f"ema.start_step={self.start_step} must be >= 0")
        if self.every < 1:
            raise ValueError(f"ema.every={self.every} must be >= 1")


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (shares storage), or the tensor itself."""
    return t._local_tensor if hasattr(t, "_local_tensor") else t


class EMA:
    def __init__(self, module: nn.Module, cfg: EMAConfig):
        self.cfg = cfg
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]
        with torch.no_grad():
            self.shadow = [p.detach().float().clone() for n, p in module.named_parameters() if p.requires_grad]
        self.num_updates = 0  # optimizer updates seen

    def _params(self, module: nn.Module) -> list[torch.Tensor]:
        params = dict(module.named_parameters())
        missing = [n for n in self.names if n not in params]
        assert not missing, f"EMA tracks parameters the module no longer has: {missing[:5]}"
        return [params[n] for n in self.names]

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Call once after every optimizer update of ``module``."""
        self.num_updates += 1
        if self.num_updates % self.cfg.every:
            return
        shadow = [_local(s) for s in self.shadow]
        params = [_local(p).float() for p in self._params(module)]
        if self.num_updates <= self.cfg.start_step:
            torch._foreach_copy_(shadow, params)
        else:
            torch._foreach_lerp_(shadow, params, 1.0 - self.cfg.decay)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for p, s in zip(self._params(module), self.shadow):
            _local(p).copy_(_local(s).to(p.dtype))

    @contextmanager
    def swapped(self, module: nn.Module):
        """Run with the EMA weights in ``module``; the trained weights are restored afterwards."""
        params = self._params(module)
        backup = [_local(p).detach().clone() for p in params]
        self.copy_to(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                for p, b in zip(params, backup):
                    _local(p).copy_(b)

    def state_dict(self) -> dict:
        return {"shadow": dict(zip(self.names, self.shadow)), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        saved = state["shadow"]
        if set(saved) != set(self.names):
            extra, missing = sorted(set(saved) - set(self.names)), sorted(set(self.names) - set(saved))
            raise ValueError(
                f"EMA checkpoint does not match the network: missing {missing[:5]}, unexpected {extra[:5]}"
            )
        with torch.no_grad():
            for name, s in zip(self.names, self.shadow):
                _local(s).copy_(_local(saved[name]))
        self.num_updates = int(state["num_updates"])
