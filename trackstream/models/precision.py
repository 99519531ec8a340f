"""Device and precision for every command that runs a network, and the one vocabulary they are named in.

Precisions are ``bf16 | fp16 | fp32 | fp8 | auto`` everywhere: ``trainer.precision`` (no fp16 or fp8),
``--dtype``, ``generate.dtype``, ``ode_pairs.sample_dtype``. ``auto`` is bf16 on CUDA and fp32 on the CPU
(:func:`auto_precision`, the only place that rule is written). torch's long names (bfloat16, float16,
float32) are accepted as aliases and normalised by :func:`precision_name`; help texts and errors name the
short ones (:data:`PRECISION_HELP`).

    device = resolve_device(args.device)                  # None / "auto" -> CUDA when present, else CPU
    dtype = resolve_dtype(args.dtype, device)             # None / "auto" -> the rule above

bf16 on the CPU is allowed (it runs, slowly; the tests use it to cover the bf16 path); fp16 is
accepted for GPUs without bf16, except in training, which has no fp16 path.

``fp8`` is an inference precision: the DiT blocks' linear layers in float8_e4m3fn (weights quantised once
at load, activations per call, torch's scaled matmul: ``models.fp8``) and bf16 everywhere else. Its torch
dtype is ``torch.float8_e4m3fn``, which ``WanModel.cast_for_inference`` reads as that recipe; whatever else
a command builds in the run's dtype (codec, encoders, inputs) takes :func:`working_dtype` (bf16 for fp8).
On CUDA it needs compute capability 8.9+ (Ada, Hopper; refused in one line naming ``--dtype bf16``); on the
CPU it runs as an exact emulation (slowly), as the tests run it. What stays fp32 whatever the
dtype (time embedding, modulation, norms, the residual stream) is decided by
``WanModel.cast_for_inference``, not here.
"""

from __future__ import annotations

import torch

__all__ = [
    "PRECISIONS",
    "PRECISION_HELP",
    "DTYPES",
    "auto_precision",
    "precision_name",
    "concrete_precision",
    "resolve_device",
    "resolve_dtype",
    "resolve_precision",
    "synchronize",
    "dtype_name",
    "working_dtype",
    "FP8_MIN_CAPABILITY",
]

PRECISIONS = ("bf16", "fp16", "fp32", "fp8", "auto")
PRECISION_HELP = (
    "auto (bf16 on CUDA, fp32 on the CPU), bf16, fp16, fp32 or fp8 (the DiT blocks' linears in float8, bf16 else)"
)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp8": torch.float8_e4m3fn}
# torch's names (what torch prints, what older configs say) -> the one spelling
_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float8_e4m3fn": "fp8"}
_TRAINING_HELP = "auto (bf16 on CUDA, fp32 on the CPU), bf16 or fp32 (training has no fp16 or fp8 path)"
# torch._scaled_mm's float8 matmul: Ada (8.9) and Hopper (9.0) on
FP8_MIN_CAPABILITY = (8, 9)


def auto_precision(device: str | torch.device) -> str:
    """What ``auto`` means on ``device``: bf16 on CUDA, fp32 elsewhere."""
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def precision_name(value: str | torch.dtype | None, *, field: str = "dtype", training: bool = False) -> str:
    """``value`` in the one spelling (one of :data:`PRECISIONS`; None is ``auto``); anything else, and fp16
    for ``training``, is a one-line ValueError naming ``field`` and the choices."""
    if isinstance(value, torch.dtype):
        name = next((k for k, v in DTYPES.items() if v == value), str(value))
    else:
        name = "auto" if value is None else str(value).removeprefix("torch.")
        name = _ALIASES.get(name, name)
    if name not in PRECISIONS or (training and name in ("fp16", "fp8")):
        raise ValueError(f"{field}={value!r}: choose {_TRAINING_HELP if training else PRECISION_HELP}")
    return name


def concrete_precision(
    value: str | torch.dtype | None, device: str | torch.device, *, field: str = "dtype", training: bool = False
) -> str:
    """bf16, fp16 or fp32: ``value`` with ``auto`` resolved for ``device``."""
    name = precision_name(value, field=field, training=training)
    return auto_precision(device) if name == "auto" else name


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


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device, *, field: str = "dtype") -> torch.dtype:
    """The torch dtype of a precision (see the module docstring) on ``device``; fp8 on a GPU that cannot run
    it is a one-line ValueError naming ``field`` and the fix."""
    name = concrete_precision(dtype, device, field=field)
    if name == "fp8":
        _check_fp8(torch.device(device), field)
    return DTYPES[name]


def _check_fp8(device: torch.device, field: str) -> None:
    if device.type == "cpu":
        return  # the exact emulation (models.fp8)
    if device.type != "cuda":
        raise ValueError(f"{field}=fp8 runs on CUDA (or emulated on the CPU), not on {device}: use {field}=bf16")
    cap = torch.cuda.get_device_capability(device)
    if cap < FP8_MIN_CAPABILITY:
        raise ValueError(
            f"{field}=fp8 needs a GPU of compute capability {'.'.join(map(str, FP8_MIN_CAPABILITY))}+ (Ada, Hopper); "
            f"{torch.cuda.get_device_name(device)} is {cap[0]}.{cap[1]}: use {field}=bf16"
        )


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of everything but the DiT's fp8 linears in a run of ``dtype``: bf16 for fp8, else ``dtype``."""
    return torch.bfloat16 if dtype == torch.float8_e4m3fn else dtype


def resolve_precision(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) with the defaults above."""
    dev = resolve_device(device)
    return dev, resolve_dtype(dtype, dev)


def dtype_name(dtype: torch.dtype) -> str:
    """torch's name of ``dtype`` (``bfloat16``), as results and index files record it."""
    return str(dtype).removeprefix("torch.")


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the device's queued work (so wall-clock timings of GPU work are true); no-op on CPU."""
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        torch.cuda.synchronize(dev)
