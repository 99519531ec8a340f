"""One benchmark video (``Sample``): what a model is asked to generate and what it is scored against. Its own
module so that every benchmark source (``eval.benchmarks``, ``eval.davis``, ``eval.movebench``) builds it
without importing the others."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Sample"]


@dataclass
class Sample:
    id: str
    frames: np.ndarray  # uint8 [T, H, W, 3], the ground truth (frame 0 = the given first frame)
    tracks: np.ndarray  # float32 [T, N, 2] (x, y) pixels
    visibility: np.ndarray  # bool [T, N]
    caption: str = ""

    @property
    def first_frame(self) -> np.ndarray:
        return self.frames[0]
