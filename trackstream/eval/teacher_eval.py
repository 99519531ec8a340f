"""Motion-following evaluation: sample held-out first frames + tracks, re-track, EPE.

For each held-out clip the generator gets the clip's first frame, caption and ground-truth
tracks (all tracks visible in frame 0, the "input tracks"); the video is sampled twice from the
SAME noise: with the tracks and with the tracks dropped (empty motion). Each decoded video is
scored against the input tracks by ``eval.metrics.motion_epe`` (the project's one EPE protocol:
queried at frame 0 by a tracker that never re-acquires, every input-visible entry scored, a lost
point held where it was last seen). Reference figures under the same protocol: the ground-truth
video (the tracker's own error floor) and a frozen video (the error of ignoring motion entirely).
Video quality: PSNR and SSIM of frames 1.. against the ground-truth clip (MotionStream reports
them next to EPE), with the frozen first frame as the reference a model must beat. Beside them the
quality columns of ``eval.quality`` (scored by ``eval.harness.RowScorer``, as ``trackstream eval`` scores): the no-hold EPE and its ratio to the frozen first
frame's (``no_hold_epe_<mode>``, ``no_hold_ratio_<mode>``; the frozen frame's by the tracker on the
still video), the share of points lost (``lost_share_<mode>``), and the brightness gap and texture
ratio against the ground truth per chunk and over the last 8 frames (``late_brightness_gap_<mode>``,
``late_texture_ratio_<mode>``, ``brightness_gap_per_chunk``, ``texture_ratio_per_chunk``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trackstream.data.clips import ClipPool
from trackstream.data.trackers import build_tracker
from trackstream.data.video_io import to_uint8
from trackstream.diffusion.samplers import Condition, SamplerConfig, sample
from trackstream.eval.harness import RowScorer
from trackstream.eval.metrics import EPE_TRACKER, check_epe_tracker
from trackstream.eval.sample import Sample
from trackstream.eval.scorebook import flat_figures, input_tracks
from trackstream.models.conditioner import Conditioner, encode_motion
from trackstream.models.tracks import latent_frames, sample_track_ids

__all__ = ["EvalConfig", "evaluate_motion", "teacher_generate", "overlay_tracks", "write_video"]

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    enabled: bool = True
    tracker: str = EPE_TRACKER  # the EPE protocol's tracker (eval.metrics.EPE_TRACKERS): lk_plain on CPU
    periodic_clips: int = 2  # held-out clips of the evaluation every trainer.sample_every steps
    num_frames: int | None = None  # held-out clip length; null: data.num_frames (train short, test long)
    batch_size: int = 8
    save_videos: int = 4  # held-out samples written to samples/ (with track overlays)
    use_ema: bool = True
    seed: int = 0
    num_tracks: int | None = (
        None  # input tracks per clip (a fixed random subset of those visible in frame 0); null: all
    )
    preview_clips: int = 0  # the first clips' frames returned under "preview" (uint8, not for JSON)

    def __post_init__(self) -> None:
        check_epe_tracker(self.tracker, "eval.tracker")
        if self.num_tracks is not None and self.num_tracks < 1:
            raise ValueError(f"eval.num_tracks={self.num_tracks} must be >= 1 (or null for all tracks)")
        if self.num_frames is not None and (self.num_frames < 1 or (self.num_frames - 1) % 4):
            raise ValueError(f"eval.num_frames={self.num_frames} must be 4k + 1 (the codec's temporal factor) or null")
        if self.batch_size < 1 or self.save_videos < 0:
            raise ValueError(
                f"eval.batch_size={self.batch_size} must be >= 1 and eval.save_videos={self.save_videos} >= 0"
            )


def overlay_tracks(
    frames: np.ndarray, tracks: np.ndarray, visibility: np.ndarray, *, max_points: int = 24
) -> np.ndarray:
    """Draw up to ``max_points`` evenly chosen visible tracks [T, N, 2] on frames [T, H, W, 3]
    (copy), one colour per track, so motion can be followed without hiding the video."""
    import cv2

    out = frames.copy()
    n = tracks.shape[1]
    chosen = np.linspace(0, n - 1, num=min(n, max_points)).round().astype(int) if n else []
    hues = np.linspace(0, 179, num=max(1, len(chosen)), endpoint=False).astype(np.uint8)
    colours = cv2.cvtColor(
        np.stack([hues, np.full_like(hues, 255), np.full_like(hues, 255)], 1)[None], cv2.COLOR_HSV2RGB
    )[0]
    for t in range(len(out)):
        for k, j in enumerate(chosen):
            x, y = tracks[t, j]
            if visibility[t, j] and np.isfinite(x) and np.isfinite(y):
                out[
                    t,
                    int(np.clip(round(float(y)), 0, out.shape[1] - 1)),
                    int(np.clip(round(float(x)), 0, out.shape[2] - 1)),
                ] = colours[k]
    return out


def write_video(path: Path, frames: np.ndarray, *, fps: int) -> Path:
    from trackstream.data.video_io import write_mp4

    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(str(path), frames, fps=fps)
    return path


@torch.no_grad()
def evaluate_motion(
    network: torch.nn.Module,
    *,
    conditioner: Conditioner,
    clips: ClipPool,
    sampler: SamplerConfig,
    shift: float,
    cfg: EvalConfig,
    embed_dim: int,
    device: torch.device,
    out_dir: Path | None = None,
    fps: int = 8,
    tag: str = "eval",
    clean_first_frame: bool | None = None,
) -> dict:
    """Returns EPE figures (pixels) and per-sample values; writes ``cfg.save_videos`` held-out
    samples (generated with / without tracks and the ground truth, tracks overlaid) to ``out_dir``."""
    if clean_first_frame is None:  # the network's own training convention (network.json)
        clean_first_frame = getattr(network, "module", network).conventions.clean_first_frame  # DDP-wrapped or not
    tracker = build_tracker(cfg.tracker)
    network.eval()
    gen = torch.Generator().manual_seed(cfg.seed)
    # the ground-truth video is the tracker's floor, not compared with itself; frozen_video: EPE without a tracker
    scorer = RowScorer(tracker, frozen_row="frozen_video", self_rows=("ground_truth_video",))
    preview: dict[str, list[np.ndarray]] = {"with_tracks": [], "without_tracks": [], "ground_truth_video": []}
    saved = []
    n = len(clips)
    for start in range(0, n, cfg.batch_size):
        idx = list(range(start, min(n, start + cfg.batch_size)))
        video = clips.videos(idx)  # [B, 3, T, H, W]
        # input tracks: those visible in the first frame (the tracker queries them at t = 0), as the streamed
        # student's evaluation picks them: [B, T, N, 2], [B, T, N] padded to the batch's most
        tr, vi, counts = input_tracks([clips.clips[i] for i in idx], cfg.num_tracks)
        results = _sample_both(
            network,
            conditioner,
            video,
            tr,
            vi,
            captions=[clips.clips[i]["caption"] for i in idx],
            gen=gen,
            sampler=sampler,
            shift=shift,
            embed_dim=embed_dim,
            device=device,
            clean_first_frame=clean_first_frame,
        )
        results["ground_truth_video"] = video
        for b in range(len(idx)):
            m = counts[b]
            gt_tr, gt_vis = tr[b, :, :m].numpy(), vi[b, :, :m].numpy()
            i = idx[b]
            videos = {mode: to_uint8(vids[b]) for mode, vids in results.items()}  # [T, H, W, 3] uint8 each
            gt_frames = videos["ground_truth_video"]
            still = np.broadcast_to(gt_frames[:1], gt_frames.shape)
            scorer.add(Sample(str(i), gt_frames, gt_tr, gt_vis), {**videos, "frozen_video": still})
            if i < cfg.preview_clips:
                for mode, frames in videos.items():
                    preview[mode].append(frames)
            if out_dir is not None and i < cfg.save_videos:  # the first clips, all three videos each
                for mode in ("with_tracks", "without_tracks", "ground_truth_video"):
                    frames = overlay_tracks(videos[mode], gt_tr, gt_vis)
                    path = write_video(out_dir / f"{tag}_{i:03d}_{mode}.mp4", frames, fps=fps)
                    saved.append({"path": str(path), "mode": mode, "clip": i})
    figures = flat_figures(scorer.results())
    figures["epe_ratio_with_over_without"] = figures["epe_with_tracks"] / max(figures["epe_without_tracks"], 1e-9)
    figures.update(
        num_samples=n,
        sampler_steps=sampler.steps,
        guidance=sampler.guidance.mode,
        w_text=sampler.guidance.w_text,
        w_motion=sampler.guidance.w_motion,
        nfe_per_video=sampler.nfe,
        tracker=cfg.tracker,
        videos=saved,
    )
    if cfg.preview_clips:
        figures["preview"] = {k: np.stack(v) for k, v in preview.items() if v}
    return figures


def teacher_generate(
    network: torch.nn.Module,
    *,
    conditioner: Conditioner,
    sampler: SamplerConfig,
    shift: float,
    embed_dim: int,
    device: torch.device,
    clean_first_frame: bool | None = None,
):
    """``eval.placements``' ``Generate`` of the teacher: each clip's first frame and caption with the given
    tracks, sampled by ``sampler`` from noise seeded by the call's ``seed`` (uint8 videos, one per clip)."""
    if clean_first_frame is None:
        clean_first_frame = getattr(network, "module", network).conventions.clean_first_frame

    @torch.no_grad()
    def generate(clips: list[dict], tr: torch.Tensor, vi: torch.Tensor, seed: int) -> list[np.ndarray]:
        video = torch.stack([ClipPool.of([c]).video(0) for c in clips])  # [B, 3, T, H, W]
        out = _sample_both(
            network,
            conditioner,
            video,
            tr,
            vi,
            captions=[c["caption"] for c in clips],
            gen=torch.Generator().manual_seed(seed),
            sampler=sampler,
            shift=shift,
            embed_dim=embed_dim,
            device=device,
            clean_first_frame=clean_first_frame,
            modes=("with_tracks",),
        )
        return [to_uint8(v) for v in out["with_tracks"]]

    return generate


def _sample_both(
    network,
    conditioner: Conditioner,
    video,
    tr,
    vi,
    *,
    captions,
    gen,
    sampler,
    shift,
    embed_dim,
    device,
    clean_first_frame: bool,
    modes: tuple[str, ...] = ("with_tracks", "without_tracks"),
) -> dict:
    """The batch's videos sampled from the SAME noise with the tracks and without them (empty motion):
    {"with_tracks", "without_tracks"} (those of ``modes``) -> decoded [B, 3, T, H, W]. Draws the track ids,
    then the noise, from ``gen``. No tracks at all (N = 0) is the empty motion."""
    B, _, T, H, W = video.shape
    text, text_len = conditioner.text(captions)
    image = conditioner.image(video[:, :, 0], num_frames=T)
    features = conditioner.image_features(video[:, :, 0])  # CLIP tokens, or None without the image branch
    first = conditioner.first_latent(video[:, :, 0]) if clean_first_frame else None
    net = getattr(network, "module", network)  # DDP-wrapped or not
    ids = sample_track_ids(B, tr.shape[2], id_range=net.track_id_range, generator=gen)
    sf = conditioner.codec.spatial_factor
    motion = encode_motion(
        tr.to(device),
        vi.to(device),
        ids,
        embed_dim=embed_dim,
        height=H,
        width=W,
        latent_height=H // sf,
        splat=net.track_splat,
        convention=net.track_convention,
    )
    latent_shape = (B, net.latent_channels, latent_frames(T), H // sf, W // sf)
    noise = torch.randn(latent_shape, generator=gen).to(device)
    results = {}
    for mode, m in (("with_tracks", motion if tr.shape[2] else None), ("without_tracks", None)):
        if mode not in modes:
            continue
        cond = Condition(
            text=text.to(device),
            text_lengths=text_len.to(device),
            null_text=conditioner.null_text,
            null_text_lengths=conditioner.null_lengths,
            image=image,
            motion=m,
            first_latent=first,
            image_features=None if features is None else features.to(device),  # offloaded encoders: CPU
        )
        lat = sample(network, noise, cond, cfg=sampler, shift=shift)
        results[mode] = conditioner.codec.decode(lat)  # [B, 3, T, H, W]
    return results
