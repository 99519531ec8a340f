"""Drag metrics, each with its protocol in the docstring: ObjMC (DragAnything) over entity trajectories,
the entity point and nearest track it matches them by, DAI (GoodDrag) for dragged content, and the object
measure (``object_track``: where the object is in each frame, found from its appearance, and how much of it
is still there).
The video and EPE metrics are in ``metrics``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["OBJECT_TOLERANCE", "entity_point", "mask_centroid", "nearest_track", "objmc", "object_track", "dai"]

# a pixel still shows the object when its colour is within this mean absolute difference over R, G, B (of 255)
# of the object's first-frame pixel there: an eighth of the range, above a codec round trip's change of a flat
# colour, below the gap between a sprite and the background it covers
OBJECT_TOLERANCE = 32.0


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


def mask_centroid(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the mean pixel of a non-empty binary mask [H, W]: the point whose path ``object_track`` follows."""
    ys, xs = np.nonzero(np.asarray(mask))
    if not len(xs):
        raise ValueError("the object mask is empty: give the object's first-frame mask [H, W] with its pixels set")
    return float(xs.mean()), float(ys.mean())


def object_track(
    video: np.ndarray, mask: np.ndarray, *, tolerance: float = OBJECT_TOLERANCE
) -> tuple[np.ndarray, np.ndarray]:
    """Where the object of ``mask`` (bool [H, W], frame 0) is in each frame of ``video`` (uint8 [T, H, W, 3]),
    found from its appearance, and how much of it is still there.

    The template is frame 0's pixels inside the mask (its bounding box, the mask as the template's mask). In
    each frame it is matched over every placement wholly inside the frame (``cv2.matchTemplate``, squared
    differences over the mask's pixels only); the best placement gives the object's position, the mask's
    centroid (``mask_centroid``) carried there, so its path compares with the intended path of that
    centroid. Kept: the share of the mask's pixels that, at that placement, are within ``tolerance`` (mean
    absolute difference over R, G, B, of 255) of the template's colour: 1 where the object is there whole
    (frame 0 by construction), near 0 where it is gone, whatever a point tracker would say (an LK point lost
    on a vanished object is held at its start, so a vanished object and one that did not move score alike).
    Translation only: a turned or stretched object keeps a lower share (read it against the ground truth's).
    Returns positions float64 [T, 2] (x, y) and kept float64 [T]."""
    import cv2

    video, mask = np.asarray(video), np.asarray(mask, bool)
    if video.ndim != 4 or video.shape[-1] != 3 or mask.shape != video.shape[1:3]:
        raise ValueError(f"object_track: video {video.shape} must be [T, H, W, 3] and mask {mask.shape} its [H, W]")
    cx, cy = mask_centroid(mask)
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    frames = video.astype(np.float32)
    templ = np.ascontiguousarray(frames[0, y0:y1, x0:x1])
    inside = mask[y0:y1, x0:x1]
    weight = np.repeat(inside[..., None], 3, axis=-1).astype(np.float32)
    positions, kept = np.zeros((len(video), 2)), np.zeros(len(video))
    for t, frame in enumerate(frames):
        cost = cv2.matchTemplate(frame, templ, cv2.TM_SQDIFF, mask=weight)
        _, _, (bx, by), _ = cv2.minMaxLoc(cost)
        positions[t] = (cx + bx - x0, cy + by - y0)
        patch = frame[by : by + templ.shape[0], bx : bx + templ.shape[1]]
        kept[t] = float((np.abs(patch - templ).mean(axis=-1)[inside] <= tolerance).mean())
    return positions, kept


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
