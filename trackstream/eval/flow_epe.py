"""Flow EPE, MoveBench's motion metric: how far the generated video's optical flow is from the real video's.

Protocol (``flow_epe``; which parts are Wan-Move's published facts and which are our assumptions is listed
in docs/movebench.md, since MoveBench's ``bench.py`` / ``utils/epe.py`` were not readable here):

* RAFT-large (trackstream/models/raft.py, ``raft-things.pth``) at the videos' own size (480x832 on
  MoveBench; padded to multiples of 8 and unpadded inside ``RAFT.flow``), ``raft.iters`` iterations;
* forward flow of every consecutive pair (t, t + 1), t = 0 .. T - 2, in the generated and in the real video;
* per pair, the mean over pixels (or over the pixels of ``mask``) of the end-point distance
  ||F_gen(p) - F_real(p)||_2; the video's EPE is the mean over its pairs (equal weight: every pair has the
  same pixel count). A benchmark figure is the mean of the videos' EPEs.

This is unlike ``metrics.motion_epe``, the project's track EPE (a point tracker re-tracks the conditioning
points in the generated video): this one needs no tracks and compares motion everywhere in the frame.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

__all__ = ["flow_epe", "video_flow"]


def _check(v: np.ndarray, what: str) -> None:
    if not isinstance(v, np.ndarray) or v.dtype != np.uint8 or v.ndim != 4 or v.shape[-1] != 3:
        shape = getattr(v, "shape", None)
        raise ValueError(f"flow_epe: the {what} video must be uint8 [T, H, W, 3], got {shape}")
    if v.shape[0] < 2:
        raise ValueError(f"flow_epe: the {what} video has {v.shape[0]} frame(s); flow needs at least 2")


def video_flow(video: np.ndarray, raft, *, batch: int = 4) -> torch.Tensor:
    """Forward flow of consecutive frames: uint8 [T, H, W, 3] -> float32 [T - 1, 2, H, W] (CPU), ``batch``
    pairs per RAFT call."""
    frames = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2)  # [T, 3, H, W] uint8
    out = []
    for s in range(0, frames.shape[0] - 1, batch):
        e = min(s + batch, frames.shape[0] - 1)
        out.append(raft.flow(frames[s:e], frames[s + 1 : e + 1]).cpu())
    return torch.cat(out, dim=0)


def flow_epe(
    generated: np.ndarray,
    real: np.ndarray,
    raft,
    *,
    mask: Optional[np.ndarray] = None,
    batch: int = 4,
) -> float:
    """Mean end-point error (pixels) between the RAFT flows of ``generated`` and ``real`` (uint8
    [T, H, W, 3], same shape), over consecutive frame pairs (module docstring). ``mask``: bool [H, W] (one
    region for every pair) or [T, H, W] (pair t uses mask[t]); None: every pixel."""
    _check(generated, "generated")
    _check(real, "real")
    if generated.shape != real.shape:
        raise ValueError(f"flow_epe: generated {generated.shape} and real {real.shape} videos differ in shape")
    t, h, w = real.shape[:3]
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape == (h, w):
            mask = np.broadcast_to(mask, (t - 1, h, w))
        elif mask.shape[1:] == (h, w) and mask.shape[0] >= t - 1:
            mask = mask[: t - 1]
        else:
            raise ValueError(f"flow_epe: mask {mask.shape} fits neither [H, W] = {(h, w)} nor [T, H, W]")
    err = torch.linalg.vector_norm(
        video_flow(generated, raft, batch=batch) - video_flow(real, raft, batch=batch), dim=1
    )
    err = err.double().numpy()  # [T - 1, H, W]
    if mask is None:
        return float(err.mean())
    per_pair = [err[i][mask[i]].mean() for i in range(t - 1) if mask[i].any()]
    if not per_pair:
        raise ValueError("flow_epe: the mask selects no pixel")
    return float(np.mean(per_pair))
