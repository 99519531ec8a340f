"""Spatial-frequency selective optimisation (SFSO), DragStream's two ways of keeping a drag local.

Frequency part: the context a dragged chunk attends to (its window's keys, with RoPE, and values) is
low-passed on every frame's token grid before the reference features are taken, so only coarse
context cues propagate into the drag; the cut-off is switched at random per iteration among
{0.2, 0.4, 0.6, none} (DragStream's ablation). The transfer function is the "squared"
Butterworth of image processing, H = 1 / (1 + (R / D0)^(2n)), n = 4, with R = sqrt(fu^2 + fv^2) the
radial frequency in cycles per token (fftfreq: [-0.5, 0.5)), so R <= 0.707 and D0 = 0.6 is mild.

Spatial part: the latent's gradient is weighted by a Gaussian map around each dragged object's
target box (sigma = 0.5 x side x (1 + padding) x scale per axis, padding 1.5, scale 1.5: 1.875 x the
side), peak 1, several objects combined by probabilistic OR (§1.9).
Legend: B batch, L tokens (frames x h x w, f-major), N heads, D head dim, F frames.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

__all__ = ["CUTOFFS", "butterworth_lowpass", "lowpass_tokens", "context_filter", "gaussian_map"]

CUTOFFS = (None, 0.2, 0.4, 0.6)  # None: unfiltered (the paper's omega = 1)


def butterworth_lowpass(h: int, w: int, cutoff: float, *, order: int = 4, device=None) -> torch.Tensor:
    """[h, w] transfer function in the unshifted FFT layout."""
    if not cutoff > 0:
        raise ValueError(f"Butterworth cut-off must be > 0 cycles per token, got {cutoff}")
    fu = torch.fft.fftfreq(h, device=device)[:, None]
    fv = torch.fft.fftfreq(w, device=device)[None, :]
    r = torch.sqrt(fu**2 + fv**2)
    return 1.0 / (1.0 + (r / cutoff) ** (2 * order))


def lowpass_tokens(x: torch.Tensor, grid: tuple[int, int], cutoff: Optional[float]) -> torch.Tensor:
    """Low-pass tokens [B, L, N, D] (L = F x h x w, f-major) over each frame's (h, w) grid; float32 inside."""
    if cutoff is None:
        return x
    h, w = grid
    B, L, N, D = x.shape
    if L % (h * w):
        raise ValueError(f"{L} tokens are not whole frames of {h}x{w}")
    y = x.float().reshape(B, L // (h * w), h, w, N, D)  # [B, F, h, w, N, D]
    spec = (
        torch.fft.fft2(y, dim=(2, 3)) * butterworth_lowpass(h, w, cutoff, device=x.device)[None, None, :, :, None, None]
    )
    return torch.fft.ifft2(spec, dim=(2, 3)).real.reshape(B, L, N, D).to(x.dtype)


def context_filter(grid: tuple[int, int], cutoff: Optional[float]):
    """A ``FeatureRecorder`` variant that low-passes the window's keys and values."""

    def transform(layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return lowpass_tokens(k, grid, cutoff), lowpass_tokens(v, grid, cutoff)

    return transform


def gaussian_map(
    masks: list[np.ndarray], shape: tuple[int, int], *, padding: float = 1.5, scale: float = 1.5
) -> np.ndarray:
    """[H, W] float in [0, 1]: each (warped, target-position) mask's box Gaussian, prob-OR combined.
    ``masks``: bool [H, W] each; an empty mask contributes nothing."""
    H, W = shape
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    keep = np.ones((H, W))
    for m in masks:
        yy, xx = np.nonzero(np.asarray(m))
        if len(xx) == 0:
            continue
        x0, x1, y0, y1 = xx.min(), xx.max(), yy.min(), yy.max()
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        sx = max(1.0, 0.5 * (x1 - x0 + 1) * (1 + padding) * scale)
        sy = max(1.0, 0.5 * (y1 - y0 + 1) * (1 + padding) * scale)
        g = np.exp(-((xs - cx) ** 2 / (2 * sx**2) + (ys - cy) ** 2 / (2 * sy**2)))
        keep *= 1 - np.clip(g / g.max(), 0, 1)
    return 1 - keep
