"""One accumulator for the per-video scores every evaluation table reports, so each row is scored alike.

Per row (a model and mode, or a floor), per video: the EPE of ``metrics.track_motion`` (the one
protocol), PSNR and SSIM against the ground-truth frames, and the points the tracker lost per frame;
``figures()`` gives the means, the per-sample lists and where points were lost against the latent
grouping (``metrics.group_losses``), under the keys the reports read: ``epe_<row>``, ``psnr_<row>``,
``ssim_<row>``, ``lost_at_group_start_<row>``, ``lost_inside_group_<row>``, ``per_sample``,
``psnr_per_sample``, ``ssim_per_sample``.
"""

from __future__ import annotations

import numpy as np
import torch

from trackstream.eval.metrics import group_losses, track_motion, video_psnr, video_ssim

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


class ScoreBook:
    """``add(row, frames, gt_frames, tracks, visibility)`` per video; ``figures()`` at the end."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.epe: dict[str, list[float]] = {}
        self.psnr: dict[str, list[float]] = {}
        self.ssim: dict[str, list[float]] = {}
        self.lost: dict[str, np.ndarray] = {}
        self.at_risk: dict[str, np.ndarray] = {}

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
        ``quality``, its ground-truth frames. Returns its EPE."""
        m = track_motion(frames, tracks, visibility, self.tracker)
        self.epe.setdefault(row, []).append(m.epe)
        self.lost[row] = self.lost.get(row, 0) + m.lost
        self.at_risk[row] = self.at_risk.get(row, 0) + m.at_risk
        if quality and gt_frames is not None:
            self.psnr.setdefault(row, []).append(video_psnr(frames, gt_frames))
            self.ssim.setdefault(row, []).append(video_ssim(frames, gt_frames))
        return m.epe

    def figures(self) -> dict:
        out: dict = {f"epe_{k}": float(np.nanmean(v)) for k, v in self.epe.items()}
        out.update({f"psnr_{k}": float(np.mean(v)) for k, v in self.psnr.items()})
        out.update({f"ssim_{k}": float(np.mean(v)) for k, v in self.ssim.items()})
        for row in self.lost:
            for key, value in group_losses(self.lost[row], self.at_risk[row]).items():
                out[f"{key}_{row}"] = value
        # per frame: points lost at t among those at risk (metrics.MotionTrack), summed over the videos
        out["lost_per_frame"] = {k: np.asarray(v).tolist() for k, v in self.lost.items()}
        out["at_risk_per_frame"] = {k: np.asarray(v).tolist() for k, v in self.at_risk.items()}
        out["per_sample"] = {k: [float(x) for x in v] for k, v in self.epe.items()}
        out["psnr_per_sample"] = {k: [float(x) for x in v] for k, v in self.psnr.items()}
        out["ssim_per_sample"] = {k: [float(x) for x in v] for k, v in self.ssim.items()}
        return out
