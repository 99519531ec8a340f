"""One accumulator for the per-video scores every evaluation table reports, so each row is scored alike.

Per row (a model and mode, or a floor), per video: the EPE of ``metrics.track_motion`` (the one
protocol) and its no-hold EPE, PSNR and SSIM against the ground-truth frames, brightness and texture per
chunk against them (``metrics.frame_stats``), and the points the tracker lost per frame; ``add_frozen``
scores the frozen first frame of a clip as a row (its EPE by ``metrics.frozen_epe``, its no-hold EPE by
running the tracker on the still video: the denominator of every ``no_hold_ratio``). ``figures()``
gives the means, the per-sample lists and where points were lost against the latent grouping
(``metrics.group_losses``), under the keys the reports read: ``epe_<row>``, ``psnr_<row>``,
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

__all__ = ["ScoreBook", "input_tracks"]


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


def _nanmean(values: list[float]) -> float:
    """The mean of the finite values (a clip that asks for no motion has no amplitude), NaN if none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


class ScoreBook:
    """``add(row, frames, gt_frames, tracks, visibility)`` per video (``add_frozen`` for the frozen first
    frame); ``figures()`` at the end. ``frozen_row``: the row name ``add_frozen`` records by default;
    ``similarity`` False leaves PSNR and SSIM out of the quality figures (a table that shows neither)."""

    def __init__(self, tracker, *, frozen_row: str = "frozen_video", similarity: bool = True):
        self.tracker, self.frozen_row, self.similarity = tracker, frozen_row, similarity
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
        ``quality``, its ground-truth frames (PSNR, SSIM, brightness and texture). Returns its EPE."""
        m = track_motion(frames, tracks, visibility, self.tracker)
        self.epe.setdefault(row, []).append(m.epe)
        self.no_hold.setdefault(row, []).append(m.no_hold_epe)
        self.amplitude.setdefault(row, []).append(m.amplitude)
        self.lost[row] = self.lost.get(row, 0) + m.lost
        self.at_risk[row] = self.at_risk.get(row, 0) + m.at_risk
        if quality and gt_frames is not None:
            self._quality(row, frames, gt_frames)
        return m.epe

    def add_frozen(self, gt_frames: np.ndarray, tracks: np.ndarray, visibility: np.ndarray, row: str | None = None):
        """Score the frozen first frame of a clip (frame 0 of ``gt_frames`` [T, H, W, 3] held) as ``row``
        (default ``frozen_row``): EPE by ``frozen_epe`` (no tracker, as every table has it), no-hold EPE
        by the tracker on the still video, motion amplitude 0 (its points stay put), PSNR / SSIM / frame statistics against the clip. Its losses
        are not counted (a still video loses nothing)."""
        row = row or self.frozen_row
        still = np.broadcast_to(gt_frames[:1], gt_frames.shape)
        value, _, still_positions = frozen_epe(tracks, visibility)
        self.epe.setdefault(row, []).append(value)
        self.amplitude.setdefault(row, []).append(motion_amplitude(still_positions, tracks, visibility))
        self.no_hold.setdefault(row, []).append(frozen_motion(gt_frames, tracks, visibility, self.tracker).no_hold_epe)
        self._quality(row, still, gt_frames)

    def _quality(self, row: str, frames: np.ndarray, gt_frames: np.ndarray) -> None:
        if self.similarity:
            self.psnr.setdefault(row, []).append(video_psnr(frames, gt_frames))
            self.ssim.setdefault(row, []).append(video_ssim(frames, gt_frames))
        self.stats.setdefault(row, []).append((len(frames), video_frame_stats(frames, gt_frames)))

    def figures(self) -> dict:
        out: dict = {f"epe_{k}": float(np.nanmean(v)) for k, v in self.epe.items()}
        out.update({f"psnr_{k}": float(np.mean(v)) for k, v in self.psnr.items()})
        out.update({f"ssim_{k}": float(np.mean(v)) for k, v in self.ssim.items()})
        out.update({f"no_hold_epe_{k}": float(np.nanmean(v)) for k, v in self.no_hold.items()})
        out.update({f"motion_amplitude_{k}": _nanmean(v) for k, v in self.amplitude.items()})
        frozen = out.get(f"no_hold_epe_{self.frozen_row}")
        if frozen is not None:  # means over the clips first, then the ratio (eval.quality)
            out.update({f"no_hold_ratio_{k}": quality_ratio(out[f"no_hold_epe_{k}"], frozen) for k in self.no_hold})
        for row in self.lost:
            for key, value in group_losses(self.lost[row], self.at_risk[row]).items():
                out[f"{key}_{row}"] = value
            out[f"lost_share_{row}"] = quality_ratio(float(np.sum(self.lost[row])), float(np.sum(self.at_risk[row])))
        # per frame: points lost at t among those at risk (metrics.MotionTrack), summed over the videos
        out["lost_per_frame"] = {k: np.asarray(v).tolist() for k, v in self.lost.items()}
        out["at_risk_per_frame"] = {k: np.asarray(v).tolist() for k, v in self.at_risk.items()}
        out["per_sample"] = {k: [float(x) for x in v] for k, v in self.epe.items()}
        out["no_hold_per_sample"] = {k: [float(x) for x in v] for k, v in self.no_hold.items()}
        out["amplitude_per_sample"] = {k: [float(x) for x in v] for k, v in self.amplitude.items()}
        out["psnr_per_sample"] = {k: [float(x) for x in v] for k, v in self.psnr.items()}
        out["ssim_per_sample"] = {k: [float(x) for x in v] for k, v in self.ssim.items()}
        pooled = {row: pool_frame_stats(v) for row, v in self.stats.items()}
        for row, p in pooled.items():
            out[f"late_brightness_gap_{row}"] = p["late_brightness_gap"]
            out[f"late_texture_ratio_{row}"] = p["late_texture_ratio"]
        if pooled:
            out["brightness_gap_per_chunk"] = {row: p["brightness_gap_per_chunk"] for row, p in pooled.items()}
            out["texture_ratio_per_chunk"] = {row: p["texture_ratio_per_chunk"] for row, p in pooled.items()}
            longest = max(pooled.values(), key=lambda p: p["late_span"][1])
            out["chunk_spans"], out["late_span"] = longest["chunk_spans"], longest["late_span"]
        return out
