"""Device and dtype for every command that runs a network: CUDA + bf16 when a GPU is present, else
CPU + fp32, unless the user says otherwise.

    device, dtype = resolve_precision(args.device, args.dtype)   # None / "auto" -> the defaults
    add_precision_args(parser)                                    # --device / --dtype for argparse

bf16 on the CPU is allowed (it runs, slowly; the tests use it to cover the bf16 path); fp16 is
accepted for GPUs without bf16. What stays fp32 whatever the dtype (time embedding, modulation,
norms, the residual stream) is decided by ``WanModel.cast_for_inference``, not here.
"""

from __future__ import annotations

import argparse

import torch

__all__ = [
    "DTYPES",
    "resolve_device",
    "resolve_dtype",
    "resolve_precision",
    "add_precision_args",
    "synchronize",
    "dtype_name",
]

# accepted spellings -> dtype (the long names are torch's, the short ones what Hydra users type)
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str | torch.device | None = None, *, field: str = "device") -> torch.device:
    """None or "auto" -> CUDA when present, else the CPU; "cuda" without a GPU is refused (one line)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{field}={device!r} is not a device: use auto, cpu, cuda or cuda:N") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{field}={device!r} but no CUDA device is available here: use {field}=cpu (or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{field}={device!r} but only {torch.cuda.device_count()} CUDA device(s) are present")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device, *, field: str = "dtype") -> torch.dtype:
    """None or "auto" -> bf16 on CUDA, fp32 elsewhere; names as in ``DTYPES``."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"{field}={dtype}: choose one of float32, bfloat16, float16")
        return dtype
    if dtype is None or str(dtype) == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"{field}={dtype!r}: choose auto, float32 (fp32), bfloat16 (bf16) or float16 (fp16)")
    return DTYPES[name]


def resolve_precision(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) with the defaults above."""
    dev = resolve_device(device)
    return dev, resolve_dtype(dtype, dev)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def add_precision_args(parser: argparse.ArgumentParser) -> None:
    """--device / --dtype with the project's defaults (resolve them with ``resolve_precision``)."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else cpu), cpu, cuda, cuda:N")
    parser.add_argument(
        "--dtype", default="auto", help="auto (bfloat16 on CUDA, float32 on cpu), float32, bfloat16, float16"
    )


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the device's queued work (so wall-clock timings of GPU work are true); no-op on CPU."""
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        torch.cuda.synchronize(dev)
