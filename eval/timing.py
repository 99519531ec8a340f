"""The one benchmark timer: wall time of a callable, synchronising the device around each call
(CUDA kernels are asynchronous), after warm-up calls that pay allocator / algorithm selection."""
from __future__ import annotations

import time
from typing import Callable

import torch

__all__ = ["sync", "time_calls"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], *, device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn`` for ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times
