"""Adaptive distribution self-rectification (ADSR) and the feature warp of a drag target.

ADSR keeps the optimised latent in the distribution the denoiser expects (DragStream):
after every optimisation step the chunk's noisy latent is re-standardised per (frame, channel) to the
mean / standard deviation it had before the drag, once more globally after the loop, and at every
denoising step the chunk's x0 prediction is re-standardised to the global statistics of the last few
chunks' clean latents together with itself (the paper's "recent neighbours"). Unbiased std, as the
reference does.

The warp brings the reference features (the previous chunk's last latent frame) to where the drag
says the object goes: every token of the object's mask is forward-splatted (nearest token) to its
displaced position, so the target region and its features come from the same mapping, for any
trajectory type (translation, deformation, rotation) without inverting it.
Legend: C channels, F frames, h/w token grid, H/W pixels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["restandardize", "rectify_x0", "mask_tokens", "splat_features"]


def restandardize(x: torch.Tensor, ref: torch.Tensor, dims: Sequence[int] | None) -> torch.Tensor:
    """(x - mean x) / std x * std ref + mean ref over ``dims`` (None: global scalars)."""
    if dims is None:
        mx, sx, mr, sr = x.mean(), x.std(), ref.mean(), ref.std()
    else:
        dims = tuple(dims)
        mx, sx = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True)
        mr, sr = ref.mean(dim=dims, keepdim=True), ref.std(dim=dims, keepdim=True)
    return (x - mx) / sx.clamp_min(1e-12) * sr + mr


def rectify_x0(x0: torch.Tensor, neighbours: Sequence[torch.Tensor]) -> torch.Tensor:
    """x0 [B, C, f, h, w] re-standardised to the global statistics of its neighbours' clean latents
    (each [B, C, f_i, h, w]) joined with itself; unchanged without neighbours."""
    if not neighbours:
        return x0
    pool = torch.cat([*[n.to(x0.dtype) for n in neighbours], x0], dim=2)
    return restandardize(x0, pool, None)


def mask_tokens(mask: np.ndarray, token: int) -> np.ndarray:
    """Pixel mask [H, W] -> token centres [N, 2] (x, y) in pixels of the tokens it covers at least half of."""
    m = np.asarray(mask, np.float64)
    H, W = m.shape
    if H % token or W % token:
        raise ValueError(f"mask {W}x{H} is not a whole number of {token}-px tokens")
    cover = m.reshape(H // token, token, W // token, token).mean(axis=(1, 3))  # [h, w]
    ty, tx = np.nonzero(cover >= 0.5)
    return np.stack([tx * token + (token - 1) / 2, ty * token + (token - 1) / 2], axis=1)


def splat_features(
    ref: torch.Tensor, src: np.ndarray, dst: np.ndarray, token: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-splat reference features [C, h, w] from token centres ``src`` [N, 2] (pixels) to ``dst``
    [N, 2] (nearest token). Returns the warped features [C, h, w] (zeros elsewhere) and the target mask
    [h, w] bool; destinations outside the grid are dropped; a later source wins a shared target."""
    C, h, w = ref.shape
    s = np.floor(np.asarray(src, np.float64) / token).astype(int)
    d = np.rint(np.asarray(dst, np.float64) / token - (token - 1) / (2 * token)).astype(int)  # nearest token
    ok = (
        (d[:, 0] >= 0)
        & (d[:, 0] < w)
        & (d[:, 1] >= 0)
        & (d[:, 1] < h)
        & (s[:, 0] >= 0)
        & (s[:, 0] < w)
        & (s[:, 1] >= 0)
        & (s[:, 1] < h)
    )
    s, d = torch.from_numpy(s[ok]).to(ref.device), torch.from_numpy(d[ok]).to(ref.device)
    out = torch.zeros_like(ref)
    target = torch.zeros(h, w, dtype=torch.bool, device=ref.device)
    out[:, d[:, 1], d[:, 0]] = ref[:, s[:, 1], s[:, 0]]
    target[d[:, 1], d[:, 0]] = True
    return out, target
