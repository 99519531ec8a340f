"""The tracker interface and grid queries; the contract is described in ``trackstream.data.trackers``."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch


def grid_queries(height: int, width: int, grid_size: int, t: int = 0) -> np.ndarray:
    """Queries [grid_size**2, 3] as (t, x, y): the centres of a grid_size x grid_size cell grid.

    Cell centres keep half a cell of margin to the border, so no query sits on the image edge where
    neither a tracker nor a rendered surface is well defined. Row-major: y outer, x inner.
    """
    if grid_size < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size}")
    xs = (np.arange(grid_size) + 0.5) * width / grid_size - 0.5
    ys = (np.arange(grid_size) + 0.5) * height / grid_size - 0.5
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    q = np.stack([np.full(gx.size, float(t)), gx.ravel(), gy.ravel()], axis=1)
    return q.astype(np.float32)


class Tracker(ABC):
    """Track query points through a video; see the module docstring for the contract."""

    def track(self, video, queries):
        is_torch = torch.is_tensor(video)
        frames = video.detach().cpu().numpy() if is_torch else np.asarray(video)
        q = queries.detach().cpu().numpy() if torch.is_tensor(queries) else np.asarray(queries)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"video must be uint8 [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
        if q.ndim != 2 or q.shape[1] != 3:
            raise ValueError(f"queries must be [N, 3] as (t, x, y), got {tuple(q.shape)}")
        if len(q) and (q[:, 0].min() < 0 or q[:, 0].max() > frames.shape[0] - 1):
            raise ValueError(f"query frame indices must lie in [0, {frames.shape[0] - 1}]")
        tracks, vis = self._track(frames, q.astype(np.float32))
        assert tracks.shape == (frames.shape[0], len(q), 2) and vis.shape == tracks.shape[:2]
        if is_torch:
            return torch.from_numpy(tracks), torch.from_numpy(vis)
        return tracks, vis

    def without_hold(self) -> "Tracker":
        """This tracker giving every point a position in every frame: where it reports a point not seen,
        its own estimate of where the point went instead of where it was last seen; its visibility and
        its positions where visible are this tracker's. A tracker that holds nothing (CoTracker3 returns
        a position everywhere) is its own."""
        return self

    @abstractmethod
    def _track(self, frames: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frames uint8 [T, H, W, 3], queries float32 [N, 3] -> float32 [T, N, 2], bool [T, N]."""
