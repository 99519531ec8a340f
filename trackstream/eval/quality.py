"""The quality columns beside every EPE: figures a video that turns dark or to mosaic cannot pass.

The held EPE (``metrics.track_motion``) keeps a point the tracker loses where it was last seen, so a
video that stops being trackable half-way (darkens, turns to blocks) keeps the small error its points
had when lost. Beside it every table reports, per row:

* ``no_hold_epe``: the same tracking without the hold (``MotionTrack.no_hold_epe``), and
  ``no_hold_ratio`` = that over the same tracker's no-hold EPE of the frozen first frame on the same
  clips (``metrics.frozen_motion``; means over the clips first, then the ratio);
* ``lost_share``: of the at-risk (point, step) pairs of all the row's videos, the share the tracker lost;
* ``motion_amplitude``: how much of the asked motion the video makes (``metrics.motion_amplitude``: the re-tracked
  points' displacement from their query position summed over the scored entries, over the input tracks' own;
  per video, then the mean over videos): 1 = as far as asked, 0 = nothing moves (the frozen first frame), so a
  model that moves less than asked shows it even where its EPE looks like the frozen frame's;
* per chunk of the student's streaming (``chunk_spans``: frame 0, then 12 pixel frames per
  chunk) and over the last 8 frames (``late``): the brightness gap and texture-energy ratio against the
  ground truth (``metrics.frame_stats``), pooled over the videos (gap: the mean; ratio: the summed
  energies' ratio, so one flat clip cannot dominate).
"""

from __future__ import annotations

import numpy as np

from trackstream.eval.metrics import frame_stats

__all__ = [
    "QUALITY_COLUMNS",
    "LATE_FRAMES",
    "chunk_spans",
    "late_span",
    "video_spans",
    "video_frame_stats",
    "pool_frame_stats",
    "quality_ratio",
    "QUALITY_STEMS",
    "REFERENCE_QUALITY",
    "model_quality",
]

# (key stem, column label) of the per-row quality figures, in table order: ``<stem>_<row>`` in the figures
# (``lost_share`` is a share, shown in %); the labels say what is measured and hold no "|" (they are table cells)
QUALITY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("no_hold_epe", "no-hold EPE ↓"),
    ("no_hold_ratio", "no-hold / frozen ↓"),
    ("lost_share", "points lost (%) ↓"),
    ("motion_amplitude", "motion amplitude (1 = as asked)"),
    ("late_brightness_gap", "late brightness gap (/255, 0 = ground truth)"),
    ("late_texture_ratio", "late texture ratio (1 = ground truth)"),
)


def chunk_spans(num_frames: int, *, chunk_latents: int = 3, temporal_factor: int = 4) -> list[tuple[int, int]]:
    """[start, stop) pixel frames of a streamed student's chunks: frame 0 alone (the given first frame),
    then ``chunk_latents`` latent frames of ``temporal_factor`` pixel frames each (c3 chunking, Wan's
    grouping: 25 frames -> [0, 1), [1, 13), [13, 25)); a last partial chunk is kept as it is."""
    if num_frames < 1 or chunk_latents < 1 or temporal_factor < 1:
        raise ValueError(f"chunk_spans: num_frames={num_frames}, chunk_latents={chunk_latents}, must be >= 1")
    step = chunk_latents * temporal_factor
    return [(0, 1)] + [(lo, min(lo + step, num_frames)) for lo in range(1, num_frames, step)]


LATE_FRAMES = 8  # the "late" span of frame_stats: the last 8 frames (never frame 0, the given one)


def late_span(num_frames: int, frames: int = LATE_FRAMES) -> tuple[int, int]:
    """[start, stop) of the last ``frames`` pixel frames, frame 0 left out."""
    return (max(1, num_frames - frames), num_frames) if num_frames > 1 else (0, num_frames)


def video_spans(num_frames: int) -> list[tuple[int, int]]:
    """The spans ``frame_stats`` is taken over for one video: its chunks, then the late span (last)."""
    return [*chunk_spans(num_frames), late_span(num_frames)]


def video_frame_stats(video: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """``metrics.frame_stats`` of one uint8 video [T, H, W, 3] against its ground truth over ``video_spans``."""
    return frame_stats(video, gt, video_spans(len(video)))


def quality_ratio(num: float, den: float) -> float:
    """num / den, NaN unless both are finite and den > 0."""
    ok = all(isinstance(x, (int, float)) and np.isfinite(x) for x in (num, den)) and den > 0
    return float(num / den) if ok else float("nan")


def pool_frame_stats(per_video: list[tuple[int, dict[str, np.ndarray]]]) -> dict:
    """Pool ``video_frame_stats`` over a row's videos (``per_video``: (num_frames, stats) pairs).

    Chunk k is pooled over the videos that have it (videos of one length all do); the late span over
    all. Gap: mean over videos; ratio: sum of the videos' energies / sum of the ground truth's. Returns
    ``chunk_spans`` (of the longest video), ``brightness_gap_per_chunk``, ``texture_ratio_per_chunk``
    (lists), ``late_span``, ``late_brightness_gap``, ``late_texture_ratio``; {} for no videos."""
    if not per_video:
        return {}
    longest = max(n for n, _ in per_video)

    def pooled(entries: list[tuple[int, dict]], at) -> tuple[float, float]:
        gap = float(np.mean([s["brightness_gap"][at(n)] for n, s in entries]))
        energy = sum(float(s["energy"][at(n)]) for n, s in entries)
        ref = sum(float(s["gt_energy"][at(n)]) for n, s in entries)
        return gap, (energy / ref if ref > 0 else float("nan"))

    chunks = chunk_spans(longest)
    gaps, ratios = [], []
    for k in range(len(chunks)):
        have = [(n, s) for n, s in per_video if k < len(chunk_spans(n))]
        g, r = pooled(have, lambda n, k=k: k)
        gaps.append(g)
        ratios.append(r)
    late_gap, late_ratio = pooled(per_video, lambda n: -1)
    return {
        "chunk_spans": [list(s) for s in chunks],
        "brightness_gap_per_chunk": gaps,
        "texture_ratio_per_chunk": ratios,
        "late_span": list(late_span(longest)),
        "late_brightness_gap": late_gap,
        "late_texture_ratio": late_ratio,
    }


# the per-row keys a model's figures carry into make run's report (``model_quality``), before ``_<mode>``
QUALITY_STEMS = (
    "no_hold_epe",
    "no_hold_ratio",
    "lost_share",
    "motion_amplitude",
    "late_brightness_gap",
    "late_texture_ratio",
)


def model_quality(figures: dict, prefix: str, modes=("with_tracks", "without_tracks")) -> dict:
    """A model's quality columns from its flat figures (``scorebook.flat_figures``) as ``<prefix>_<stem>_<mode>`` (and its
    per-chunk lists as ``<prefix>_brightness_gap_per_chunk`` / ``<prefix>_texture_ratio_per_chunk``,
    {mode: [...]}), for the run's figures where each model's keys carry its prefix."""
    out = {f"{prefix}_{s}_{m}": figures[f"{s}_{m}"] for s in QUALITY_STEMS for m in modes if f"{s}_{m}" in figures}
    for k in ("brightness_gap_per_chunk", "texture_ratio_per_chunk"):
        if k in figures:
            out[f"{prefix}_{k}"] = {m: v for m, v in figures[k].items() if m in modes}
    return out


# the teacher evaluation's reference rows' quality figures, carried into make run's figures unprefixed (the
# frozen frame's no-hold EPE is every no_hold_ratio's denominator)
REFERENCE_QUALITY = (
    "no_hold_epe_frozen_video",
    "no_hold_epe_ground_truth_video",
    "no_hold_ratio_ground_truth_video",
    "lost_share_ground_truth_video",
    "motion_amplitude_ground_truth_video",
    "motion_amplitude_frozen_video",
    "late_brightness_gap_frozen_video",
    "late_texture_ratio_frozen_video",
    "chunk_spans",
    "late_span",
)
