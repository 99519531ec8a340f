"""The person's points as live tracks: a timeline replayed into the video, and camera moves scheduled on it.

``LiveTracks`` turns the page's point messages into each chunk's tracks (below). ``camera_move`` turns a
camera instruction into the same kind of timeline: a grid of the frame on screen, lifted with its depth
(a depth model's, or a plane), moved along the path by ``data.camera_tracks`` (the code of
``trackstream camera``) and scheduled from now at the stream's frame rate, so the replay streams it at
real-time speed like a drag made by hand.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Optional

import numpy as np

from trackstream.data.camera_tracks import camera_path, camera_tracks
from trackstream.stream.demo.protocol import Camera, Points

__all__ = ["LiveTracks", "camera_move"]


class LiveTracks:
    """The person's points as a timeline, replayed into the video at the speed they were moved.

    Every ``update`` is a sample (time, positions, which slots are active / pinned). A chunk of T
    pixel frames advances a replay clock by T / fps and reads the positions at each frame's time
    (linear between samples), so a drag of 36 px made in 1.5 s moves 36 px over 1.5 s of video, wherever
    the chunk boundaries fall. The clock never passes the present (the positions hold until the next
    sample) and never lags it by more than ``max_lag`` seconds (older samples are skipped), so the
    video answers a gesture within one chunk plus the generation's lead. A pinned point holds the
    place where it was pinned.
    """

    GAP = 0.1  # seconds without a sample: the points were still (the page sends every 50 ms while moving)

    def __init__(self, slots: int, fps: float, *, max_lag: float = 2.0, max_samples: int = 512):
        self.slots, self.fps, self.max_lag = slots, float(fps), max_lag
        self.samples: deque = deque(maxlen=max_samples)  # (t, xy [S, 2], active [S], pinned [S])
        self.clock: Optional[float] = None
        self.tagged = np.zeros(slots, bool)  # its ID has been committed on content
        self.touched = False  # moved since the last drag
        self._lock = threading.Lock()  # updates arrive on the event loop while a chunk is computed

    def update(self, pts: Points, now: Optional[float] = None) -> None:
        now = time.perf_counter() if now is None else now
        with self._lock:
            while self.samples and self.samples[-1][0] > now:  # the person's input ends a scheduled camera move
                self.samples.pop()
            xy = np.zeros((self.slots, 2), np.float32)
            active, pinned = np.zeros(self.slots, bool), np.zeros(self.slots, bool)
            xy[pts.ids], active[pts.ids], pinned[pts.ids] = pts.xy, True, pts.pinned
            if self.samples:  # a pinned point stays where it was pinned
                t0, xy0, act0, pin0 = self.samples[-1]
                if now - t0 > self.GAP:  # still until just before this move (the page sends while moving)
                    self.samples.append((now - self.GAP / 2, xy0, act0, pin0))
                hold = pinned & pin0 & act0
                xy[hold] = xy0[hold]
                self.tagged &= active  # a point let go must be tagged again if it comes back
            else:
                self.tagged[:] = False
            self.samples.append((now, xy, active, pinned))
            self.touched = True

    def schedule(self, tracks: np.ndarray, vis: np.ndarray, *, now: Optional[float] = None) -> None:
        """A motion made elsewhere (tracks [T, N, 2], visibility [T, N], N <= slots: a camera move) played
        from ``now`` at the stream's frame rate in slots 0..N-1. Every point is let go first and the new ones
        are untagged: their IDs are tagged anew on the content under them in the frame on screen. A point
        out of view for a while keeps its ID (it is the same content when it comes back)."""
        now = time.perf_counter() if now is None else now
        T, N = vis.shape
        assert N <= self.slots and tracks.shape == (T, N, 2)
        with self._lock:
            xy, active, pinned = (
                np.zeros((self.slots, 2), np.float32),
                np.zeros(self.slots, bool),
                np.zeros(self.slots, bool),
            )
            self.samples.append((now, xy.copy(), active.copy(), pinned))  # let go
            self.tagged[:] = False
            for j in range(T):
                xy, active = xy.copy(), np.zeros(self.slots, bool)
                xy[:N], active[:N] = tracks[j], vis[j]
                self.samples.append((now + (j + 0.5) / self.fps, xy, active, pinned))
            self.touched = True

    def untag_all(self) -> None:
        with self._lock:
            self.tagged[:] = False

    def _at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Positions [S, 2] and activity [S] at time ``t`` (linear between samples; a slot is active
        from the sample it appears in)."""
        times = [s[0] for s in self.samples]
        k = int(np.searchsorted(times, t, side="right"))  # samples[k - 1].t <= t < samples[k].t
        if k == 0:
            return self.samples[0][1], self.samples[0][2]
        t0, xy0, act0 = self.samples[k - 1][:3]
        if k == len(self.samples):
            return xy0, act0
        t1, xy1, act1 = self.samples[k][:3]
        u = (t - t0) / max(t1 - t0, 1e-9)
        both = act0 & act1
        return np.where(both[:, None], xy0 + u * (xy1 - xy0), xy0), act0

    def for_chunk(
        self, num_frames: int, *, now: Optional[float] = None, first: bool = False
    ) -> tuple[Optional[np.ndarray], Optional[np.ndarray], np.ndarray]:
        """(tracks [T, S, 2], visibility [T, S], slots to tag before this chunk) for the next chunk of
        ``num_frames`` pixel frames; (None, None, []) while there are no points."""
        now = time.perf_counter() if now is None else now
        with self._lock:
            if not self.samples or not self.samples[-1][2].any():
                self.clock = now
                return None, None, np.zeros(0, np.int64)
            if self.clock is None or self.clock < now - self.max_lag:
                self.clock = max(self.samples[0][0], now - self.max_lag) if self.clock is not None else now
            xy_c, act_c = self._at(self.clock)
            for t, xy, act, _ in self.samples:  # skip time in which nothing moved: replay from the motion
                if t > self.clock:
                    if not (np.array_equal(xy, xy_c) and np.array_equal(act, act_c)):
                        break
                    self.clock = min(t, now)
            times = [min(self.clock + (j + 1) / self.fps, now) for j in range(num_frames)]
            frames = [self._at(t) for t in times]
            self.clock = times[-1]
            while len(self.samples) > 1 and self.samples[1][0] <= self.clock:  # consumed: keep one before it
                self.samples.popleft()
            tracks = np.stack([f[0] for f in frames]).astype(np.float32)  # [T, S, 2]
            vis = np.stack([f[1] for f in frames])  # [T, S]
            seen = vis.any(axis=0)
            new = np.flatnonzero(seen & ~self.tagged) if not first else np.zeros(0, np.int64)
            self.tagged |= seen
            return tracks, vis, new


def camera_move(
    frame: np.ndarray, msg: Camera, *, depth_fn: Callable[[np.ndarray], np.ndarray], fps: float, slots: int
) -> tuple[np.ndarray, np.ndarray]:
    """The frame on screen (uint8 [H, W, 3]) and a camera instruction -> (tracks [T, N, 2], visibility [T, N])
    of a grid of up to ``slots`` points over ``msg.seconds`` (T = seconds x fps + 1 frames)."""
    depth = depth_fn(frame)  # [H, W] > 0
    T = int(round(msg.seconds * fps)) + 1
    grid = max(1, min(8, int(np.sqrt(slots))))
    path = camera_path(msg.path, T, target_depth=float(np.median(depth)), amount=msg.amount)
    return camera_tracks(depth, path, grid_size=grid)
