"""Parallelism applied from outside the model: DDP, FSDP2, DeepSpeed ZeRO, frozen modules.

``prepare_network`` turns a raw trainable module (possibly built on ``meta``) into a
``TrainedNetwork`` (``trackstream/trainer/trained_network.py``): wrapped module + optimizer + LR schedule
+ EMA, with the strategy's own backward / no-sync / step / checkpoint semantics behind one interface, so
``trackstream/trainer/loop.py`` never branches on the strategy.

* single / ddp: accelerate's ``prepare_model`` (DDP on MULTI_CPU/MULTI_GPU).
* fsdp: ``torch.distributed.fsdp.fully_shard`` per transformer block, then the root, called
  directly (accelerate's FSDP2 plugin does not shard on CPU: it falls back to DDP or
  leaves the model unwrapped);
  bf16 via ``MixedPrecisionPolicy`` (fp32 reductions); meta-built modules are materialised
  after sharding (``to_empty`` + init), so no rank ever holds the full unsharded model.
* deepspeed: ZeRO 0-3 through accelerate's DeepSpeed plugin (on CPU with an explicit gloo backend: trainer.dist).
Frozen modules (codec, text encoder, the teacher in distillation) get ``prepare_frozen``:
eval mode, no gradients, no DDP wrapper, optionally sharded (FSDP) for large teachers.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn as nn

from trackstream.trainer.dist import Runtime

if TYPE_CHECKING:
    from trackstream.models.lora import LoraConfig
from trackstream.trainer.ema import EMA, EMAConfig
from trackstream.trainer.optim import OptimConfig, build_optimizer, build_scheduler, param_groups
from trackstream.trainer.trained_network import (
    DDPNetwork,
    DeepSpeedNetwork,
    FSDPNetwork,
    ManualSyncNetwork,
    TrainedNetwork,
)

log = logging.getLogger(__name__)
__all__ = [
    "ParallelConfig",
    "prepare_network",
    "prepare_frozen",
    "deepspeed_config",
    "unwrap",
    "root_parameters",
    "attach_sequence_parallel",
]

STRATEGIES = ("single", "ddp", "fsdp", "deepspeed")


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
    # Ulysses sequence parallelism (models.sequence_parallel): K processes share each sample, each
    # running 1/K of its tokens; world = data x K. The DiT stages: teacher, ODE init, DMD, RL (ddp or fsdp).
    sequence_parallel: int = 1

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"parallel.strategy={self.strategy!r}; choose one of {STRATEGIES}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"parallel.zero_stage={self.zero_stage} must be 0, 1, 2 or 3")
        if self.backend not in ("auto", "nccl", "gloo"):
            raise ValueError(f"parallel.backend={self.backend!r}; choose auto, nccl or gloo")
        if self.sequence_parallel < 1:
            raise ValueError(f"parallel.sequence_parallel={self.sequence_parallel} must be >= 1 (1: off)")
        if self.sequence_parallel > 1 and self.strategy not in ("ddp", "fsdp"):
            raise ValueError(
                f"parallel.sequence_parallel={self.sequence_parallel} needs parallel=fsdp or ddp "
                f"(not {self.strategy}): launch data x {self.sequence_parallel} processes with torchrun"
            )


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


def attach_sequence_parallel(module: nn.Module, runtime: Runtime, name: str = "network") -> None:
    """Give every Wan DiT in ``module`` this rank's sequence group (``models.sequence_parallel``), before
    wrapping. FSDP still shards over ALL data x K ranks (one flat mesh): the K ranks of a group hold the
    same parameters anyway, so sharding over them too divides parameter, gradient and optimizer memory
    by K more, and the gradient mean over data x K ranks is the one-process gradient because each group
    trains the sum of its K identical losses (the gather's backward, see models.sequence_parallel).
    A no-op without sequence parallelism."""
    from trackstream.models.sequence_parallel import SequenceShard
    from trackstream.models.wan import WanModel

    if runtime.sequence_parallel == 1:
        return
    dits = [m for m in module.modules() if isinstance(m, WanModel)]
    assert dits, f"{type(module).__name__} holds no WanModel"
    for dit in dits:
        if dit.num_heads % runtime.sequence_parallel:
            raise ValueError(
                f"parallel.sequence_parallel={runtime.sequence_parallel} must divide the model's "
                f"num_heads={dit.num_heads} (ring attention is not implemented): choose a divisor"
            )
        dit.sequence_shard = SequenceShard.of(runtime.sequence_group)
    if runtime.is_main:
        log.info("sequence parallel: the %s runs 1/%d of each clip's tokens per rank", name, runtime.sequence_parallel)


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
    lora: "LoraConfig | None" = None,
) -> TrainedNetwork:
    """Wrap, materialise and give an optimizer to one trainable network (see module docstring).
    ``grad_sync="manual"``: no DDP wrapper; gradients are averaged over ranks after backward
    (networks whose loss does not call their forward, e.g. the DMD generator's self-rollout).
    ``lora`` (``model.lora``, rank > 0): PEFT adapters injected before sharding, the rest frozen; the
    optimizer, EMA and gradient sync then see the adapters only (``models.lora``)."""
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
    if lora is not None and lora.enabled:
        from trackstream.models.lora import add_lora

        count = add_lora(module, lora)
        if runtime.is_main:
            log.info("%s: LoRA rank %d (alpha %s) on %d parameters", name, lora.rank, lora.alpha or lora.rank, count)
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
