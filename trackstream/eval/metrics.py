"""Video metrics, each with its protocol in the docstring: EPE of re-tracked points (``motion_epe``, the
one protocol behind every EPE figure of the project, and beside it the no-hold EPE of the same tracking,
``MotionTrack.no_hold_epe``) and the motion amplitude of the same tracking (``motion_amplitude``), PSNR and SSIM of generated frames against the ground truth (frames 1..;
frame 0 is the given first frame), brightness and texture energy per chunk against the ground truth
(``frame_stats``). The drag metrics (ObjMC, DAI) are in trackstream/eval/drag_metrics.py, the distribution
metrics (FID, FVD) in trackstream/eval/frechet.py."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "epe",
    "motion_epe",
    "track_motion",
    "frozen_motion",
    "MotionTrack",
    "group_losses",
    "frozen_epe",
    "motion_amplitude",
    "check_epe_tracker",
    "EPE_TRACKER",
    "EPE_TRACKERS",
    "grey",
    "video_psnr",
    "video_ssim",
    "frame_stats",
]


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


# data.trackers names the protocol accepts: lk_plain on CPU (the default everywhere), CoTracker3 from a
# local checkpoint. Not `lk`: it re-acquires lost points by colour and moves them with their neighbours,
# which flatters video it cannot follow (make run's report on its DMD student's videos: 6.50 px with lk,
# 11.11 px with lk_plain; an independent plain-LK re-tracking of them, no re-acquisition: 11.8 px).
EPE_TRACKER = "lk_plain"
EPE_TRACKERS = ("lk_plain", "cotracker3_offline", "cotracker3_online")  # of data.trackers.TRACKERS


def check_epe_tracker(name: str, field: str = "tracker") -> str:
    """``name`` if it is a tracker ``motion_epe`` accepts, else a ValueError naming ``field``."""
    if name not in EPE_TRACKERS:
        raise ValueError(
            f"{field}={name!r} cannot measure EPE: choose {EPE_TRACKER} (CPU) or cotracker3_offline / "
            "cotracker3_online (a local checkpoint). `lk` re-acquires lost points by colour and "
            "neighbour motion, which rewards video no tracker can follow (trackstream/eval/metrics.py motion_epe)"
        )
    return name


def _inputs(tracks, visibility) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scored input tracks (those visible in some frame) [T, N', 2] float64, their visibility
    [T, N'] and each one's first visible frame [N'] (its query frame)."""
    tracks, visibility = np.asarray(tracks, np.float64), np.asarray(visibility, bool)
    if tracks.ndim != 3 or tracks.shape[-1] != 2 or visibility.shape != tracks.shape[:2]:
        raise ValueError(f"EPE needs tracks [T, N, 2] and visibility [T, N]; got {tracks.shape}, {visibility.shape}")
    seen = visibility.any(axis=0)
    tracks, visibility = tracks[:, seen], visibility[:, seen]
    if not np.isfinite(tracks[visibility]).all():
        raise ValueError("EPE: the input tracks must be finite wherever their visibility is True")
    return tracks, visibility, np.argmax(visibility, axis=0)


def _score(pred: np.ndarray, tracks: np.ndarray, visibility: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(mean error over every input-visible entry, per-frame mean [T] (NaN where none), pred)."""
    err = np.where(visibility, np.linalg.norm(pred - tracks, axis=-1), 0.0)  # [T, N]
    count = visibility.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_frame = np.where(count > 0, err.sum(axis=1) / count, np.nan)
    value = float(err.sum() / count.sum()) if count.sum() else float("nan")
    return value, per_frame, pred.astype(np.float32)


def _hold_lost(pred: np.ndarray, seen: np.ndarray, t0: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Outward from each query frame (forward after it, backward before it), an entry the tracker did
    not see takes the position the point had in the previous frame of that direction; the query
    frame itself falls back to the query position."""
    out = pred.copy()
    T, n = seen.shape
    cols = np.arange(n)
    q = seen[t0, cols]
    out[t0[~q], cols[~q]] = start[~q]
    for t in range(1, T):
        m = (t > t0) & ~seen[t]
        out[t, m] = out[t - 1, m]
    for t in range(T - 2, -1, -1):
        m = (t < t0) & ~seen[t]
        out[t, m] = out[t + 1, m]
    return out


@dataclass(frozen=True)
class MotionTrack:
    """One video re-tracked by the EPE protocol (``track_motion``). ``lost[t]`` counts the points the
    tracker loses at frame t among ``at_risk[t]``: points it still held at t - 1 (at or after their
    query frame) that the input shows at both t - 1 and t, so a point leaving the frame or going behind
    a sprite is never counted against the video. ``no_hold_*``: the same scored entries at the positions
    the tracker gives every point in every frame (lost points not held; see ``track_motion``)."""

    epe: float
    per_frame: np.ndarray  # [T] mean error per frame (NaN where the input shows no point)
    positions: np.ndarray  # [T, N', 2] the scored positions (lost points held where last seen)
    lost: np.ndarray  # [T] int
    at_risk: np.ndarray  # [T] int
    no_hold_epe: float = float("nan")
    no_hold_per_frame: np.ndarray | None = None  # [T]
    no_hold_positions: np.ndarray | None = None  # [T, N', 2] (lost points where the tracker put them)
    amplitude: float = float("nan")  # motion_amplitude of ``positions``: generated over asked displacement

    @property
    def lost_share(self) -> float:
        """Of all the at-risk (point, step) pairs of the video, the share the tracker lost (NaN if none)."""
        n = int(np.sum(self.at_risk))
        return float(np.sum(self.lost) / n) if n else float("nan")


def motion_epe(
    frames: np.ndarray, tracks: np.ndarray, visibility: np.ndarray, tracker
) -> tuple[float, np.ndarray, np.ndarray]:
    """(EPE, EPE per frame [T], scored positions [T, N', 2]): ``track_motion``, the one protocol."""
    m = track_motion(frames, tracks, visibility, tracker)
    return m.epe, m.per_frame, m.positions


def track_motion(frames: np.ndarray, tracks: np.ndarray, visibility: np.ndarray, tracker) -> MotionTrack:
    """THE EPE of a generated video against its conditioning tracks: the one protocol behind every EPE
    figure (make run's report, the teacher and streaming evaluations, ``python -m trackstream.eval``).

    Reference: MotionStream (ICLR 2026, sec. 4.2 and app. E) reports EPE "as the L2 distance between
    visible input tracks and the tracks extracted from the generated videos", extracted by CoTracker3,
    in pixels at 832x480 after resizing; Motion Prompting re-tracks with BootsTAP. Here:

    * queries: every input track that is visible in some frame, at its first visible frame (t, x, y)
      (CoTracker's query form); tracks never visible carry no position and are left out;
    * tracker: a ``data.trackers`` tracker on the uint8 ``frames`` [T, H, W, 3]: ``lk_plain`` (plain
      pyramidal LK chained frame to frame, forward-backward check, a failed point lost for good) on
      CPU, CoTracker3 from a local checkpoint where one exists. A tracker that re-acquires lost points
      by appearance (``lk``) is refused: on video it cannot follow it finds *some* patch of the right
      colour near where the point should be (make run's student: 6.50 px with it, 11.11 px without);
    * scored entries: every (frame, track) where the INPUT is visible, the query frame included (its
      error is 0 by construction, as with CoTracker, which returns the query there), whatever the
      tracker says. The set depends on the input alone, so nothing the generated video does can
      shrink it; frames the input hides are not scored, and a point the input shows again is scored
      again (a tracker that cannot re-find it charges the miss to every video alike, the ground
      truth's included: that is the floor the ``ground_truth`` row reports);
    * a point the tracker loses (reports not visible, or returns a non-finite position) keeps counting
      at its last seen position (from the query position on), for as long as it is lost: never
      dropped, never NaN (a NaN would drop the whole video from a mean), never moved by a guess from
      its neighbours. Losing every point from frame 1 on therefore scores exactly as the frozen
      first frame does (``frozen_epe``): a video no tracker can follow is never scored as if it
      followed the tracks, and losing a point can only replace its tracked error by a stopped one.

    The no-hold EPE (``MotionTrack.no_hold_epe``), from the same tracking call: the same queries and
    scored entries, at the positions the tracker gives every point in every frame (``tracker.without_hold()``:
    ``lk_plain`` keeps chaining LK on a point it lost, from where LK put it; CoTracker3's positions as it
    returns them); a non-finite position is replaced by the point's last finite one. Holding lets a video
    that turns untrackable (dark, mosaic) keep the error of the positions its points had when lost, often
    small; without the hold the tracker's drift on such frames counts. Read it against the same tracker
    on the frozen first frame (``frozen_motion``). The held EPE is unchanged by this: it holds the same
    output where the tracker reports a point lost.

    The value is one flat mean over the scored entries of this video (pixels of ``frames``: report the
    resolution); a set of videos is the mean of the per-video values. Returns a ``MotionTrack``: the EPE,
    per frame, the scored positions, where the tracker lost points (``group_losses``), the no-hold EPE and
    the motion amplitude of the scored positions (``motion_amplitude``)."""
    if getattr(tracker, "reacquire", False):
        raise ValueError(
            f"motion_epe: {type(tracker).__name__} re-acquires lost points by appearance; use "
            f"{EPE_TRACKER} or CoTracker3 (see the docstring)"
        )
    tracks, visibility, t0 = _inputs(tracks, visibility)
    frames = np.asarray(frames)
    if frames.shape[0] != tracks.shape[0]:
        raise ValueError(f"motion_epe: {frames.shape[0]} frames but tracks over {tracks.shape[0]} frames")
    start = tracks[t0, np.arange(tracks.shape[1])]  # [N', 2] query positions
    T = tracks.shape[0]
    if not len(start):
        zero = np.zeros(T, np.int64)
        held = _score(tracks, tracks, visibility)
        return MotionTrack(*held, lost=zero, at_risk=zero.copy(), no_hold_epe=held[0], no_hold_per_frame=held[1])
    queries = np.concatenate([t0[:, None], start], axis=1).astype(np.float32)
    # one call gives both: the free-running tracker's positions held where it reports a point lost are
    # the held protocol's (trackers.Tracker.without_hold); a duck-typed tracker is taken as it answers
    free = tracker.without_hold() if hasattr(tracker, "without_hold") else tracker
    pred, seen = free.track(frames, queries)
    pred, seen = np.asarray(pred, np.float64), np.asarray(seen, bool)  # [T, N', 2], [T, N']
    finite = np.isfinite(pred).all(axis=-1)
    seen &= finite
    # at risk at t: held at t - 1 (at or after its query frame) and shown by the input at t - 1 and t
    risk = seen[:-1] & visibility[:-1] & visibility[1:] & (np.arange(T - 1)[:, None] >= t0[None])  # [T-1, N']
    lost = np.concatenate([[0], (risk & ~seen[1:]).sum(axis=1)])
    at_risk = np.concatenate([[0], risk.sum(axis=1)])
    no_hold, no_hold_per_frame, no_hold_pos = _score(_hold_lost(pred, finite, t0, start), tracks, visibility)
    held = _score(_hold_lost(pred, seen, t0, start), tracks, visibility)
    return MotionTrack(
        *held,
        lost=lost,
        at_risk=at_risk,
        no_hold_epe=no_hold,
        no_hold_per_frame=no_hold_per_frame,
        no_hold_positions=no_hold_pos,
        amplitude=_amplitude(held[2], tracks, visibility, t0),
    )


def frozen_motion(frames: np.ndarray, tracks: np.ndarray, visibility: np.ndarray, tracker) -> MotionTrack:
    """``track_motion`` of frame 0 of ``frames`` [T, H, W, 3] repeated T times (the frozen first frame),
    tracker run: its ``no_hold_epe`` is what a no-hold EPE is read against (a tracker may move points
    even on a still video; ``frozen_epe`` assumes it does not)."""
    frames = np.asarray(frames)
    return track_motion(np.broadcast_to(frames[:1], frames.shape), tracks, visibility, tracker)


def group_losses(lost: np.ndarray, at_risk: np.ndarray, *, temporal_factor: int = 4) -> dict:
    """Where points are lost, against the codec's grouping of pixel frames into latent frames (latent 0 =
    frame 0, latent j = frames 4j-3..4j): the share of at-risk points lost on entering a group's first
    frame (t = 1, 5, 9, ...) and on the steps inside a group. ``lost`` / ``at_risk``: [T] counts of
    ``MotionTrack`` (summed over the videos of a set). A generator that re-synthesises content per latent
    frame loses its points at the starts; one that carries content loses them evenly."""
    t = np.arange(len(lost))
    start = (t >= 1) & ((t - 1) % temporal_factor == 0)
    inside = (t >= 1) & ~start

    def rate(m: np.ndarray) -> float:
        n = int(np.asarray(at_risk)[m].sum())
        return float(np.asarray(lost)[m].sum() / n) if n else float("nan")

    return {"lost_at_group_start": rate(start), "lost_inside_group": rate(inside)}


def frozen_epe(tracks: np.ndarray, visibility: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """``motion_epe`` of the frozen first frame (a still video: every point stays at its query
    position), without running a tracker: the EPE of ignoring motion altogether."""
    tracks, visibility, t0 = _inputs(tracks, visibility)
    start = tracks[t0, np.arange(tracks.shape[1])]
    return _score(np.broadcast_to(start, tracks.shape), tracks, visibility)


def _amplitude(positions: np.ndarray, tracks: np.ndarray, visibility: np.ndarray, t0: np.ndarray) -> float:
    """``motion_amplitude`` on inputs already passed through ``_inputs`` (``t0``: each track's query frame)."""
    T, n = tracks.shape[:2]
    start = tracks[t0, np.arange(n)]  # [N', 2]
    scored = visibility & (np.arange(T)[:, None] > t0[None])  # the EPE's entries after each query frame
    asked = np.linalg.norm(tracks - start, axis=-1)[scored].sum()
    made = np.linalg.norm(np.asarray(positions, np.float64) - start, axis=-1)[scored].sum()
    return float(made / asked) if asked > 0 else float("nan")


def motion_amplitude(positions: np.ndarray, tracks: np.ndarray, visibility: np.ndarray) -> float:
    """How much of the asked motion a video makes: over the entries the EPE scores after each track's query
    frame (the input visible), the sum of the generated displacements |p_t - p_q| over the sum of the asked
    ones |x_t - x_q| (x: the input tracks, q: the query frame, p: ``positions``, the re-tracked positions
    ``track_motion`` scores, lost points held). A ratio of sums, not a mean of per-entry ratios: a point asked
    to stay put weighs nothing instead of dividing by zero. 1: the points travel as far as asked (the
    ground truth, up to the tracker); 0: nothing moves (the frozen first frame); below 1: the video moves
    less than asked, whatever the direction (the EPE judges that). NaN when nothing is asked to move.
    ``positions`` [T, N', 2] are over the scored tracks (those visible in some frame), as
    ``MotionTrack.positions`` / ``frozen_epe``'s positions are."""
    tracks, visibility, t0 = _inputs(tracks, visibility)
    positions = np.asarray(positions, np.float64)
    if positions.shape != tracks.shape:
        raise ValueError(f"motion_amplitude: positions {positions.shape} but {tracks.shape} scored input tracks")
    return _amplitude(positions, tracks, visibility, t0)


def video_psnr(pred: np.ndarray, gt: np.ndarray, *, first: int = 1) -> float:
    """PSNR (dB, peak 255) of uint8 frames [T, H, W, 3] against the ground truth over frames ``first``..
    (1: frame 0 is the given first frame of a generation; 0 for a codec's reconstruction, which decodes it
    too). One MSE over all those pixels, not a mean of per-frame PSNRs."""
    if pred.shape != gt.shape:
        raise ValueError(f"video_psnr: prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    mse = float(np.mean((pred[first:].astype(np.float64) - gt[first:].astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def video_ssim(pred: np.ndarray, gt: np.ndarray, *, sigma: float = 1.5, first: int = 1) -> float:
    """Mean SSIM (Wang et al. 2004: Gaussian window sigma 1.5 truncated at 3.5 sigma, K1 0.01,
    K2 0.03, peak 255, per RGB channel, borders the window does not fit excluded) of uint8 frames
    [T, H, W, 3] against the ground truth over frames ``first``.. (as ``video_psnr``). Unlike PSNR it falls
    for per-pixel noise whose average colour is right."""
    if pred.shape != gt.shape:
        raise ValueError(f"video_ssim: prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    r = int(3.5 * sigma + 0.5)
    g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    g = g / g.sum()

    def blur(x: torch.Tensor) -> torch.Tensor:  # [N, 1, H, W] -> [N, 1, H - 2r, W - 2r] (separable, valid)
        x = torch.nn.functional.conv2d(x, g.view(1, 1, -1, 1))
        return torch.nn.functional.conv2d(x, g.view(1, 1, 1, -1))

    def to(v):  # [T, H, W, 3] -> [(T - first) * 3, 1, H, W] float64
        v = np.ascontiguousarray(v[first:])
        return torch.from_numpy(v).double().permute(0, 3, 1, 2).reshape(-1, 1, *v.shape[1:3])

    x, y = to(pred), to(gt)  # [(T - first) * 3, 1, H, W]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(ssim.mean())


def grey(v: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, 3] RGB -> float32 [T, H, W] grey levels 0..255 (ITU-R BT.601 luma, as cv2)."""
    return np.asarray(v, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def frame_stats(video: np.ndarray, gt: np.ndarray, spans, *, sigma: float = 1.5) -> dict[str, np.ndarray]:
    """Brightness and texture energy of ``video`` against the ground truth ``gt`` (uint8 [T, H, W, 3], same
    shape), per span of pixel frames (``spans``: [start, stop) pairs; ``eval.quality.video_spans``: the chunks).

    * brightness: the mean grey level (BT.601 luma, 0..255) over the span's frames and pixels;
      ``brightness_gap`` = the video's minus the ground truth's (signed, grey levels of 255);
    * texture energy: the mean squared difference between a grey frame and its Gaussian blur (sigma
      ``sigma`` px, reflected borders), over the span: the energy of detail finer than a few pixels;
      ``texture_ratio`` = the video's / the ground truth's (1 = as much detail; below: washed out,
      blurred or dark; above: noise, blocks or over-sharpening). NaN where the ground truth has none.

    Returns float64 arrays [len(spans)]: ``brightness_gap``, ``texture_ratio`` and the parts to pool over
    videos (``brightness``, ``gt_brightness``, ``energy``, ``gt_energy``)."""
    import cv2

    video, gt = np.asarray(video), np.asarray(gt)
    if video.shape != gt.shape or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"frame_stats needs two uint8 videos [T, H, W, 3] of one shape; got {video.shape}, {gt.shape}")
    spans = [(int(lo), int(hi)) for lo, hi in spans]
    bad = [s for s in spans if not 0 <= s[0] < s[1] <= len(video)]
    if bad:
        raise ValueError(f"frame_stats: spans {bad} are not [start, stop) ranges of {len(video)} frames")

    def stats(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # per frame [T]: mean grey, texture energy
        g = grey(v)
        blur = np.stack([cv2.GaussianBlur(f, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) for f in g])
        return g.mean(axis=(1, 2), dtype=np.float64), ((g - blur) ** 2).mean(axis=(1, 2), dtype=np.float64)

    (b, e), (gb, ge) = stats(video), stats(gt)
    out = {k: np.array([x[lo:hi].mean() for lo, hi in spans]) for k, x in (("brightness", b), ("gt_brightness", gb))}
    out.update({k: np.array([x[lo:hi].mean() for lo, hi in spans]) for k, x in (("energy", e), ("gt_energy", ge))})
    out["brightness_gap"] = out["brightness"] - out["gt_brightness"]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["texture_ratio"] = np.where(out["gt_energy"] > 0, out["energy"] / out["gt_energy"], np.nan)
    return out
