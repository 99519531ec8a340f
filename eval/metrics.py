"""Video metrics, each with its protocol in the docstring: EPE of re-tracked points, PSNR and SSIM
of generated frames against the ground truth (frames 1..; frame 0 is the given first frame), ObjMC
(DragAnything) and DAI (GoodDrag) for drags. Distribution metrics (FID, FVD) are in eval/frechet.py."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["epe", "track_epe", "video_psnr", "video_ssim", "objmc", "entity_point", "nearest_track", "dai"]


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


def track_epe(frames: np.ndarray, tracks: np.ndarray, visibility: np.ndarray, tracker) -> tuple[float, np.ndarray]:
    """EPE of a generated video against its conditioning tracks (MotionStream / Motion Prompting).

    Protocol: each input track is queried at its first visible frame (t, x, y) and re-tracked through
    the uint8 ``frames`` [T, H, W, 3] by ``tracker`` (data.trackers: LK on CPU, CoTracker3 with a local
    checkpoint); EPE = mean over (frame, track) where the INPUT is visible of |p_tracked - p_input|.
    The tracker's own visibility is ignored: a point the tracker loses keeps its last estimate and its
    error counts, so losing points is never rewarded. Occlusion: frames where the input marks a point
    hidden are not scored; re-acquisition: when the input shows it again it is scored again, at the
    tracker's estimate for that frame (a tracker that cannot re-find it pays for it). Tracks never
    visible are dropped. Returns (EPE, the tracker's tracks [T, N, 2])."""
    tracks, visibility = np.asarray(tracks, np.float32), np.asarray(visibility, bool)
    seen = visibility.any(axis=0)
    t0 = np.argmax(visibility, axis=0)  # first visible frame of each track
    n = np.arange(tracks.shape[1])
    queries = np.concatenate([t0[:, None].astype(np.float32), tracks[t0, n]], axis=1)[seen]  # [N', 3] (t, x, y)
    pred, _ = tracker.track(np.asarray(frames), queries)
    return epe(pred, tracks[:, seen], visibility[:, seen]), pred


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


def entity_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of an entity's representative point: the argmax of the L2 distance transform of its binary
    mask [H, W] (the centre of the largest inscribed circle; DragAnything's choice, cv2 DIST_L2, mask 5)."""
    import cv2

    m = np.asarray(mask).astype(np.uint8)
    if m.ndim != 2 or not m.any():
        raise ValueError(f"entity mask must be a non-empty [H, W] array, got shape {m.shape} with {int(m.sum())} pixels")
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)  # first maximum in row-major order
    return int(x), int(y)


def nearest_track(tracks: np.ndarray, point: tuple[float, float]) -> int:
    """Index of the track [T, N, 2] whose frame-0 position is nearest to ``point`` (x, y)."""
    d = np.linalg.norm(np.asarray(tracks)[0] - np.asarray(point, dtype=np.float64)[None], axis=-1)
    return int(np.argmin(d))


def objmc(pred: list, gt: list) -> float:
    """ObjMC (DragAnything, ECCV 2024): one flat mean, over all videos, entities and frames (frame 0
    included), of the Euclidean distance between the generated and the intended trajectory.

    ``pred`` / ``gt``: one entry per video, each [E, T, 2] (x, y) pixels, or a dict {entity: [[x, y], ...]}
    (DragAnything's JSON); entities are matched by position (arrays) or key (dicts; only keys in both
    count, as its script does). Positions are rounded to integer pixels first, as its trajectory
    extraction stores them. The value is in pixels of the trajectories' resolution: report it."""
    if len(pred) != len(gt):
        raise ValueError(f"objmc: {len(pred)} predicted videos but {len(gt)} ground-truth videos")
    dists = []
    for p, g in zip(pred, gt):
        if isinstance(p, dict) or isinstance(g, dict):
            keys = [k for k in g if k in p]
            p, g = [p[k] for k in keys], [g[k] for k in keys]
        p, g = np.rint(np.asarray(p, np.float64)), np.rint(np.asarray(g, np.float64))
        if p.size == 0:
            continue
        if p.shape != g.shape or p.shape[-1] != 2:
            raise ValueError(f"objmc: trajectories {p.shape} and {g.shape} must both be [E, T, 2]")
        dists.append(np.linalg.norm(p - g, axis=-1).ravel())
    if not dists:
        return float("nan")
    return float(np.concatenate(dists).mean())


def dai(edited: np.ndarray, original: np.ndarray, handles, targets, *, gamma: int = 1,
        per_point: str = "mean") -> float:
    """DAI (GoodDrag, ICLR 2025): how well the content at each handle of the original image arrived at
    its target in the edited image. Images [H, W, 3] uint8 (scaled to [0, 1]) or float in [0, 1];
    handles / targets [N, 2] integer (x, y) pixels; Omega(I, p) = the (2 gamma + 1)^2 patch at p.

        DAI = 1/N sum_i || Omega(edited, t_i) - Omega(original, h_i) ||^2 / (1 + 2 gamma)^2

    squared differences summed over the patch and the channels. ``per_point="mean"`` is the paper's
    1/N (ours); ``"reference"`` replicates GoodDrag's evaluation code, which divides by N twice (the
    two agree for single-point drags). Patches must lie inside both images (a ValueError otherwise)."""
    def prep(img):
        a = np.asarray(img)
        return a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)

    e, o = prep(edited), prep(original)
    h = np.rint(np.asarray(handles, np.float64)).astype(int).reshape(-1, 2)
    t = np.rint(np.asarray(targets, np.float64)).astype(int).reshape(-1, 2)
    if e.shape != o.shape or e.ndim != 3 or h.shape != t.shape or len(h) == 0:
        raise ValueError(f"dai: images {e.shape} / {o.shape} and points {h.shape} / {t.shape} do not match")
    if per_point not in ("mean", "reference"):
        raise ValueError(f"dai: per_point={per_point!r}; choose mean (1/N, the paper) or reference (1/N^2, GoodDrag's code)")
    H, W = e.shape[:2]
    total = 0.0
    for (hx, hy), (tx, ty) in zip(h, t):
        for x, y in ((hx, hy), (tx, ty)):
            if not (gamma <= x < W - gamma and gamma <= y < H - gamma):
                raise ValueError(f"dai: the {2 * gamma + 1}px patch at ({x}, {y}) leaves the {W}x{H} image; lower gamma")
        a = e[ty - gamma: ty + gamma + 1, tx - gamma: tx + gamma + 1]
        b = o[hy - gamma: hy + gamma + 1, hx - gamma: hx + gamma + 1]
        total += float(((a - b) ** 2).sum()) / (1 + 2 * gamma) ** 2
    n = len(h)
    return total / n if per_point == "mean" else total / n / n
