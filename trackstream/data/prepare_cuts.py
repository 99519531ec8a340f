"""Scene cuts in decoded frames, for the shard pipeline (trackstream/data/prepare_worker.py).

A hard cut replaces the whole picture between two frames, so the colour distribution jumps; motion within a
shot moves pixels but keeps most of the colours. The test is therefore the distance between consecutive
frames' colour histograms (HSV, 16 bins per channel, each channel normalised to sum 1, L1 distance averaged
over the channels: 0 for the same colours, 2 for disjoint ones), computed on a 64x64 thumbnail so that it
costs little beside decoding. A sample across a cut would teach a tracker-conditioned model to follow tracks
that mostly vanish at the cut (the tracker loses every point there).
"""

from __future__ import annotations

import cv2
import numpy as np

_BINS = 16
_THUMB = 64
_RANGES = (180, 256, 256)  # OpenCV's 8-bit HSV: hue in [0, 180)


def frame_histograms(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB frames [T, H, W, 3] -> [T, 3 * 16] HSV histograms, each channel summing to 1."""
    out = np.empty((len(frames), 3 * _BINS), np.float32)
    for i, frame in enumerate(frames):
        hsv = cv2.cvtColor(cv2.resize(frame, (_THUMB, _THUMB), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2HSV)
        for c, top in enumerate(_RANGES):
            counts = np.bincount((hsv[..., c].ravel().astype(np.int32) * _BINS) // top, minlength=_BINS)
            out[i, c * _BINS : (c + 1) * _BINS] = counts / counts.sum()
    return out


def histogram_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L1 distance of histograms (``frame_histograms`` rows, broadcast), averaged over the 3 channels: 0..2."""
    return np.abs(a - b).sum(-1) / 3


def cut_scores(frames: np.ndarray) -> np.ndarray:
    """[T - 1] distance between frame t and frame t + 1 (``histogram_distance``)."""
    hists = frame_histograms(frames)
    return histogram_distance(hists[1:], hists[:-1])


def find_cuts(frames: np.ndarray, threshold: float) -> list[int]:
    """Frames that start a new shot: t where the distance from frame t - 1 to t exceeds ``threshold``."""
    return [int(t) + 1 for t in np.flatnonzero(cut_scores(frames) > threshold)]
