"""One accumulator for the per-video scores every evaluation table reports, so each row is scored alike.

Per row (a model and mode, or a floor), per video: the EPE of ``metrics.track_motion`` (the one
protocol) and its no-hold EPE, PSNR and SSIM against the ground-truth frames, brightness and texture per
chunk against them (``metrics.frame_stats``), and the points the tracker lost per frame; ``add_frozen``
scores the frozen first frame of a clip as a row (its EPE by ``metrics.frozen_epe``, its no-hold EPE by
running the tracker on the still video: the denominator of every ``no_hold_ratio``). ``rows()`` gives
each row's figures (``eval.harness.RowScorer``, the one scoring loop, feeds the book and reads them);
``flat_figures`` writes them as make run's report has them: the means, the per-sample lists and where points
were lost against the latent grouping (``metrics.group_losses``), under the keys: ``epe_<row>``, ``psnr_<row>``,
``ssim_<row>``, ``lost_at_group_start_<row>``, ``lost_inside_group_<row>``, ``per_sample``,
``psnr_per_sample``, ``ssim_per_sample``, and the quality columns (``eval.quality``):
``no_hold_epe_<row>``, ``no_hold_ratio_<row>`` (with a frozen row in the book), ``lost_share_<row>``,
``late_brightness_gap_<row>``, ``late_texture_ratio_<row>``, ``motion_amplitude_<row>`` (the generated tracks'
displacement over the asked one, ``metrics.motion_amplitude``: per video, then the mean over videos),
``no_hold_per_sample``, ``amplitude_per_sample``,
``brightness_gap_per_chunk`` / ``texture_ratio_per_chunk`` ({row: [per chunk]}), ``chunk_spans``,
``late_span``.
"""

from __future__ import annotations

import numpy as np
import torch

from trackstream.eval.metrics import (
    frozen_epe,
    frozen_motion,
    group_losses,
    motion_amplitude,
    track_motion,
    video_psnr,
    video_ssim,
)
from trackstream.eval.quality import pool_frame_stats, quality_ratio, video_frame_stats

__all__ = ["ScoreBook", "flat_figures", "input_tracks"]


def input_tracks(clips: list[dict], num_tracks: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Tracks visible in frame 0 (the tracker's queries), padded: [B, T, N, 2], [B, T, N], counts.

    ``num_tracks``: a fixed random subset of that many per clip (seeded by the clip's seed), the
    density the teacher was evaluated with (its ``eval.num_tracks``); None keeps them all."""
    keep = [torch.from_numpy(c["visibility"][0].copy()) for c in clips]
    if num_tracks is not None:
        for c, k in zip(clips, keep):
            on = torch.nonzero(k).flatten()
            if len(on) > num_tracks:
                g = torch.Generator().manual_seed(int(c["meta"]["seed"]) % 2**62)
                k[on[torch.randperm(len(on), generator=g)[num_tracks:]]] = False
    counts = [int(k.sum()) for k in keep]
    T = clips[0]["tracks"].shape[0]
    tr = torch.zeros(len(clips), T, max(counts), 2)
    vi = torch.zeros(len(clips), T, max(counts), dtype=torch.bool)
    for b, (c, k) in enumerate(zip(clips, keep)):
        tr[b, :, : counts[b]] = torch.from_numpy(c["tracks"])[:, k]
        vi[b, :, : counts[b]] = torch.from_numpy(c["visibility"])[:, k]
    return tr, vi, counts


class ScoreBook:
    """``add(row, frames, gt_frames, tracks, visibility)`` per video (``add_frozen`` for the frozen first
    frame); ``rows()`` at the end (``row_figures()``: one row). ``frozen_row``: the row name ``add_frozen``
    records by default; ``psnr`` / ``ssim`` / ``motion`` False leave that measure out (``motion``: the
    re-tracking, its EPE, no-hold EPE, amplitude, losses and the frames' brightness and texture)."""

    def __init__(
        self,
        tracker,
        *,
        frozen_row: str = "frozen_video",
        psnr: bool = True,
        ssim: bool = True,
        motion: bool = True,
    ):
        self.tracker, self.frozen_row, self.motion = tracker, frozen_row, motion
        self.scores_psnr, self.scores_ssim = psnr, ssim
        self.per_frame: dict[str, list[np.ndarray]] = {}  # row -> the EPE per frame of each video
        self.epe: dict[str, list[float]] = {}
        self.no_hold: dict[str, list[float]] = {}
        self.amplitude: dict[str, list[float]] = {}
        self.psnr: dict[str, list[float]] = {}
        self.ssim: dict[str, list[float]] = {}
        self.lost: dict[str, np.ndarray] = {}
        self.at_risk: dict[str, np.ndarray] = {}
        self.stats: dict[str, list[tuple[int, dict]]] = {}  # row -> (frames, metrics.frame_stats) per video

    def add(
        self,
        row: str,
        frames: np.ndarray,
        gt_frames: np.ndarray | None,
        tracks: np.ndarray,
        visibility: np.ndarray,
        *,
        quality: bool = True,
    ) -> float:
        """Score one video (uint8 [T, H, W, 3]) against its input tracks [T, N, 2] / [T, N] and, when
        ``quality``, its ground-truth frames (PSNR, SSIM, brightness and texture). Returns its EPE (NaN without
        ``motion``)."""
        epe = float("nan")
        if self.motion:
            m = track_motion(frames, tracks, visibility, self.tracker)
            epe = m.epe
            self.epe.setdefault(row, []).append(m.epe)
            self.per_frame.setdefault(row, []).append(m.per_frame)
            self.no_hold.setdefault(row, []).append(m.no_hold_epe)
            self.amplitude.setdefault(row, []).append(m.amplitude)
            self.lost[row] = self.lost.get(row, 0) + m.lost
            self.at_risk[row] = self.at_risk.get(row, 0) + m.at_risk
        if quality and gt_frames is not None:
            self._quality(row, frames, gt_frames)
        return epe

    def add_frozen(
        self,
        gt_frames: np.ndarray,
        tracks: np.ndarray,
        visibility: np.ndarray,
        row: str | None = None,
        *,
        still: np.ndarray | None = None,
    ):
        """Score the frozen first frame of a clip (frame 0 of ``gt_frames`` [T, H, W, 3] held) as ``row``
        (default ``frozen_row``): EPE by ``frozen_epe`` (no tracker, as every table has it), no-hold EPE
        by the tracker on the still video, motion amplitude 0 (its points stay put), PSNR / SSIM / frame statistics against the clip. Its losses
        are not counted (a still video loses nothing). ``still``: that video as a row holds it (its frames are
        scored as given), else frame 0 broadcast."""
        row = row or self.frozen_row
        still = np.broadcast_to(gt_frames[:1], gt_frames.shape) if still is None else still
        if self.motion:
            value, per_frame, still_positions = frozen_epe(tracks, visibility)
            self.epe.setdefault(row, []).append(value)
            self.per_frame.setdefault(row, []).append(per_frame)
            self.amplitude.setdefault(row, []).append(motion_amplitude(still_positions, tracks, visibility))
            no_hold = frozen_motion(gt_frames, tracks, visibility, self.tracker).no_hold_epe
            self.no_hold.setdefault(row, []).append(no_hold)
        self._quality(row, still, gt_frames)

    def _quality(self, row: str, frames: np.ndarray, gt_frames: np.ndarray) -> None:
        if self.scores_psnr:
            self.psnr.setdefault(row, []).append(video_psnr(frames, gt_frames))
        if self.scores_ssim:
            self.ssim.setdefault(row, []).append(video_ssim(frames, gt_frames))
        if self.motion:
            self.stats.setdefault(row, []).append((len(frames), video_frame_stats(frames, gt_frames)))

    def row_figures(self, row: str, frozen_no_hold: float | None = None) -> dict:
        """One row's figures: ``epe``, ``no_hold_epe``, ``motion_amplitude``, ``psnr``, ``ssim`` (the means of
        what was scored), ``no_hold_ratio`` (over ``frozen_no_hold``, else the frozen row's), for rows re-tracked
        ``lost_share``, ``lost_at_group_start`` / ``lost_inside_group`` (``metrics.group_losses``) and
        ``lost_per_frame`` / ``at_risk_per_frame`` (summed over the videos), the frames' brightness and texture
        with their spans (``eval.quality.pool_frame_stats``), ``per_sample`` ({measure: [per video]}) and
        ``epe_per_frame`` (the mean over videos, NaN where none shows a point)."""
        res: dict = {}
        per = {
            "epe": self.epe.get(row),
            "psnr": self.psnr.get(row),
            "ssim": self.ssim.get(row),
            "no_hold_epe": self.no_hold.get(row),
            "motion_amplitude": self.amplitude.get(row),
        }
        per = {k: v for k, v in per.items() if v is not None}
        with np.errstate(invalid="ignore"):
            res.update({k: float(np.nanmean(v)) for k, v in per.items()})
        if self.motion and row in self.no_hold:
            if frozen_no_hold is None and self.frozen_row in self.no_hold:
                frozen_no_hold = float(np.nanmean(self.no_hold[self.frozen_row]))
            if frozen_no_hold is not None:
                res["no_hold_ratio"] = quality_ratio(res["no_hold_epe"], frozen_no_hold)
            if row in self.lost:
                res["lost_share"] = quality_ratio(float(np.sum(self.lost[row])), float(np.sum(self.at_risk[row])))
                res.update(group_losses(self.lost[row], self.at_risk[row]))
                res["lost_per_frame"] = np.asarray(self.lost[row]).tolist()
                res["at_risk_per_frame"] = np.asarray(self.at_risk[row]).tolist()
            res.update(pool_frame_stats(self.stats.get(row, [])))
        res["per_sample"] = {k: [float(x) for x in v] for k, v in per.items()}
        curves = self.per_frame.get(row)
        if curves:
            T = max(len(c) for c in curves)
            padded = np.full((len(curves), T), np.nan)
            for i, c in enumerate(curves):
                padded[i, : len(c)] = c
            with np.errstate(invalid="ignore"):
                res["epe_per_frame"] = [float(x) for x in np.nanmean(padded, axis=0)]
        return res

    def rows(self, frozen_no_hold: float | None = None) -> dict[str, dict]:
        """``row_figures`` of every row scored, in the order the rows were first added."""
        names = {**self.epe, **self.psnr, **self.ssim, **self.no_hold, **self.amplitude}
        return {r: self.row_figures(r, frozen_no_hold) for r in names}


_MEANS = ("epe", "psnr", "ssim", "no_hold_epe", "motion_amplitude", "no_hold_ratio")
# per_sample's measures under the flat keys make run's report has always written
_PER_SAMPLE = {
    "per_sample": "epe",
    "no_hold_per_sample": "no_hold_epe",
    "amplitude_per_sample": "motion_amplitude",
    "psnr_per_sample": "psnr",
    "ssim_per_sample": "ssim",
}


def flat_figures(rows: dict[str, dict]) -> dict:
    """Rows' figures (``ScoreBook.row_figures``, as ``eval.harness.RowScorer.results`` gives them) as the one flat
    dict make run's report, the floors and the long rollouts write: ``<measure>_<row>`` for the means and the
    quality columns, the per-frame losses and per-sample lists as {row: [...]}, the per-chunk brightness and
    texture as {row: [...]}, and the spans of the longest video."""
    out: dict = {}
    for m in _MEANS:
        out.update({f"{m}_{r}": f[m] for r, f in rows.items() if m in f})
    lost = {r: f for r, f in rows.items() if "lost_per_frame" in f}
    for r, f in lost.items():
        out[f"lost_at_group_start_{r}"] = f["lost_at_group_start"]
        out[f"lost_inside_group_{r}"] = f["lost_inside_group"]
        out[f"lost_share_{r}"] = f["lost_share"]
    out["lost_per_frame"] = {r: f["lost_per_frame"] for r, f in lost.items()}
    out["at_risk_per_frame"] = {r: f["at_risk_per_frame"] for r, f in lost.items()}
    for key, m in _PER_SAMPLE.items():
        out[key] = {r: f["per_sample"][m] for r, f in rows.items() if m in f["per_sample"]}
    pooled = {r: f for r, f in rows.items() if "late_span" in f}
    for r, f in pooled.items():
        out[f"late_brightness_gap_{r}"] = f["late_brightness_gap"]
        out[f"late_texture_ratio_{r}"] = f["late_texture_ratio"]
    if pooled:
        out["brightness_gap_per_chunk"] = {r: f["brightness_gap_per_chunk"] for r, f in pooled.items()}
        out["texture_ratio_per_chunk"] = {r: f["texture_ratio_per_chunk"] for r, f in pooled.items()}
        longest = max(pooled.values(), key=lambda f: f["late_span"][1])
        out["chunk_spans"], out["late_span"] = longest["chunk_spans"], longest["late_span"]
    return out
