"""The protocol between the one training loop and every stage's objective.

An objective RECEIVES its networks (already wrapped for DDP/FSDP/DeepSpeed and materialised)
and frozen modules at construction; the loop owns optimizers, gradient accumulation,
clipping, LR schedules, EMA, checkpoints and logging. Per loop step the loop asks
``updates(step)`` which trainable networks to update (in order), and for each of them runs
``loss(name, micro_batch, step=...)`` on every micro-batch of the step, backpropagates and
steps that network's optimizer. So:

* teacher flow matching: one network, ``updates`` is always ``["dit"]``;
* Self-Forcing DMD: ``updates(step)`` returns ``["critic"]`` on 4 of 5 steps and
  ``["critic", "generator"]`` on the fifth (the 5:1 ratio), each with its own optimizer, LR and
  schedule; the phase is a pure function of ``step``, so resume reproduces it exactly;
* RL fine-tuning: rewards computed inside ``loss``; any extra state goes to ``state_dict``.

Everything an objective draws at random must come from generators it owns and saves in
``state_dict`` (never from the global RNG), which is what makes resume bit-exact.
"""

from __future__ import annotations

import abc
from typing import Any, Mapping, Sequence

import torch

__all__ = ["Objective", "LossOutput", "generator_state", "load_generator_state"]

# (scalar loss to backpropagate, detached scalars to log under "train/<key>")
LossOutput = tuple[torch.Tensor, dict[str, torch.Tensor]]


class Objective(abc.ABC):
    """Base class. Subclasses set ``networks`` (names, in update order) and implement ``loss``."""

    #: names of the trainable networks this objective updates (one optimizer each)
    networks: Sequence[str] = ()
    #: the network whose loss is logged as ``train/loss`` (default: the first); on steps where it
    #: is not updated, ``train/loss`` repeats its last value
    primary: str | None = None
    #: a metric of ``loss``'s extras logged as ``train/loss`` instead of the primary network's loss, when that
    #: loss is a surrogate whose value means nothing (DMD's generator loss is ~1e-10 whatever the gap)
    headline: str | None = None

    def updates(self, step: int) -> Sequence[str]:
        """Networks to update at loop step ``step`` (0-based), in order. Default: all, every step."""
        return list(self.networks)

    @abc.abstractmethod
    def loss(self, name: str, batch: Any, *, step: int) -> LossOutput:
        """Loss of network ``name`` on one micro-batch (as returned by ``prepare_batch``)."""

    def prepare_batch(self, batch: Any) -> Any:
        """Move / encode a micro-batch once per step (frozen encoders live here). Default: identity."""
        return batch

    def batch_size(self, batch: Any) -> int:
        """Samples in a micro-batch (for throughput): the leading size of the first tensor found."""
        if isinstance(batch, Mapping):
            for key in ("latents", "video"):
                if key in batch and torch.is_tensor(batch[key]):
                    return int(batch[key].shape[0])
            for value in batch.values():
                if torch.is_tensor(value):
                    return int(value.shape[0])
        return 1

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state to load but the checkpoint holds {sorted(state)}")

    def primary_name(self) -> str:
        return self.primary or self.networks[0]


def generator_state(gen: torch.Generator) -> torch.Tensor:
    return gen.get_state().clone()


def load_generator_state(gen: torch.Generator, state: torch.Tensor) -> None:
    gen.set_state(state.to(device="cpu", dtype=torch.uint8))
