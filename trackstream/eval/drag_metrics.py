"""Drag metrics, each with its protocol in the docstring: ObjMC (DragAnything) over entity trajectories,
the entity point and nearest track it matches them by, and DAI (GoodDrag) for dragged content.
The video and EPE metrics are in ``metrics``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["entity_point", "nearest_track", "objmc", "dai"]


def entity_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of an entity's representative point: the argmax of the L2 distance transform of its binary
    mask [H, W] (the centre of the largest inscribed circle; DragAnything's choice, cv2 DIST_L2, mask 5)."""
    import cv2

    m = np.asarray(mask).astype(np.uint8)
    if m.ndim != 2 or not m.any():
        raise ValueError(
            f"entity mask must be a non-empty [H, W] array, got shape {m.shape} with {int(m.sum())} pixels"
        )
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


def dai(
    edited: np.ndarray, original: np.ndarray, handles, targets, *, gamma: int = 1, per_point: str = "mean"
) -> float:
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
        raise ValueError(
            f"dai: per_point={per_point!r}; choose mean (1/N, the paper) or reference (1/N^2, GoodDrag's code)"
        )
    H, W = e.shape[:2]
    total = 0.0
    for (hx, hy), (tx, ty) in zip(h, t):
        for x, y in ((hx, hy), (tx, ty)):
            if not (gamma <= x < W - gamma and gamma <= y < H - gamma):
                raise ValueError(
                    f"dai: the {2 * gamma + 1}px patch at ({x}, {y}) leaves the {W}x{H} image; lower gamma"
                )
        a = e[ty - gamma : ty + gamma + 1, tx - gamma : tx + gamma + 1]
        b = o[hy - gamma : hy + gamma + 1, hx - gamma : hx + gamma + 1]
        total += float(((a - b) ** 2).sum()) / (1 + 2 * gamma) ** 2
    n = len(h)
    return total / n if per_point == "mean" else total / n / n
