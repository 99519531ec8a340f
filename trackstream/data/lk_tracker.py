"""The CPU trackers: OpenCV pyramidal Lucas-Kanade ('lk') and its strict protocol variant ('lk_plain').

How they decide visibility and what they do with a lost point is described in ``trackstream.data.trackers``.
"""

from __future__ import annotations

import copy
import math

import cv2
import numpy as np

from trackstream.data.tracker_base import Tracker


class LucasKanadeTracker(Tracker):
    """OpenCV pyramidal Lucas-Kanade with forward-backward visibility (CPU fallback).

    Per frame and point: (A) LK from the previous frame, accepted if it passes the forward-backward
    check (fb_threshold px), the contrast-relative residual test (max_residual) and the colour test
    (colour_threshold, RGB distance of the local mean colour to the query frame's); (B) LK from the
    query frame's patch (template_residual), drift-free for translating surfaces; (C) a lost point
    follows its rigid neighbours and is re-acquired from the last frame where it was reliable.
    Visibility = whichever of A/B/C succeeded. Frames whose shorter side is below 128 px are tracked
    on a 2x bicubic enlargement (upsample=None picks that). Window and pyramid depth default to
    values scaled with the (enlarged) frame size.
    """

    def __init__(
        self,
        *,
        win_size: int | None = None,
        max_level: int | None = None,
        fb_threshold: float | None = None,
        max_residual: float = 0.3,
        template_residual: float = 0.3,
        colour_threshold: float | None = 40.0,
        num_neighbours: int = 6,
        reacquire: bool = True,
        upsample: int | None = None,
    ):
        if win_size is not None and (win_size < 3 or win_size % 2 == 0):
            raise ValueError(f"LucasKanadeTracker win_size must be odd and >= 3, got {win_size}")
        self.win_size, self.max_level, self.fb_threshold = win_size, max_level, fb_threshold
        self.max_residual, self.template_residual = max_residual, template_residual
        self.colour_threshold, self.num_neighbours, self.reacquire = colour_threshold, num_neighbours, reacquire
        self.upsample = upsample

    def _params(self, h: int, w: int) -> tuple[dict, float]:
        short = min(h, w)
        win = self.win_size or int(np.clip(round(short / 14), 7, 21)) | 1
        level = self.max_level if self.max_level is not None else int(np.clip(math.log2(short / (2 * win)), 0, 4))
        fb = self.fb_threshold if self.fb_threshold is not None else max(1.0, short / 256)
        lk = dict(
            winSize=(win, win), maxLevel=level, criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 0.01)
        )
        return lk, fb

    def _track(self, frames, queries):
        t_total, h, w, _ = frames.shape
        f = self.upsample if self.upsample is not None else (2 if min(h, w) < 128 else 1)
        if f > 1:
            # Tiny frames: track on an enlarged copy so the window stays small relative to the
            # objects while bicubic interpolation keeps sub-pixel gradients smooth.
            frames = np.stack([cv2.resize(x, (w * f, h * f), interpolation=cv2.INTER_CUBIC) for x in frames])
            queries = queries.copy()
            queries[:, 1:] = (queries[:, 1:] + 0.5) * f - 0.5  # pixel-centre convention
        h, w = frames.shape[1:3]
        lk, fb_thr = self._params(h, w)
        gray = [cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in frames]
        k = max(3, (min(h, w) // 16) | 1)
        feats = {
            "gray": gray,
            "colour": [cv2.blur(x.astype(np.float32), (k, k)) for x in frames],
            "contrast": [_local_std(g, lk["winSize"][0]) for g in gray],
        }
        tracks = np.zeros((t_total, len(queries), 2), np.float32)
        vis = np.zeros((t_total, len(queries)), bool)
        # Points are tracked forward from their query frame and backward (reversed video) to frame 0.
        q_t = queries[:, 0].round().astype(int)
        for tq in np.unique(q_t):
            sel = np.nonzero(q_t == tq)[0]
            fwd = {name: v[tq:] for name, v in feats.items()}
            tracks[tq:, sel], vis[tq:, sel] = self._track_sequence(fwd, queries[sel, 1:], lk, fb_thr, h, w)
            if tq > 0:
                bwd = {name: v[tq::-1] for name, v in feats.items()}
                p, v = self._track_sequence(bwd, queries[sel, 1:], lk, fb_thr, h, w)
                tracks[: tq + 1, sel], vis[: tq + 1, sel] = p[::-1], v[::-1]
        if f > 1:
            tracks = (tracks + 0.5) / f - 0.5
        return tracks, vis

    def _track_sequence(self, feats: dict, pts0: np.ndarray, lk: dict, fb_thr: float, h: int, w: int):
        gray, colour, contrast = feats["gray"], feats["colour"], feats["contrast"]
        n, length = len(pts0), len(gray)
        pos = np.zeros((length, n, 2), np.float32)
        vis = np.zeros((length, n), bool)
        pos[0], vis[0] = pts0, points_inside(pts0, h, w)
        ref_colour = _sample(colour[0], pts0)  # [N, 3] appearance at the query frame
        anchor_t = np.zeros(n, int)  # last frame where each point was reliably tracked

        def accept(t, p, ref):
            return points_inside(p, h, w) & self._same_look(colour[t], p, ref)

        for t in range(1, length):
            prev = pos[t - 1]
            # Constant-velocity prediction as LK's starting point: it then corrects a small residual.
            pred = prev + (prev - pos[t - 2]) * (vis[t - 2] & vis[t - 1])[:, None] if t >= 2 else prev
            # (A) chained LK from the previous frame: follows rotation and appearance drift.
            chain, ok = lk_forward_backward(
                gray[t - 1], gray[t], prev, pred, lk, fb_thr, self.max_residual, contrast[t - 1]
            )
            ok &= vis[t - 1] & accept(t, chain, ref_colour)
            guess = np.where(ok[:, None], chain, prev)
            lost = np.nonzero(~ok)[0]
            if len(lost):
                # Lost points follow the points that stayed rigid with them so far.
                guess[lost] = prev[lost] + self._neighbour_motion(pos, guess, ok, lost, anchor_t, t)
            if self.reacquire:
                # (B) match the query frame's patch: drift-free for surfaces that only translate;
                # the residual test rejects a point that the chain let slide onto an occluder.
                got, good = lk_forward_backward(
                    gray[0], gray[t], pts0, guess, lk, fb_thr, self.template_residual, contrast[0]
                )
                good &= accept(t, got, ref_colour)
                guess[good] = got[good]
                ok |= good
                # (C) still lost: re-acquire from the last frame where the point was reliable.
                lost = np.nonzero(~ok)[0]
                for a in np.unique(anchor_t[lost]):
                    grp = lost[anchor_t[lost] == a]
                    got, good = lk_forward_backward(
                        gray[a], gray[t], pos[a, grp], guess[grp], lk, fb_thr, self.template_residual, contrast[a]
                    )
                    good &= accept(t, got, ref_colour[grp])
                    guess[grp[good]], ok[grp[good]] = got[good], True
            pos[t], vis[t] = guess, ok
            anchor_t[ok] = t
        return pos, vis

    def _same_look(self, colour_t: np.ndarray, p: np.ndarray, ref: np.ndarray) -> np.ndarray:
        if self.colour_threshold is None:
            return np.ones(len(p), bool)
        return np.linalg.norm(_sample(colour_t, p) - ref, axis=1) < self.colour_threshold

    def _neighbour_motion(self, pos, cur, ok, lost, anchor_t, t) -> np.ndarray:
        """Median displacement (t-1 -> t) of the reliable points most rigidly tied to each lost one."""
        motion = np.zeros((len(lost), 2), np.float32)
        good = np.nonzero(ok)[0]
        if len(good) == 0:
            return motion
        step = cur[good] - pos[t - 1, good]  # [G, 2]
        k = min(self.num_neighbours, len(good))
        for a in np.unique(anchor_t[lost]):
            rows = np.nonzero(anchor_t[lost] == a)[0]
            li = lost[rows]
            # Distance when the lost point was last seen, plus how much that distance changed since
            # frame 0: points on the same rigid surface keep both small. The median ignores the
            # odd neighbour from another surface.
            d_a = np.linalg.norm(pos[a, li][:, None] - pos[a, good][None], axis=-1)  # [L, G]
            d_0 = np.linalg.norm(pos[0, li][:, None] - pos[0, good][None], axis=-1)
            cost = d_a + 4.0 * np.abs(d_a - d_0)
            nearest = np.argpartition(cost, k - 1, axis=1)[:, :k]  # [L, k]
            motion[rows] = np.median(step[nearest], axis=1)
        return motion


class PlainLucasKanadeTracker(LucasKanadeTracker):
    """The strict protocol: plain pyramidal LK chained frame to frame with a forward-backward check,
    and nothing else. A point that fails the check once is lost for good and stays where it was
    last seen (its EPE keeps counting against the input track): no neighbour following, no
    re-acquisition. ``LucasKanadeTracker`` re-finds lost points, which flatters incoherent video
    (it finds *some* patch of the right colour); this one rewards only motion a tracker can follow
    frame to frame. Same window, pyramid, threshold and 2x enlargement rules as ``lk``.

    ``hold_lost=False`` (``without_hold()``): a point that fails is not stopped; it keeps being chained
    frame to frame from where LK put it (from its last position where LK returns nothing finite). Its
    visibility stays False from the failure on, and the points it never lost move exactly as with
    ``hold_lost=True`` (they are tracked in the same calls), so holding its output where it reports a
    point not visible gives back the held tracker's output bit for bit."""

    def __init__(
        self,
        *,
        win_size: int | None = None,
        max_level: int | None = None,
        fb_threshold: float | None = None,
        upsample: int | None = None,
        border: float = 1.0,
        hold_lost: bool = True,
    ):
        super().__init__(
            win_size=win_size,
            max_level=max_level,
            fb_threshold=fb_threshold,
            upsample=upsample,
            reacquire=False,
            colour_threshold=None,
        )
        self.border = border  # px (tracking resolution) a point may stray outside before it counts as gone
        self.hold_lost = hold_lost

    def without_hold(self) -> "PlainLucasKanadeTracker":
        free = copy.copy(self)
        free.hold_lost = False
        return free

    def _params(self, h: int, w: int) -> tuple[dict, float]:
        # Without the re-acquisition safety net, the window must see enough of the smooth synthetic
        # textures: a wider window (short side / 6) and no minimum-eigenvalue rejection (the
        # forward-backward check decides). On ground-truth 64x64 clips (25 frames, held-out
        # world) this keeps ~90% of the input points alive instead of ~58%.
        lk, fb = super()._params(h, w)
        if self.win_size is None:
            win = int(np.clip(round(min(h, w) / 6), 7, 31)) | 1
            lk["winSize"] = (win, win)
        lk["minEigThreshold"] = 1e-6
        return lk, (self.fb_threshold if self.fb_threshold is not None else 2 * fb)

    def _track_sequence(self, feats: dict, pts0: np.ndarray, lk: dict, fb_thr: float, h: int, w: int):
        gray = feats["gray"]
        n, length = len(pts0), len(gray)
        pos = np.zeros((length, n, 2), np.float32)
        alive = np.zeros((length, n), bool)
        pos[0], alive[0] = pts0, points_inside(pts0, h, w)
        for t in range(1, length):
            prev, ok = pos[t - 1], alive[t - 1].copy()
            nxt = prev.copy()
            idx = np.nonzero(ok)[0]
            if len(idx):
                got, good = lk_forward_backward(
                    gray[t - 1], gray[t], prev[idx], prev[idx], lk, fb_thr, np.inf, feats["contrast"][t - 1]
                )
                good &= points_inside(got, h, w, margin=self.border)
                nxt[idx[good]] = got[good]
                ok[idx[~good]] = False
                if not self.hold_lost:  # failing now: continue from where LK put it
                    _move_finite(nxt, idx[~good], got[~good])
            gone = np.nonzero(~alive[t - 1])[0]
            if not self.hold_lost and len(gone):
                # lost before: chained on alone, in their own call, so the live points' LK is untouched
                _move_finite(nxt, gone, _lk_forward(gray[t - 1], gray[t], prev[gone], lk))
            pos[t], alive[t] = nxt, ok
        return pos, alive


def _move_finite(pos: np.ndarray, idx: np.ndarray, got: np.ndarray) -> None:
    """pos[idx] = got [len(idx), 2] where got is finite (in place); elsewhere the point stays."""
    fin = np.isfinite(got).all(axis=1)
    pos[idx[fin]] = got[fin]


def _lk_forward(img0, img1, p0, lk: dict) -> np.ndarray:
    """Where pyramidal LK puts the points p0 [N, 2] of img0 in img1 [N, 2], status ignored."""
    p0 = np.ascontiguousarray(p0, np.float32).reshape(-1, 1, 2)
    p1, _, _ = cv2.calcOpticalFlowPyrLK(img0, img1, p0, p0.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
    return p1.reshape(-1, 2)


def points_inside(p: np.ndarray, h: int, w: int, margin: float = 0.0) -> np.ndarray:
    m = margin
    return (p[:, 0] >= -m) & (p[:, 0] <= w - 1 + m) & (p[:, 1] >= -m) & (p[:, 1] <= h - 1 + m)


def _sample(img: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Bilinear sample of an [H, W, C] float image at points [N, 2] -> [N, C] (border replicated)."""
    if len(p) == 0:
        return np.zeros((0, img.shape[-1]), np.float32)
    m = np.ascontiguousarray(p, np.float32).reshape(-1, 1, 2)
    out = cv2.remap(img, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(len(p), -1)


def _local_std(gray: np.ndarray, win: int) -> np.ndarray:
    """Standard deviation of gray values in a win x win box around every pixel, float32 [H, W, 1]."""
    g = gray.astype(np.float32)
    mean, mean_sq = cv2.blur(g, (win, win)), cv2.blur(g * g, (win, win))
    return np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))[..., None]


def lk_forward_backward(img0, img1, p0, guess, lk: dict, fb_thr: float, max_residual: float, contrast: np.ndarray):
    """LK img0 -> img1 from p0 (initial guess `guess`), checked by tracking back to img0 and by the
    mean absolute patch difference (the residual; FB alone accepts a point riding an occluder's edge)."""
    if len(p0) == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, bool)
    p0 = np.ascontiguousarray(p0, np.float32).reshape(-1, 1, 2)
    g = np.ascontiguousarray(guess, np.float32).reshape(-1, 1, 2).copy()
    p1, st1, err = cv2.calcOpticalFlowPyrLK(img0, img1, p0, g, flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(img1, img0, p1, p0.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
    fb = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
    ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < fb_thr) & np.isfinite(p1.reshape(-1, 2)).all(1)
    # Residual (mean |patch difference|) relative to the source patch's contrast: a sharp texture
    # misaligned by a fraction of a pixel has a larger absolute residual than a flat one slid far off.
    ok &= err.ravel() < max_residual * (_sample(contrast, p0.reshape(-1, 2)).ravel() + 4.0)
    return p1.reshape(-1, 2), ok
