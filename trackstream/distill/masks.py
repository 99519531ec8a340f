"""The sparse causal attention masks the causal starts train with (MotionStream: "diverse sparse causal attention
masks"): ODE init, teacher forcing and consistency distillation each draw one (sink, window) configuration per
batch from ``stage.sink_choices`` x ``stage.window_choices``; the student's chunking (``stage.causal``) is kept.
The choices' defaults are written here once."""

from __future__ import annotations

import dataclasses

import torch

from trackstream.models.streaming import CausalConfig

__all__ = ["default_sinks", "default_windows", "check_mask_choices", "sample_causal_config"]


def default_sinks() -> list:
    """``stage.sink_choices``' default: no sink or one sink chunk."""
    return [0, 1]


def default_windows() -> list:
    """``stage.window_choices``' default: a window of one or two chunks (a null entry = the full causal history)."""
    return [1, 2]


def check_mask_choices(causal: CausalConfig, sinks: list, windows: list) -> None:
    """``stage.sink_choices`` / ``stage.window_choices`` (the masks a causal stage draws per batch): non-empty, and
    each a valid sink / window of ``causal``'s chunking (``CausalConfig`` raises naming the field)."""
    if not sinks or not windows:
        raise ValueError("stage.sink_choices and stage.window_choices must be non-empty lists")
    for s in sinks:
        CausalConfig(chunk_frames=causal.chunk_frames, sink_chunks=s)
    for w in windows:
        CausalConfig(chunk_frames=causal.chunk_frames, window_chunks=w)


def sample_causal_config(base: CausalConfig, sinks: list, windows: list, gen: torch.Generator) -> CausalConfig:
    """One (sink, window) configuration for a batch, drawn uniformly from the choices; chunk sizes
    (``chunk_frames``, ``first_chunk_frames``, ``first_chunk_sampled``) and ``rope`` stay those of ``base``."""
    s = sinks[int(torch.randint(len(sinks), (), generator=gen))]
    w = windows[int(torch.randint(len(windows), (), generator=gen))]
    # chunking, a sampled chunk 0 and the RoPE policy stay base's; the drawn window is counted in chunks
    return dataclasses.replace(
        base, sink_chunks=int(s), window_chunks=None if w is None else int(w), window_frames=None
    )
