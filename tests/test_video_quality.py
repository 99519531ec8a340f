"""Video-quality figures of the evaluations (PSNR / SSIM of frames 1.. against the ground truth)
and the held-out contact sheet written next to the report."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from trackstream.eval.metrics import video_psnr, video_ssim
from trackstream.eval.stream_samples import write_contact_sheet


def _smooth_video(seed: int = 0, frames: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (frames, 32, 32, 3)).astype(np.float64)
    return np.stack([gaussian_filter(f, (3, 3, 0)) * 3 - 256 for f in raw]).clip(0, 255).astype(np.uint8)


def _reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 with scipy's Gaussian filter, valid region only (independent of torch)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    f = lambda z: gaussian_filter(z, 1.5, truncate=3.5, mode="constant")  # noqa: E731
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s[5:-5, 5:-5].mean())


def test_psnr_and_ssim_against_the_ground_truth():
    gt = _smooth_video()
    assert video_ssim(gt, gt) == pytest.approx(1.0) and video_psnr(gt, gt) == float("inf")
    rng = np.random.default_rng(1)
    noisy = (gt.astype(int) + rng.integers(-40, 41, gt.shape)).clip(0, 255).astype(np.uint8)
    ref = np.mean([_reference_ssim(noisy[t, :, :, c], gt[t, :, :, c]) for t in range(1, len(gt)) for c in range(3)])
    assert video_ssim(noisy, gt) == pytest.approx(ref, rel=1e-9)
    mse = np.mean((noisy[1:].astype(float) - gt[1:]) ** 2)
    assert video_psnr(noisy, gt) == pytest.approx(10 * np.log10(255**2 / mse))
    # frame 0 is the given first frame: a wrong frame 0 changes nothing
    wrong0 = noisy.copy()
    wrong0[0] = 0
    assert video_ssim(wrong0, gt) == video_ssim(noisy, gt) and video_psnr(wrong0, gt) == video_psnr(noisy, gt)
    # a coherent video off by one pixel scores far above per-pixel noise of the same colour statistics
    shifted = np.roll(gt, 1, axis=2)
    mean, std = gt.mean(axis=(1, 2), keepdims=True), gt.std(axis=(1, 2), keepdims=True)
    speckle = (mean + std * rng.standard_normal(gt.shape)).clip(0, 255).astype(np.uint8)
    assert video_ssim(shifted, gt) > 2 * video_ssim(speckle, gt)
    with pytest.raises(ValueError, match="differ in shape"):
        video_ssim(gt[:, :16], gt)


def test_contact_sheet_has_one_row_per_model_and_clip(tmp_path):
    import matplotlib.image

    vids = np.stack([_smooth_video(s, frames=9) for s in range(2)])  # [clips 2, T 9, 32, 32, 3]
    path = write_contact_sheet(tmp_path / "samples.png", [("ground truth", vids), ("student", 255 - vids)])
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > img.shape[1] / 2  # 4 strips of 3 frames stacked
    with pytest.raises(ValueError, match="no rows"):
        write_contact_sheet(tmp_path / "x.png", [])
