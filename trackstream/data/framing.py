"""One rule for fitting a frame to a network's size, and the same transform for the tracks drawn on it.

    fit = plan_fit(h, w, height=H, width=W, mode="crop")   # how an h x w frame becomes H x W
    frames = fit.frames(frames)                            # [T, h, w, C], [h, w, C] or [h, w] -> H x W
    tracks, vis = fit.tracks(tracks, vis)                  # [T, N, 2] pixels of the source -> of the fitted frame

Modes (``FIT_MODES``):

* ``crop`` (the default everywhere: ``prepare``, ``generate``, ``transfer``, ``camera``, ``inputs`` and the
  demo's uploads): scale the frame so it covers H x W, keeping its aspect ratio, and cut the centre. Nothing
  is distorted; what lies outside the centre is lost, and tracks there leave the frame.
* ``resize``: scale each axis to H x W. Nothing is lost; a frame of another aspect ratio is squashed
  (640x272 -> 64x64 scales x by 0.1 and y by 0.235).

Pixel centres sit at integers (the tracks' convention), so a source position p lands on
(p + 0.5) * s - 0.5 - cut, with s the scale each axis was resized by and cut the pixels removed on the left /
top. Points outside the fitted frame become invisible and are held within ``TRACK_MARGIN`` frame sizes of it
(where ``generate`` accepts tracks). A frame already at H x W is returned as it is, its tracks untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from trackstream.data.track_inputs import TRACK_MARGIN

__all__ = ["FIT_MODES", "Fit", "check_fit_mode", "fit_frames", "hold_tracks", "plan_fit"]

FIT_MODES = ("crop", "resize")


def check_fit_mode(mode: str, field: str = "--fit") -> str:
    if mode not in FIT_MODES:
        raise ValueError(f"{field}={mode!r} is not a fitting rule; choose one of {', '.join(FIT_MODES)}")
    return mode


@dataclass(frozen=True)
class Fit:
    """How a ``source`` (h, w) frame becomes a ``size`` (H, W) one: resized to ``resized`` (h', w'), then
    ``offset`` (top, left) pixels cut (module docstring)."""

    source: tuple[int, int]
    size: tuple[int, int]
    mode: str
    resized: tuple[int, int]
    offset: tuple[int, int]
    shrink: bool  # INTER_AREA (no aliasing when shrinking), else bilinear

    @property
    def identity(self) -> bool:
        return self.source == self.size

    @property
    def scale(self) -> np.ndarray:
        """(x, y) factors the axes are resized by."""
        return np.array([self.resized[1] / self.source[1], self.resized[0] / self.source[0]], np.float64)

    def describe(self) -> str:
        (h, w), (H, W), (rh, rw) = self.source, self.size, self.resized
        sx, sy = self.scale
        if self.mode == "resize":
            return f"{w}x{h} -> {W}x{H} by resize: x scaled by {sx:.3g}, y by {sy:.3g}"
        return f"{w}x{h} -> {W}x{H} by crop: scaled by {sx:.3g} to {rw}x{rh}, {rw - W} columns and {rh - H} rows cut"

    def frames(self, frames: np.ndarray, *, interpolation: int | None = None) -> np.ndarray:
        """A map [h, w], a frame [h, w, C] or frames [T, h, w, C] at the fitted size, the dtype kept.
        ``interpolation``: an OpenCV flag in place of the rule's (a depth map takes INTER_NEAREST)."""
        frames = np.asarray(frames)
        stack = frames if frames.ndim == 4 else frames[None]
        if stack.shape[1:3] != self.source:
            (h, w), got = self.source, stack.shape[1:3]
            raise ValueError(f"frames are {got[1]}x{got[0]} but this fit is for {w}x{h} frames")
        if self.identity:
            return frames.copy()
        (H, W), (rh, rw), (top, left) = self.size, self.resized, self.offset
        interp = interpolation if interpolation is not None else cv2.INTER_AREA if self.shrink else cv2.INTER_LINEAR
        out = np.empty((len(stack), H, W, *stack.shape[3:]), dtype=stack.dtype)
        for i, frame in enumerate(stack):
            resized = cv2.resize(frame, (rw, rh), interpolation=interp).reshape(rh, rw, *stack.shape[3:])
            out[i] = resized[top : top + H, left : left + W]
        return out if frames.ndim == 4 else out[0]

    def points(self, points: np.ndarray) -> np.ndarray:
        """Pixel (x, y) positions [..., 2] of the source frame -> of the fitted frame (unclipped)."""
        top, left = self.offset
        return (np.asarray(points, np.float64) + 0.5) * self.scale - 0.5 - np.array([left, top])

    def to_source(self, points: np.ndarray) -> np.ndarray:
        """The inverse of ``points``: positions [..., 2] in the fitted frame -> in the source frame."""
        top, left = self.offset
        return (np.asarray(points, np.float64) + 0.5 + np.array([left, top])) / self.scale - 0.5

    def tracks(self, tracks: np.ndarray, visibility: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(tracks float32 [T, N, 2], visibility bool [T, N]) in the fitted frame's pixels: positions moved as
        the pixels were, held within ``TRACK_MARGIN`` frame sizes of the frame, and points the fit leaves outside
        the frame invisible (a frame not refitted keeps its visibility as given). ``visibility`` None: all
        visible before the fit."""
        tracks = np.asarray(tracks, np.float32)
        vis = np.ones(tracks.shape[:2], bool) if visibility is None else np.asarray(visibility, bool)
        if self.identity:
            return hold_tracks(tracks, self.size), vis
        H, W = self.size
        moved = self.points(tracks)
        inside = (moved >= -0.5).all(-1) & (moved[..., 0] <= W - 0.5) & (moved[..., 1] <= H - 0.5)
        return hold_tracks(moved, self.size), vis & inside

    def tracks_in_source(self, tracks: np.ndarray) -> np.ndarray:
        """The inverse of ``tracks``: positions [T, N, 2] in the fitted frame -> float32 in the source frame's
        pixels, held within ``TRACK_MARGIN`` frame sizes of it (tracks made on the fitted frame, written for
        the source image; ``tracks`` takes them back exactly)."""
        if self.identity:
            return hold_tracks(np.asarray(tracks, np.float32), self.source)
        return hold_tracks(self.to_source(tracks), self.source)


def hold_tracks(tracks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 tracks held within ``TRACK_MARGIN`` frame sizes of a ``size`` (H, W) frame, where ``generate``
    accepts them: a tracker keeps estimating a point it lost, and the estimate may wander far off; held, a
    point outside the frame stays outside it."""
    wh = np.array([size[1], size[0]], np.float64)
    return np.clip(tracks, -TRACK_MARGIN * wh, (1 + TRACK_MARGIN) * wh).astype(np.float32)


def plan_fit(h: int, w: int, *, height: int, width: int, mode: str = "crop") -> Fit:
    """The fit of an ``h`` x ``w`` frame to ``height`` x ``width`` by ``mode`` (module docstring)."""
    check_fit_mode(mode, field="fit")
    if min(h, w, height, width) < 1:
        raise ValueError(f"cannot fit a {w}x{h} frame to {width}x{height}: sizes must be positive")
    if mode == "resize":
        return Fit((h, w), (height, width), mode, (height, width), (0, 0), shrink=min(height / h, width / w) < 1)
    scale = max(height / h, width / w)  # cover (height, width), then cut the centre
    rh, rw = max(height, round(h * scale)), max(width, round(w * scale))
    return Fit((h, w), (height, width), mode, (rh, rw), ((rh - height) // 2, (rw - width) // 2), shrink=scale < 1)


def fit_frames(frames: np.ndarray, *, height: int, width: int, mode: str = "crop") -> np.ndarray:
    """Frames [T, h, w, C], a frame [h, w, C] or a map [h, w] fitted to ``height`` x ``width`` by ``mode``."""
    frames = np.asarray(frames)
    h, w = frames.shape[1:3] if frames.ndim == 4 else frames.shape[:2]
    return plan_fit(h, w, height=height, width=width, mode=mode).frames(frames)
