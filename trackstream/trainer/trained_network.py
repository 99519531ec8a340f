"""The trained network: one module with its optimizer, LR schedule and EMA, behind one interface.

``TrainedNetwork`` gives the loop backward, no-sync, step (clip, update, schedule, EMA) and checkpoint
save / load; each parallel strategy has a subclass with its own semantics (``trainer.parallel.prepare_network``
picks it and builds it):

* single / ddp (``DDPNetwork``; ``ManualSyncNetwork`` for a network trained outside its forward): full
  state dicts saved by rank 0 with ``torch.save``.
* fsdp (``FSDPNetwork``): sharded checkpoints through torch.distributed.checkpoint (DCP),
  resharding-capable; a damaged shard or index is an ``UnreadableFile`` on every rank
  (``trackstream/trainer/sharded.py``). DCP reads its index and non-tensor entries (optimizer
  hyperparameters) with pickle itself: as trusted as DeepSpeed's files.
* deepspeed (``DeepSpeedNetwork``): the engine owns accumulation boundaries, loss scaling and clipping;
  its own checkpoint format, which DeepSpeed reads itself (``torch.load`` inside DeepSpeed, outside
  ``weights_only``'s reach here: a DeepSpeed checkpoint is as trusted as the code), our EMA file beside
  it with ``weights_only=True``.
Every other file written here is read back with ``weights_only=True`` (``models.formats.files.read_torch_file``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn as nn

from trackstream.models.formats.files import UnreadableFile, read_torch_file
from trackstream.trainer.dist import Runtime
from trackstream.trainer.ema import EMA
from trackstream.trainer.optim import use_foreach
from trackstream.trainer.sharded import agree_readable, load_sharded

__all__ = ["TrainedNetwork", "DDPNetwork", "ManualSyncNetwork", "FSDPNetwork", "DeepSpeedNetwork"]

_RESAVE = "resume from it once (the next checkpoint is written in the safe format) or start a new run directory"


class TrainedNetwork:
    """A trainable network with its optimizer, LR schedule and EMA (strategy-specific subclasses)."""

    def __init__(
        self,
        name: str,
        module: nn.Module,
        raw: nn.Module,
        optimizer,
        scheduler,
        ema: EMA | None,
        clip: float,
        runtime: Runtime,
    ):
        self.name, self.module, self.raw = name, module, raw
        self.optimizer, self.scheduler, self.ema = optimizer, scheduler, ema
        self.clip, self.runtime = clip, runtime
        self.num_updates = 0

    def no_sync(self):
        """Context for non-final micro-batches: accumulate locally, no gradient all-reduce."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, *, accum: int, last: bool) -> None:
        (loss / accum).backward()

    def _clip(self) -> torch.Tensor:
        params = [p for p in self.module.parameters() if p.grad is not None]
        max_norm = self.clip if self.clip > 0 else float("inf")
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=use_foreach(params, self.runtime.device))

    def step(self) -> torch.Tensor:
        """Clip, update, advance the schedule, update the EMA. Returns the pre-clip grad norm."""
        norm = self._clip()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.num_updates += 1
        if self.ema is not None:
            self.ema.update(self.raw)
        return norm.detach()

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    # checkpoints: ``meta`` is small and picklable (rank 0 writes it), heavy state per strategy
    def meta_state(self) -> dict:
        return {"num_updates": self.num_updates, "scheduler": self.scheduler.state_dict()}

    def load_meta_state(self, state: dict) -> None:
        self.num_updates = int(state["num_updates"])
        self.scheduler.load_state_dict(state["scheduler"])

    def save(self, directory: Path) -> None:
        if self.runtime.is_main:
            state = {"model": self.raw.state_dict(), "optimizer": self.optimizer.state_dict()}
            if self.ema is not None:
                state["ema"] = self.ema.state_dict()
            torch.save(state, directory / f"{self.name}.pt")

    def load(self, directory: Path) -> None:
        state = read_torch_file(directory / f"{self.name}.pt", old_format="a training checkpoint", fix=_RESAVE)
        self.raw.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            if "ema" not in state:
                raise ValueError(f"checkpoint {directory} has no EMA for {self.name!r} but ema.enabled=true")
            self.ema.load_state_dict(state["ema"])


class DDPNetwork(TrainedNetwork):
    def no_sync(self):
        if isinstance(self.module, torch.nn.parallel.DistributedDataParallel):
            return self.module.no_sync()
        return contextlib.nullcontext()


class ManualSyncNetwork(TrainedNetwork):
    """A data-parallel network whose forward does not run through a DDP wrapper (the DMD self-rollout
    drives the DiT's streaming path directly, which DDP's hooks would not see): its gradients are
    averaged over the ranks with one coalesced all-reduce after the last micro-batch."""

    def backward(self, loss: torch.Tensor, *, accum: int, last: bool) -> None:
        (loss / accum).backward()
        if last and self.runtime.distributed:
            params = [p for p in self.raw.parameters() if p.requires_grad]
            for p in params:  # a parameter unused on one rank still takes part (same layout everywhere)
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            grads = [p.grad for p in params]
            flat = torch._utils._flatten_dense_tensors(grads)
            torch.distributed.all_reduce(flat)
            flat /= self.runtime.world_size
            for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
                g.copy_(synced)


class FSDPNetwork(TrainedNetwork):
    @contextlib.contextmanager
    def no_sync(self):
        self.module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.module.set_requires_gradient_sync(True)

    def _clip(self) -> torch.Tensor:
        norm = super()._clip()
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def _state(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        state = {
            "model": get_model_state_dict(self.module),
            "optimizer": get_optimizer_state_dict(self.module, self.optimizer),
        }
        if self.ema is not None:
            state["ema"] = dict(zip(self.ema.names, self.ema.shadow))
        return state

    def save(self, directory: Path) -> None:
        import torch.distributed.checkpoint as dcp

        dcp.save(self._state(), checkpoint_id=str(directory / self.name))
        if self.runtime.is_main and self.ema is not None:
            torch.save({"ema_num_updates": self.ema.num_updates}, directory / f"{self.name}.ema.pt")

    def load(self, directory: Path) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        ema, reason = None, None
        if self.ema is not None:  # read before the collective load, which no rank may skip (trainer.sharded)
            try:
                ema = read_torch_file(
                    directory / f"{self.name}.ema.pt", old_format="a training checkpoint", fix=_RESAVE
                )
            except UnreadableFile as err:
                reason = str(err)
        agree_readable(self.runtime, reason)
        state = self._state()
        load_sharded(state, directory / self.name, self.runtime)  # in place (the EMA shadow DTensors too)
        set_model_state_dict(self.module, state["model"])
        set_optimizer_state_dict(self.module, self.optimizer, state["optimizer"])
        if ema is not None:
            self.ema.num_updates = int(ema["ema_num_updates"])


class DeepSpeedNetwork(TrainedNetwork):
    """``module`` is the DeepSpeedEngine; it owns accumulation boundaries and clipping."""

    def backward(self, loss: torch.Tensor, *, accum: int, last: bool) -> None:
        self.module.set_gradient_accumulation_boundary(is_boundary=last)
        self.module.backward(loss)  # scales by 1 / gradient_accumulation_steps itself

    def step(self) -> torch.Tensor:
        self.module.step()
        self.scheduler.step()
        self.num_updates += 1
        if self.ema is not None:
            self.ema.update(self.raw)
        norm = self.module.get_global_grad_norm()
        return torch.as_tensor(0.0 if norm is None else float(norm))

    def save(self, directory: Path) -> None:
        self.module.save_checkpoint(str(directory / "deepspeed"), tag=self.name)
        if self.runtime.is_main and self.ema is not None:
            torch.save(self.ema.state_dict(), directory / f"{self.name}.ema.pt")

    def load(self, directory: Path) -> None:
        path, _ = self.module.load_checkpoint(
            str(directory / "deepspeed"), tag=self.name, load_optimizer_states=True, load_lr_scheduler_states=False
        )
        if path is None:
            raise ValueError(f"DeepSpeed found no checkpoint for {self.name!r} under {directory / 'deepspeed'}")
        if self.ema is not None:
            self.ema.load_state_dict(
                read_torch_file(directory / f"{self.name}.ema.pt", old_format="a training checkpoint", fix=_RESAVE)
            )
