"""A ``WanModel`` from a checkpoint on disk, and back: the glue between the network and the state-dict
files ``models.formats.checkpoint`` reads and writes (official or diffusers layout).

Loading is strict by default; a mismatch raises ``CheckpointError`` naming the detected format and the
missing / unexpected keys. Meta models (built under ``torch.device("meta")``) are assigned, not copied.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from trackstream.models.formats.checkpoint import read_state_dict, write_state_dict
from trackstream.models.formats.wan_formats import (
    CheckpointError,
    config_from_json,
    diffusers_config_json,
    official_config_json,
    official_to_diffusers,
    to_official,
)
from trackstream.models.wan import WanModel

__all__ = ["load_into", "load_wan", "save_wan"]


def load_into(
    model: WanModel,
    sd: dict[str, torch.Tensor],
    *,
    strict: bool = True,
    fmt: str | None = None,
    source: str = "state dict",
):
    """Load an official- or diffusers-format state dict into ``model`` (meta models are assigned)."""
    sd, detected = to_official(sd)
    fmt = fmt or detected
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shape_bad = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(sd) & set(expected)
        if sd[k].shape != expected[k].shape
    )
    if shape_bad or (strict and (missing or unexpected)):

        def _fmt(items):
            return (", ".join(items[:12]) + (f" ... (+{len(items) - 12} more)" if len(items) > 12 else "")) or "none"

        raise CheckpointError(
            f"{source} (detected format: {fmt}) does not match WanModel({model.model_type}, dim={model.dim}, "
            f"layers={model.num_layers}, in_dim={model.in_dim}): missing keys ({len(missing)}): {_fmt(missing)}; "
            f"unexpected keys ({len(unexpected)}): {_fmt(unexpected)}; shape mismatches: {_fmt(shape_bad)}; "
            "check that the flavor / config.json matches the checkpoint, or pass strict=False to load a subset"
        )
    is_meta = any(p.is_meta for p in model.parameters())
    model.load_state_dict({k: v for k, v in sd.items() if k in expected}, strict=strict, assign=is_meta)
    return model


def load_wan(
    path: str | os.PathLike,
    *,
    config: dict | None = None,
    strict: bool = True,
    dtype: torch.dtype | None = None,
    subkey: str | None = None,
) -> WanModel:
    """Build a WanModel from a checkpoint path; the config comes from ``config`` or config.json."""
    sd, file_cfg = read_state_dict(path, subkey=subkey)
    if config is None:
        if file_cfg is None:
            raise CheckpointError(
                f"no config.json next to {path}: pass config=flavor_config('<flavor>') (see models.flavors)"
            )
        config = config_from_json(file_cfg)
    with torch.device("meta"):
        model = WanModel(**config)
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    load_into(model, sd, strict=strict, source=str(path))
    if any(p.is_meta for p in model.parameters()):  # strict=False left some weights unset
        model.to_empty(device="cpu")
        raise CheckpointError(f"{path}: some parameters were not in the checkpoint; cannot leave them on meta")
    return model


def save_wan(
    model: WanModel, out_dir: str | os.PathLike, *, fmt: str = "official", max_shard_bytes: int | None = None
) -> Path:
    """Write ``model`` as config.json + safetensors in the official or the diffusers layout (written aside
    and renamed: never half a checkpoint under ``out_dir``)."""
    if fmt not in ("official", "diffusers"):
        raise ValueError(f"fmt={fmt!r}; expected 'official' or 'diffusers'")
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    cfg = official_config_json(model)
    if fmt == "diffusers":
        sd, cfg = official_to_diffusers(sd), diffusers_config_json(model)
    return write_state_dict(sd, cfg, out_dir, max_shard_bytes=max_shard_bytes)
