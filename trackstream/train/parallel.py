"""Parallelism applied from outside the model: DDP, FSDP2, DeepSpeed ZeRO, frozen modules.

``prepare_network`` turns a raw trainable module (possibly built on ``meta``) into a
``TrainedNetwork``: wrapped module + optimizer + LR schedule + EMA, with the strategy's own
backward / no-sync / step / checkpoint semantics behind one interface, so ``trackstream/train/loop.py``
never branches on the strategy.

* single / ddp: accelerate's ``prepare_model`` (DDP on MULTI_CPU/MULTI_GPU), full state dicts
  saved by rank 0 with ``torch.save``.
* fsdp: ``torch.distributed.fsdp.fully_shard`` per transformer block, then the root, called
  directly (accelerate's FSDP2 plugin does not shard on CPU: it falls back to DDP or
  leaves the model unwrapped);
  bf16 via ``MixedPrecisionPolicy`` (fp32 reductions); meta-built modules are materialised
  after sharding (``to_empty`` + init), so no rank ever holds the full unsharded model; sharded
  checkpoints through torch.distributed.checkpoint (DCP), resharding-capable; a damaged shard or index
  is an ``UnreadableFile`` on every rank (``trackstream/train/sharded.py``). DCP reads its index and
  non-tensor entries (optimizer hyperparameters) with pickle itself: as trusted as DeepSpeed's files.
* deepspeed: ZeRO 0-3 through accelerate's DeepSpeed plugin (gloo on CPU: trap 6); the engine
  owns accumulation boundaries, loss scaling and clipping; its own checkpoint format, which DeepSpeed
  reads itself (``torch.load`` inside DeepSpeed, outside ``weights_only``'s reach here: a DeepSpeed
  checkpoint is as trusted as the code), our EMA file beside it with ``weights_only=True``.
Every other file written here is read back with ``weights_only=True`` (``train.dist.read_state``).
Frozen modules (codec, text encoder, the teacher in distillation) get ``prepare_frozen``:
eval mode, no gradients, no DDP wrapper, optionally sharded (FSDP) for large teachers.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from trackstream.train.dist import Runtime, UnreadableFile, read_state
from trackstream.train.ema import EMA, EMAConfig
from trackstream.train.optim import OptimConfig, build_optimizer, build_scheduler, param_groups
from trackstream.train.sharded import agree_readable, load_sharded

__all__ = [
    "ParallelConfig",
    "TrainedNetwork",
    "prepare_network",
    "prepare_frozen",
    "deepspeed_config",
    "unwrap",
    "root_parameters",
]

STRATEGIES = ("single", "ddp", "fsdp", "deepspeed")
_RESAVE = "resume from it once (the next checkpoint is written in the safe format) or start a new run directory"


@dataclass
class ParallelConfig:
    strategy: str = "single"
    backend: str = "auto"  # nccl on GPU, gloo on CPU
    timeout_minutes: int = 30
    activation_checkpointing: bool = False
    compile: bool = False  # torch.compile each sharding unit (GPU; needs a C++ toolchain on CPU)
    find_unused_parameters: bool = False  # ddp
    # fsdp
    fsdp_units: list[str] = field(default_factory=lambda: ["WanBlock"])  # classes sharded one by one
    # Submodules whose non-forward methods use their weights (Wan precomputes the cross-attention
    # K/V of every block before running the blocks): sharded as their own units, with those
    # methods registered as FSDP forward methods so their parameters are gathered for them.
    fsdp_methods: dict = field(default_factory=lambda: {"WanCrossAttention": ["context_kv"]})
    # Submodules (paths from the trained module) sharded as units of their own, so that every module the
    # streaming path calls outside the root's forward (the DMD self-rollout: patchify, time and text
    # embeddings, head, track head, text projection) gathers its own parameters; paths the module
    # lacks are skipped. With them the root holds no parameters of its own.
    fsdp_leaf_units: list[str] = field(
        default_factory=lambda: [
            "dit.patch_embedding",
            "dit.text_embedding",
            "dit.time_embedding",
            "dit.time_projection",
            "dit.head",
            "dit.img_emb",
            "track_encoder.head",
            "text_proj",
        ]
    )
    reshard_after_forward: bool = True  # ZeRO-3 style; False keeps params gathered (ZeRO-2 style)
    # deepspeed
    zero_stage: int = 2
    offload_optimizer: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"parallel.strategy={self.strategy!r}; choose one of {STRATEGIES}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"parallel.zero_stage={self.zero_stage} must be 0, 1, 2 or 3")
        if self.backend not in ("auto", "nccl", "gloo"):
            raise ValueError(f"parallel.backend={self.backend!r}; choose auto, nccl or gloo")


def deepspeed_config(
    cfg: ParallelConfig, *, micro_batch: int, grad_accum: int, world_size: int, clip: float, precision: str
) -> dict:
    """The DeepSpeed JSON for our loop (explicit values: no 'auto' needing a dataloader)."""
    zero: dict = {"stage": cfg.zero_stage}
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * world_size,
        "gradient_clipping": clip if clip > 0 else 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def unwrap(module: nn.Module) -> nn.Module:
    """The user module under DDP / DeepSpeed / torch.compile wrappers."""
    while True:
        if hasattr(module, "module") and isinstance(module.module, nn.Module):  # DDP, DeepSpeedEngine
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


# ----------------------------------------------------------------------------- networks


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
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)

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
        state = read_state(directory / f"{self.name}.pt", what="a training checkpoint", fix=_RESAVE)
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
        if self.ema is not None:  # read before the collective load, which no rank may skip (train.sharded)
            try:
                ema = read_state(directory / f"{self.name}.ema.pt", what="a training checkpoint", fix=_RESAVE)
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
                read_state(directory / f"{self.name}.ema.pt", what="a training checkpoint", fix=_RESAVE)
            )


# ----------------------------------------------------------------------------- preparation


def _materialise(module: nn.Module, device: torch.device, init_fn: Callable[[nn.Module], None] | None) -> None:
    if any(p.is_meta for p in module.parameters()) or any(b.is_meta for b in module.buffers()):
        if init_fn is None:
            raise ValueError(
                f"{type(module).__name__} was built on meta but no init function was given to materialise it"
            )
        module.to_empty(device=device)
        init_fn(module)
    elif init_fn is not None:
        init_fn(module)


def _shard(module: nn.Module, cfg: ParallelConfig, runtime: Runtime) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    mesh = init_device_mesh(runtime.device.type, (runtime.world_size,))
    mp = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if runtime.precision == "bf16"
        else MixedPrecisionPolicy()
    )
    kw = dict(mesh=mesh, mp_policy=mp, reshard_after_forward=cfg.reshard_after_forward)
    for m in module.modules():  # innermost units first
        methods = cfg.fsdp_methods.get(type(m).__name__, [])
        if methods:
            fully_shard(m, **kw)
            for method in methods:
                register_fsdp_forward_method(m, method)
    units = [m for m in module.modules() if type(m).__name__ in set(cfg.fsdp_units)]
    named = dict(module.named_modules())
    units += [named[path] for path in cfg.fsdp_leaf_units if path in named]
    for unit in units:
        fully_shard(unit, **kw)
    fully_shard(module, **kw)


# FSDP2 warns when a unit returns a view (an in-place op on it would skip the pre-backward hook). Our units'
# outputs (cross-attention K/V, head, embeddings) are never modified in place; the 2-process = 1-process
# tests of every stage would show it if they were.
warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")


def _claim_root(module: nn.Module) -> None:
    """The first FSDP module to run forward claims the root role; a network driven through its
    submodules (the DMD rollout never calls the root's forward) would let a leaf claim it and the
    root's first forward then fail. Claimed here, once the parameters are materialised."""
    module._get_fsdp_state()._lazy_init()


def root_parameters(module: nn.Module, cfg: ParallelConfig) -> list[str]:
    """Parameters of ``module`` that no FSDP unit below the root owns (gathered only by the root's forward)."""
    names = set(cfg.fsdp_units)
    leaves = set(cfg.fsdp_leaf_units)
    owned: set[int] = set()
    for path, m in module.named_modules():
        if m is not module and (type(m).__name__ in names or path in leaves or type(m).__name__ in cfg.fsdp_methods):
            owned.update(id(p) for p in m.parameters())
    return [n for n, p in module.named_parameters() if id(p) not in owned]


def _apply_common(module: nn.Module, cfg: ParallelConfig) -> None:
    if cfg.activation_checkpointing:
        if not hasattr(module, "gradient_checkpointing"):
            raise ValueError(
                f"parallel.activation_checkpointing=true but {type(module).__name__} has no gradient_checkpointing switch"
            )
        module.gradient_checkpointing = True
    if cfg.compile:
        for unit in [m for m in module.modules() if type(m).__name__ in set(cfg.fsdp_units)]:
            unit.compile()


def prepare_network(
    runtime: Runtime,
    cfg: ParallelConfig,
    *,
    name: str,
    module: nn.Module,
    optim: OptimConfig,
    ema: EMAConfig | None,
    total_steps: int,
    init_fn: Callable[[nn.Module], None] | None = None,
    grad_sync: str = "wrapper",
) -> TrainedNetwork:
    """Wrap, materialise and give an optimizer to one trainable network (see module docstring).
    ``grad_sync="manual"``: no DDP wrapper; gradients are averaged over ranks after backward
    (networks whose loss does not call their forward, e.g. the DMD generator's self-rollout)."""
    if grad_sync not in ("wrapper", "manual"):
        raise ValueError(f"grad_sync={grad_sync!r}: choose wrapper or manual")
    if grad_sync == "manual" and cfg.strategy == "deepspeed":
        raise ValueError(
            f"parallel.strategy=deepspeed: network {name!r} is trained outside its forward "
            "(grad_sync=manual, e.g. the DMD generator's self-rollout), which a DeepSpeed engine "
            "cannot see; use parallel=fsdp, ddp or single"
        )
    if grad_sync == "manual" and cfg.strategy == "fsdp":
        left = root_parameters(module, cfg)
        if left:
            raise ValueError(
                f"network {name!r} is trained outside its forward but parameters {left[:8]} belong "
                "to no FSDP unit of their own; add their modules to parallel.fsdp_leaf_units"
            )
    _apply_common(module, cfg)
    if ema is not None and ema.enabled and cfg.strategy == "deepspeed" and cfg.zero_stage == 3:
        raise ValueError(
            "ema.enabled=true is not supported with parallel.zero_stage=3 (partitioned parameters); use fsdp"
        )
    use_ema = ema is not None and ema.enabled
    if cfg.strategy == "fsdp":
        _shard(module, cfg, runtime)
        _materialise(module, runtime.device, init_fn)
        module.to(runtime.device)
        _claim_root(module)
        opt = build_optimizer(param_groups(module, optim), optim, device=runtime.device)
        return FSDPNetwork(
            name,
            module,
            module,
            opt,
            build_scheduler(opt, optim, total=total_steps),
            EMA(module, ema) if use_ema else None,
            optim.clip_grad_norm,
            runtime,
        )
    _materialise(module, runtime.device, init_fn)
    module.to(runtime.device)
    opt = build_optimizer(param_groups(module, optim), optim, device=runtime.device)
    sched = build_scheduler(opt, optim, total=total_steps)
    if cfg.strategy == "deepspeed":
        engine, _ = runtime.accelerator.prepare(module, opt)
        raw = unwrap(engine)
        return DeepSpeedNetwork(
            name, engine, raw, opt, sched, EMA(raw, ema) if use_ema else None, optim.clip_grad_norm, runtime
        )
    if grad_sync == "manual":
        return ManualSyncNetwork(
            name, module, module, opt, sched, EMA(module, ema) if use_ema else None, optim.clip_grad_norm, runtime
        )
    wrapped = runtime.accelerator.prepare_model(module) if runtime.distributed else module
    return DDPNetwork(
        name, wrapped, module, opt, sched, EMA(module, ema) if use_ema else None, optim.clip_grad_norm, runtime
    )


def prepare_frozen(
    runtime: Runtime,
    module: nn.Module,
    *,
    cfg: ParallelConfig | None = None,
    init_fn: Callable[[nn.Module], None] | None = None,
    shard: bool = False,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Frozen module: no grads, eval mode, on the device (sharded under FSDP when ``shard``)."""
    module.requires_grad_(False).eval()
    sharded = shard and cfg is not None and cfg.strategy == "fsdp"
    if sharded:
        _shard(module, cfg, runtime)
    _materialise(module, runtime.device, init_fn)
    module.to(runtime.device)
    if sharded:
        _claim_root(module)
    if dtype is not None:
        module.to(dtype)
    return module
