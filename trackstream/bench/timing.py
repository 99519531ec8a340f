"""The one benchmark timer: wall time of a callable, synchronising the device around each call
(CUDA kernels are asynchronous), after warm-up calls that pay allocator / algorithm selection."""

from __future__ import annotations

import datetime
import platform
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

import torch

__all__ = ["sync", "time_calls", "environment"]


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


def _git_commit() -> Optional[str]:
    """HEAD of the checkout the code runs from, "-dirty" when tracked files differ from it."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=root)
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=root,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return (commit + ("-dirty" if changed.stdout.strip() else "")) if commit else None


def environment(device: torch.device, dtype: Optional[torch.dtype] = None) -> dict:
    """Where and when a benchmark ran, for its JSON: device, torch, date, git commit, peak-memory method."""
    cuda = device.type == "cuda"
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if cuda
        else f"{platform.processor() or platform.machine()} x {torch.get_num_threads()} threads",
        **({"dtype": str(dtype).removeprefix("torch.")} if dtype is not None else {}),
        "torch": torch.__version__,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "peak_memory": "torch.cuda.max_memory_allocated" if cuda else "not measured on CPU",
    }
