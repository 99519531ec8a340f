"""Geometry and mask files for drag instructions: clicked paths resampled along a clamped B-spline,
signed on-screen angles, rotations about a centre, and DragStream's 0/255 PNG masks.

The trajectory types of ``instructions`` build on these.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["resample_path", "signed_angle", "rotate_points", "read_mask", "write_mask"]


def _bspline(control: np.ndarray, samples: int) -> np.ndarray:
    """Clamped (open-uniform) B-spline of degree min(3, n - 1) through ``control`` [n, 2], densely sampled."""
    n = len(control)
    k = min(3, n - 1)
    knots = np.concatenate([np.zeros(k), np.linspace(0, 1, n - k + 1), np.ones(k)])
    u = np.linspace(0, 1, samples)
    u[-1] -= 1e-12  # the right end belongs to the last span

    def basis(i: int, d: int, t: np.ndarray) -> np.ndarray:  # Cox-de Boor
        if d == 0:
            return ((knots[i] <= t) & (t < knots[i + 1])).astype(np.float64)
        a = knots[i + d] - knots[i]
        b = knots[i + d + 1] - knots[i + 1]
        left = (t - knots[i]) / a * basis(i, d - 1, t) if a > 0 else 0.0
        right = (knots[i + d + 1] - t) / b * basis(i + 1, d - 1, t) if b > 0 else 0.0
        return left + right

    weights = np.stack([basis(i, k, u) for i in range(n)], axis=1)  # [samples, n]
    return weights @ control


def resample_path(control_points, count: int, *, grid: int = 8000) -> np.ndarray:
    """Clicked points [n, 2] -> ``count`` points equally spaced in arc length along their clamped
    B-spline (DragStream: count 2 for an edit, 1 + 3 x chunks for an animation). One click repeats."""
    pts = np.asarray(control_points, np.float64).reshape(-1, 2)
    if len(pts) == 0 or count < 1:
        raise ValueError(f"a path needs at least one control point and count >= 1 (got {len(pts)}, {count})")
    if len(pts) == 1:
        return np.repeat(pts, count, axis=0)
    dense = _bspline(pts, grid)
    seg = np.linalg.norm(np.diff(dense, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] == 0:
        return np.repeat(pts[:1], count, axis=0)
    targets = np.linspace(0, s[-1], count)
    return np.stack([np.interp(targets, s, dense[:, 0]), np.interp(targets, s, dense[:, 1])], axis=1)


def signed_angle(center, start, end) -> float:
    """Degrees from (start - center) to (end - center), positive = clockwise on screen (y down)."""
    v1 = np.asarray(start, np.float64) - np.asarray(center, np.float64)
    v2 = np.asarray(end, np.float64) - np.asarray(center, np.float64)
    cross = v1[0] * v2[1] - v1[1] * v2[0]
    return math.degrees(math.atan2(cross, float(v1 @ v2)))


def rotate_points(points: np.ndarray, center: np.ndarray, degrees: float) -> np.ndarray:
    """``points`` [N, 2] turned by ``degrees`` about ``center`` (positive: clockwise on screen)."""
    a = math.radians(degrees)  # positive = clockwise on screen: x' = c + R (x - c) with y pointing down
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (points - center) @ r.T + center


def write_mask(path: Path, mask: np.ndarray) -> None:
    """A bool mask [H, W] as a 0/255 PNG (DragStream's mask files)."""
    import cv2

    cv2.imwrite(str(path), np.asarray(mask, bool).astype(np.uint8) * 255)


def read_mask(path: Path) -> np.ndarray:
    """A PNG mask -> bool [H, W] (> 0, as DragStream reads them back)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"mask {path} could not be read (a PNG mask next to the trajectory JSON)")
    return img > 0
