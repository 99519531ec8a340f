"""Process-level runtime: launch environment, accelerate, seeding, RNG state, reductions.

CPU facts this module encodes (each measured on CPU with 2 processes):
* a plain ``Accelerator()`` under torchrun without a GPU silently gives N independent
  single-process runs; we pass ``cpu=True`` so accelerate builds a gloo group (MULTI_CPU);
* DeepSpeed on CPU needs the gloo backend passed explicitly (and ``DS_ACCELERATOR=cpu``);
* 2-process gloo runs sometimes abort in the interpreter's exit path; entry points end
  with :func:`hard_exit` (flush, then ``os._exit``).
Slurm: when started by ``srun`` without torchrun, RANK/WORLD_SIZE/... are exported from the
SLURM_* variables, so one task per GPU (the preemption-friendly layout) needs no launcher.

RNG states are tensors and plain numbers (:func:`rng_state`), so a checkpoint holding them reads back
without pickle (``models.formats.files``).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from trackstream.models.precision import concrete_precision

__all__ = [
    "Runtime",
    "init_runtime",
    "export_slurm_env",
    "launch_rank",
    "seed_everything",
    "rng_state",
    "load_rng_state",
    "hard_exit",
]

log = logging.getLogger(__name__)


def training_allocator() -> None:
    """Expandable segments for the CUDA caching allocator, unless ``PYTORCH_CUDA_ALLOC_CONF`` is set: a DMD
    iteration's activations change shape with the exit step drawn per rollout, and with fixed segments the
    1.3B recipe at 81 frames ran out of memory on one 80 GB H100 at 73.8 GiB allocated (fragmentation); with
    expandable segments the same iteration runs there (peak 73.8 GiB, docs/results.md). Must run before
    the first CUDA allocation (the allocator reads the variable once)."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def export_slurm_env() -> None:
    """Under ``srun`` (one task per device, no torchrun) derive torch.distributed's env vars."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    ntasks = int(os.environ.get("SLURM_NTASKS", "1"))
    if ntasks <= 1:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = str(ntasks)
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    os.environ.setdefault("LOCAL_WORLD_SIZE", os.environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0])
    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST", "localhost")
        try:  # first host of a compressed nodelist, as scontrol expands it
            import subprocess

            first = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True)
            os.environ["MASTER_ADDR"] = first.stdout.split()[0]
        except (OSError, subprocess.CalledProcessError, IndexError):
            os.environ["MASTER_ADDR"] = nodes.split(",")[0].split("[")[0]
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))


def launch_rank() -> int:
    """This process's rank as its launcher gave it, before any process group exists: ``RANK`` (torchrun, or
    already derived), else ``SLURM_PROCID`` in a step of several tasks (``export_slurm_env``), else 0."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return int(os.environ.get("SLURM_PROCID", "0"))
    return 0


def world_of_one(strategy: str) -> None:
    """A multi-process strategy (ddp, fsdp, deepspeed) started without a launcher (no ``RANK``): a process
    group of one on this machine, so a recipe runs on one GPU as written (``torchrun --nproc_per_node N``
    for more). Without it FSDP asks for ``RANK`` and DeepSpeed looks for MPI."""
    if strategy == "single" or "RANK" in os.environ:
        return
    import socket

    with socket.socket() as s:  # a free port for the group's store
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(port))
    log.info("parallel.strategy=%s without a launcher: a world of one process (torchrun for more)", strategy)


@dataclass
class Runtime:
    """Where and how this process trains. ``strategy`` is the parallel strategy name."""

    accelerator: object  # accelerate.Accelerator
    strategy: str
    device: torch.device
    rank: int
    world_size: int
    local_rank: int
    precision: str  # "fp32" | "bf16" (resolved)
    # parallel.sequence_parallel: K consecutive ranks share one sample (rank = data_rank * K + k)
    sequence_parallel: int = 1
    sequence_group: object = None  # their ProcessGroup (None when K = 1)

    @property
    def data_rank(self) -> int:
        """Which sample stream this rank reads: the K ranks of a sequence group read the same."""
        return self.rank // self.sequence_parallel

    @property
    def data_world_size(self) -> int:
        return self.world_size // self.sequence_parallel

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def autocast(self):
        """bf16 autocast on GPU for single/DDP; FSDP2 casts through its policy, DeepSpeed itself."""
        if self.precision == "bf16" and self.strategy in ("single", "ddp") and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def reduce_mean(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        """Average scalars over ranks with ONE all-reduce. A CPU-GPU sync point (``.tolist()``)."""
        if not values:
            return {}
        keys = sorted(values)
        flat = torch.stack([values[k].detach().float().reshape(()).to(self.device) for k in keys])
        if self.distributed:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= self.world_size
        return dict(zip(keys, flat.tolist()))

    def any_flag(self, flag: bool) -> bool:
        """True on every rank if it is True on any rank (used for preemption requests)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_object(self, obj):
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _skip_deepspeed_shm_build() -> None:
    """DeepSpeed's CPU backend JIT-compiles its shared-memory all-reduce kernel (ninja + g++, about two
    minutes on 2 cores, once per machine) when it starts, yet uses it only in ``inference_all_reduce``:
    ZeRO training on gloo never calls it. Marking the op incompatible makes the backend skip the build."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _check_launch(strategy: str, world_size: int, sequence_parallel: int, device: str) -> None:
    if world_size % sequence_parallel:
        raise ValueError(
            f"parallel.sequence_parallel={sequence_parallel} must divide the number of processes ({world_size}): "
            f"launch data x {sequence_parallel} processes (torchrun --nproc_per_node)"
        )
    if strategy == "single" and world_size > 1:
        raise ValueError(
            f"parallel.strategy=single but the launcher started {world_size} processes; "
            "choose parallel=ddp, fsdp or deepspeed"
        )
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={device!r}: choose auto, cpu or cuda (the launcher places each process's GPU)")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available here: use device=cpu (or auto)")


def _accelerator_kwargs(
    strategy: str,
    *,
    cuda: bool,
    world_size: int,
    backend: str,
    timeout_minutes: int,
    deepspeed_config: dict | None,
    find_unused_parameters: bool,
) -> dict:
    """``Accelerator(**kwargs)`` for ``strategy``; for DeepSpeed this also sets the environment it reads."""
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    handlers: list = []
    if world_size > 1:  # a backend handler in a single process makes accelerate query a missing group
        handlers.append(InitProcessGroupKwargs(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes)))
    if strategy == "ddp":
        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters))
    kwargs: dict = {"cpu": not cuda, "kwargs_handlers": handlers, "mixed_precision": "no"}
    if strategy == "deepspeed":
        if not cuda:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before deepspeed is imported
            _skip_deepspeed_shm_build()
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # accelerate's state sets DEEPSPEED from this
        from accelerate.utils import DeepSpeedPlugin

        # Not cpu=True here: that path never turns DeepSpeed on; the explicit gloo backend above
        # is what makes it work without a GPU.
        kwargs["cpu"] = False
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=deepspeed_config)
    return kwargs


def _sequence_group(device_type: str, world_size: int, sequence_parallel: int) -> dist.ProcessGroup | None:
    """This rank's sequence group of a (data, seq) device mesh, or None without sequence parallelism."""
    if sequence_parallel <= 1:
        return None
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(
        device_type,
        (world_size // sequence_parallel, sequence_parallel),
        mesh_dim_names=("data", "seq"),
    )
    return mesh.get_group("seq")


def init_runtime(
    strategy: str,
    *,
    precision: str = "auto",
    backend: str = "auto",
    timeout_minutes: int = 30,
    deepspeed_config: dict | None = None,
    find_unused_parameters: bool = False,
    device: str = "auto",
    sequence_parallel: int = 1,
) -> Runtime:
    """Create the Accelerator for ``strategy`` (single | ddp | fsdp | deepspeed). ``device``: "auto"
    (CUDA when present), "cpu" (even on a GPU machine) or "cuda" (refused without a GPU).
    ``sequence_parallel`` K > 1: a (data, seq) device mesh of world / K x K ranks; this rank's
    sequence group is ``Runtime.sequence_group``."""
    from accelerate import Accelerator

    export_slurm_env()
    world_of_one(strategy)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    _check_launch(strategy, world_size, sequence_parallel, device)
    cuda = torch.cuda.is_available() and device != "cpu"
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    precision = concrete_precision(precision, "cuda" if cuda else "cpu", field="trainer.precision", training=True)
    kwargs = _accelerator_kwargs(
        strategy,
        cuda=cuda,
        world_size=world_size,
        backend=backend,
        timeout_minutes=timeout_minutes,
        deepspeed_config=deepspeed_config,
        find_unused_parameters=find_unused_parameters,
    )
    accelerator = Accelerator(**kwargs)
    if world_size > 1 and accelerator.num_processes != world_size:
        raise RuntimeError(
            f"accelerate sees {accelerator.num_processes} process(es) but WORLD_SIZE={world_size}: "
            "the process group was not built (on CPU: launch with torchrun, not accelerate --cpu; see this module's docstring)"
        )
    return Runtime(
        accelerator=accelerator,
        strategy=strategy,
        device=accelerator.device,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        local_rank=accelerator.local_process_index,
        precision=precision,
        sequence_parallel=sequence_parallel,
        sequence_group=_sequence_group(accelerator.device.type, world_size, sequence_parallel),
    )


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices). Every int is a real seed, 0 included."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG's state as tensors and plain numbers (numpy's key as a uint32 tensor, not an array:
    a checkpoint of it then loads with ``weights_only=True``)."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "key": torch.from_numpy(key.copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def load_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npy = state["numpy"]
    if isinstance(npy, dict):
        key = np.asarray(npy["key"].numpy() if torch.is_tensor(npy["key"]) else npy["key"], dtype=np.uint32)
        np.random.set_state((npy["name"], key, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    else:  # a checkpoint written before the states were plain: numpy's own tuple (read with the opt-in)
        name, key, *rest = npy
        key = np.asarray(key.numpy() if torch.is_tensor(key) else key, dtype=np.uint32)
        np.random.set_state((name, key, *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def hard_exit(code: int = 0) -> None:
    """Flush and leave without running interpreter teardown (gloo aborts sporadically at interpreter exit: ``terminate called without an
    active exception`` in 10-25 % of 2-process runs, after all output; ``os._exit`` after a flush avoids it)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
