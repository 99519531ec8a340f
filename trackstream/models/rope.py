"""Wan's 3D rotary position embedding, built from integer (frame, row, col) positions on the fly.

Angles are computed in float64 from the positions (no 1024-entry table, as the official
``rope_params`` has), so any frame index is valid; the rotation itself runs in float32.

Legend: B batch, L tokens, N heads, D head dim.
"""

from __future__ import annotations

import torch

__all__ = ["rope_axis_pairs", "rope_cos_sin", "grid_positions", "apply_rope"]


def rope_axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """Complex pairs given to the (frame, height, width) axes: 22/21/21 for head_dim 128."""
    if head_dim % 2:
        raise ValueError(f"head_dim={head_dim} must be even for RoPE (dim / num_heads)")
    c = head_dim // 2
    return c - 2 * (c // 3), c // 3, c // 3


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """3D RoPE tables for arbitrary integer positions.

    positions: [L, 3] (frame, row, col). Returns cos, sin: [L, head_dim // 2] float32, one
    entry per interleaved pair. Each axis has its own frequency set over its own sub-dimension
    (official ``rope_params(1024, D_axis)``), computed in float64.
    """
    parts = []
    for axis, pairs in enumerate(rope_axis_pairs(head_dim)):
        sub_dim = 2 * pairs
        omega = 1.0 / torch.pow(
            theta, torch.arange(0, sub_dim, 2, dtype=torch.float64, device=positions.device) / sub_dim
        )
        parts.append(positions[:, axis].to(torch.float64)[:, None] * omega[None, :])
    angles = torch.cat(parts, dim=1)  # [L, D/2]
    return torch.cos(angles).float(), torch.sin(angles).float()


def grid_positions(
    grid: tuple[int, int, int], frame_offset: int = 0, device: torch.device | None = None
) -> torch.Tensor:
    """Row-major (f, h, w) positions of a token grid: [F*H*W, 3] int64."""
    f, h, w = grid
    ff, hh, ww = torch.meshgrid(
        torch.arange(frame_offset, frame_offset + f, device=device),
        torch.arange(h, device=device),
        torch.arange(w, device=device),
        indexing="ij",
    )
    return torch.stack([ff, hh, ww], dim=-1).reshape(-1, 3)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2j], x[2j+1]) of x: [B, L, N, D] with cos/sin [L, D/2].

    Computed in float32 and returned in float32 (the official code returns float32 too).
    """
    xf = x.float().unflatten(-1, (-1, 2))  # [B, L, N, D/2, 2]
    x0, x1 = xf[..., 0], xf[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1).flatten(-2)
