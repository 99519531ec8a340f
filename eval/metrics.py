"""Video metrics, each with its protocol in the docstring: EPE of re-tracked points, PSNR and SSIM
of generated frames against the ground truth (frames 1..; frame 0 is the given first frame)."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["epe", "video_psnr", "video_ssim"]


def epe(pred_tracks, gt_tracks, visibility) -> float:
    """Mean end-point error (pixels) over entries where `visibility` is True.

    Shapes [..., T, N, 2] for tracks and [..., T, N] for visibility; numpy or torch. Returns NaN if
    nothing is visible (the caller decides whether that video counts).
    """
    p, g, v = (x if torch.is_tensor(x) else torch.tensor(np.asarray(x)) for x in (pred_tracks, gt_tracks, visibility))
    if p.shape != g.shape or p.shape[-1] != 2 or v.shape != p.shape[:-1]:
        raise ValueError(
            f"epe needs tracks [..., T, N, 2] and visibility [..., T, N]; got {tuple(p.shape)}, "
            f"{tuple(g.shape)}, {tuple(v.shape)}"
        )
    v = v.bool().to(p.device)
    if not bool(v.any()):
        return float("nan")
    err = torch.linalg.vector_norm(p.double() - g.double().to(p.device), dim=-1)  # [..., T, N]
    return float(err[v].mean())


def video_psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """PSNR (dB, peak 255) of uint8 frames [T, H, W, 3] against the ground truth over frames 1..
    (frame 0 is the given first frame). One MSE over all those pixels, not a mean of per-frame PSNRs."""
    if pred.shape != gt.shape:
        raise ValueError(f"video_psnr: prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    mse = float(np.mean((pred[1:].astype(np.float64) - gt[1:].astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def video_ssim(pred: np.ndarray, gt: np.ndarray, *, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004: Gaussian window sigma 1.5 truncated at 3.5 sigma, K1 0.01,
    K2 0.03, peak 255, per RGB channel, borders the window does not fit excluded) of uint8 frames
    [T, H, W, 3] against the ground truth over frames 1... Unlike PSNR it falls for per-pixel noise
    whose average colour is right."""
    if pred.shape != gt.shape:
        raise ValueError(f"video_ssim: prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    r = int(3.5 * sigma + 0.5)
    g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    g = g / g.sum()

    def blur(x: torch.Tensor) -> torch.Tensor:  # [N, 1, H, W] -> [N, 1, H - 2r, W - 2r] (separable, valid)
        x = torch.nn.functional.conv2d(x, g.view(1, 1, -1, 1))
        return torch.nn.functional.conv2d(x, g.view(1, 1, 1, -1))

    to = lambda v: torch.from_numpy(np.ascontiguousarray(v[1:])).double().permute(0, 3, 1, 2).reshape(-1, 1, *v.shape[1:3])  # noqa: E731
    x, y = to(pred), to(gt)  # [(T-1) * 3, 1, H, W]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(ssim.mean())
