"""The floors every quality table shows beside its models: what the data and the codec allow.

On the same held-out clips and input tracks as the models, by the one EPE protocol (``metrics.track_motion``)
and PSNR / SSIM against the ground truth:

* ``ground_truth``: the clip itself; its EPE is the tracker's own floor (occlusions, texture it cannot hold);
* ``codec_round_trip``: the clip encoded and decoded by the codec: the best any generator in that latent
  space can score, as a perfect generator's latents decode to exactly this;
* ``oracle_copier``: frame 0 moved in pixel space by each frame's true camera displacement (the median
  displacement of the ground-truth tracks visible in both frames, sub-pixel, bilinear) and passed through
  the codec: a generator that copies the first frame perfectly and invents nothing. Exact for a panning
  camera over a still canvas; sprites are moved with the background, so it is a bound there only;
* ``frozen_frame``: frame 0 repeated (EPE without tracking: ``metrics.frozen_epe``; its no-hold EPE by the
  tracker on the still video, ``metrics.frozen_motion``: the denominator of every ``no_hold_ratio_<row>``).

Each tracked row also says where the tracker lost points against the codec's latent grouping
(``metrics.group_losses``): a codec or a generator that redraws content per latent frame loses them on
entering a group. Every row gets the quality columns of ``eval.quality`` (``ScoreBook``'s keys:
``no_hold_epe_<row>``, ``no_hold_ratio_<row>``, ``lost_share_<row>`` for the tracked rows; the brightness
gap and texture ratio against the ground truth for every row but the ground truth itself). No network
but the codec runs here.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from trackstream.data.trackers import build_tracker
from trackstream.data.video_io import to_uint8, video_tensor
from trackstream.eval.harness import CODEC_REFERENCES, RowScorer
from trackstream.eval.metrics import EPE_TRACKER
from trackstream.eval.sample import Sample
from trackstream.eval.scorebook import flat_figures, input_tracks

__all__ = ["FLOOR_ROWS", "pixel_copy", "round_trip", "floor_figures", "floor_videos", "reference_rows"]

FLOOR_ROWS = ("ground_truth", "codec_round_trip", "oracle_copier", "frozen_frame")


def pixel_copy(frames: np.ndarray, tracks: np.ndarray, visibility: np.ndarray, *, hold: bool = False) -> np.ndarray:
    """Frame 0 of ``frames`` [T, H, W, 3] uint8 moved to each frame t by the median displacement of the
    tracks [T, N, 2] visible at 0 and t. Where none is, frame t is kept (nothing can be known of it), or with
    ``hold`` (tracks that are not the clip's own: frame t must not leak in) the previous frame is held."""
    out = np.empty_like(frames)
    out[0] = frames[0]
    H, W = frames.shape[1:3]
    for t in range(1, len(frames)):
        both = visibility[t] & visibility[0]
        if not both.any():
            out[t] = out[t - 1] if hold else frames[t]
            continue
        dx, dy = np.median(tracks[t, both] - tracks[0, both], axis=0)
        m = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
        out[t] = cv2.warpAffine(frames[0], m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


@torch.no_grad()
def round_trip(codec, videos: np.ndarray, *, device, batch: int = 8) -> np.ndarray:
    """uint8 [B, T, H, W, 3] through ``codec`` (encode, decode) -> uint8 of the same shape."""
    out, dtype = [], next(codec.parameters()).dtype  # a bf16 codec on a GPU takes bf16 pixels
    for i in range(0, len(videos), batch):
        v = video_tensor(videos[i : i + batch]).to(device, dtype)  # [b, 3, T, H, W] in [-1, 1]
        rec = codec.decode(codec.encode(v)).float().cpu()
        out += [to_uint8(r) for r in rec]
    return np.stack(out)


def floor_videos(clips: list[dict], codec, *, device=None) -> dict[str, np.ndarray]:
    """uint8 videos [B, T, H, W, 3] of the tracked floor rows for ``clips`` (ClipPool entries)."""
    device = device or next(codec.parameters()).device
    gt = np.stack([c["frames"] for c in clips])
    copies = np.stack([pixel_copy(c["frames"], c["tracks"], c["visibility"]) for c in clips])
    return {
        "ground_truth": gt,
        "codec_round_trip": round_trip(codec, gt, device=device),
        "oracle_copier": round_trip(codec, copies, device=device),
    }


def floor_figures(
    clips: list[dict], codec, *, tracker: str = EPE_TRACKER, num_tracks: int | None = None, device=None
) -> dict:
    """``epe_<row>``, ``psnr_<row>``, ``ssim_<row>`` and the quality columns (``ScoreBook``'s keys) and,
    for the tracked rows, ``lost_at_group_start_<row>`` / ``lost_inside_group_<row>`` for every row of
    ``FLOOR_ROWS`` on ``clips`` (input tracks as every evaluation picks them: ``scorebook.input_tracks``),
    plus ``num_samples``."""
    if not clips:
        raise ValueError("floor_figures needs at least one held-out clip")
    scorer = RowScorer(build_tracker(tracker), frozen_row="frozen_frame", self_rows=("ground_truth",))
    videos = floor_videos(clips, codec, device=device)
    gt = videos["ground_truth"]
    for b, c in enumerate(clips):
        tr, vi, counts = input_tracks([c], num_tracks)
        tr, vi = tr[0, :, : counts[0]].numpy(), vi[0, :, : counts[0]].numpy()
        still = np.broadcast_to(gt[b][:1], gt[b].shape)
        scorer.add(
            Sample(str(b), gt[b], tr, vi), {**{row: vids[b] for row, vids in videos.items()}, "frozen_frame": still}
        )
    figures = {k: v for k, v in flat_figures(scorer.results()).items() if not k.endswith("per_sample")}
    return {**figures, "num_samples": len(clips), "tracker": tracker, "num_tracks": num_tracks}


def reference_rows(samples: list[Sample], *, codec=None) -> dict[str, dict[str, np.ndarray]]:
    """The references as rows of videos: the ground truth and the frozen first frame, and with ``codec``
    the floors of ``eval.floors``: the ground truth's round trip and the pixel-space oracle copier."""
    rows = {
        "ground_truth": {s.id: s.frames for s in samples},
        "frozen": {s.id: np.broadcast_to(s.frames[:1], s.frames.shape).copy() for s in samples},
    }
    if codec is not None:
        clips = [{"frames": s.frames, "tracks": s.tracks, "visibility": s.visibility} for s in samples]
        floors = floor_videos(clips, codec)
        for key in CODEC_REFERENCES:
            rows[key] = {s.id: floors[key][i] for i, s in enumerate(samples)}
    return rows
