"""Long streams scored per time window: does the student hold up at 1x, 4x, 10x and 40x its horizon?

A panning world shows canvas that no model can know from frame 0 once the camera has moved a frame's
width, so an error against its ground truth rises for a perfect model too. Two worlds, two kinds of measure:

* the *knowable* world (``knowable_world``: the camera circles its frame-0 position, sprites stay in view)
  keeps every frame predictable from frame 0 and the tracks: PSNR, SSIM and EPE per window against the
  ground truth are fair at any length, and a student that holds up keeps its 1x values;
* on the *panning* world only distribution measures are fair: per window, the latent energy (RMS of the
  student's latents over the ground truth's; 1 = the same energy: a drifting student grows or fades).

Window ``k x`` is the horizon's span of new frames ending at k horizons: pixel frames
``(k - 1)(T_h - 1) .. k (T_h - 1)`` (its first frame, the previous window's last, is where the EPE's tracker
starts; PSNR / SSIM skip it), with ``T_h`` the teacher's horizon in frames (25 for the tiny recipes).
Legend: T pixel frames, F latent frames, N tracks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from trackstream.data.trackers import build_tracker
from trackstream.data.video_io import image_tensor, to_uint8, video_tensor
from trackstream.eval.frechet import frechet_from_features
from trackstream.eval.metrics import EPE_TRACKER, motion_epe, video_psnr, video_ssim
from trackstream.eval.scorebook import input_tracks
from trackstream.eval.video_features import FVD_FRAMES, codec_video_features
from trackstream.models.streaming import first_chunk_given
from trackstream.models.tracks import latent_frames, sample_track_ids
from trackstream.stream.chunk_io import tracks_from_array
from trackstream.stream.chunks import chunk_pixel_frames
from trackstream.stream.engine import StreamingGenerator

__all__ = [
    "WINDOW_FACTORS",
    "knowable_world",
    "window_span",
    "window_scores",
    "long_horizon",
    "long_horizon_figures",
    "write_strip",
]

WINDOW_FACTORS = (1, 4, 10, 40)


def knowable_world(world):
    """``world`` (a ``data.synthetic.SyntheticWorld``) with an orbiting camera that always moves and
    sprites that never leave the frame: every frame stays knowable from frame 0 and the tracks."""
    return dataclasses.replace(world, camera_path="orbit", camera_pan_prob=1.0, exit_prob=0.0)


def window_span(horizon_frames: int, factor: int) -> tuple[int, int]:
    """[lo, hi] pixel frames (inclusive) of window ``factor`` x: the horizon's new frames ending at factor horizons."""
    step = horizon_frames - 1
    return (factor - 1) * step, factor * step


def window_scores(
    video: np.ndarray,
    gt: np.ndarray,
    tracks: np.ndarray,
    visibility: np.ndarray,
    latents: torch.Tensor,
    gt_latents: torch.Tensor,
    *,
    horizon_frames: int,
    factors: tuple[int, ...],
    tracker,
) -> dict:
    """Per window {psnr, ssim, epe, energy} of one stream: ``video`` / ``gt`` uint8 [T, H, W, 3], input
    ``tracks`` [T, N, 2] / ``visibility`` [T, N], ``latents`` / ``gt_latents`` [C, F, h, w]."""
    out = {}
    for k in factors:
        lo, hi = window_span(horizon_frames, k)
        if hi >= len(video):
            continue
        vis = visibility[lo : hi + 1]
        lat = slice(1 + lo // 4, 1 + hi // 4)  # latent j holds frames 4j-3..4j: the window's new frames
        rms = lambda z: float(z[:, lat].float().square().mean().sqrt())  # noqa: E731
        out[f"{k}x"] = {
            "psnr": video_psnr(video[lo : hi + 1], gt[lo : hi + 1]),
            "ssim": video_ssim(video[lo : hi + 1], gt[lo : hi + 1]),
            "epe": motion_epe(video[lo : hi + 1], tracks[lo : hi + 1], vis, tracker)[0] if vis.any() else float("nan"),
            "energy": rms(latents) / max(rms(gt_latents), 1e-8),
        }
    return out


@torch.no_grad()
def long_horizon(
    engine,
    *,
    clips: list[dict],
    codec,
    text_fn,
    horizon_frames: int,
    factors: tuple[int, ...] = WINDOW_FACTORS,
    seed: int = 0,
    num_tracks: int | None = None,
    tracker: str = EPE_TRACKER,
    strip_clip: int = 0,
    fvd_min_clips: int = 8,
) -> dict:
    """Stream every clip (ClipPool entries at least ``1 + max(factors) (T_h - 1)`` frames long) with its
    ground-truth tracks through ``engine`` (a ``stream.engine.StreamingGenerator``); returns the window
    scores averaged over clips (``windows``), per clip (``per_clip``), and ``strip``: for clip ``strip_clip``,
    the last frame of each window, generated and ground truth (uint8 [2, W, H, W, 3]). With at least
    ``fvd_min_clips`` clips each window also gets ``proxy_fvd``: the Fréchet distance of the codec's video
    features (``video_features.codec_video_features``, labelled: not FVD) of the window's first 17 frames
    across clips, against the ground truth's (a distribution measure, fair on the panning world)."""
    trk = build_tracker(tracker)
    gen = torch.Generator().manual_seed(seed)
    per_clip, curves, strip, snippets = [], [], None, {}
    for i, clip in enumerate(clips):
        tr, vi, counts = input_tracks([clip], num_tracks)
        T = tr.shape[1]
        text, lens = text_fn([clip["caption"]])
        ids = sample_track_ids(1, tr.shape[2], id_range=engine.network.track_id_range, generator=gen)
        state = engine.start(
            image_tensor(clip["frames"][0]),
            text,
            lens,
            track_ids=ids,
            seed=int(torch.randint(2**31 - 1, (), generator=gen)),
        )
        frames, lats = [], []
        for out in engine.stream(
            state, tracks_from_array(tr, vi), num_chunks=engine.causal.num_chunks(latent_frames(T))
        ):
            frames.append(out.frames)
            lats.append(out.latents.float())
        video = to_uint8(torch.cat(frames, dim=2)[0])
        gt_lat = codec.encode(video_tensor(clip["frames"]).to(engine.device)).float()[0]
        m = counts[0]
        scores = window_scores(
            video,
            clip["frames"],
            tr[0, :, :m].numpy(),
            vi[0, :, :m].numpy(),
            torch.cat(lats, dim=2)[0],
            gt_lat,
            horizon_frames=horizon_frames,
            factors=factors,
            tracker=trk,
        )
        per_clip.append(scores)
        for k in factors:
            lo, hi = window_span(horizon_frames, k)
            if lo + FVD_FRAMES < T:
                snippets.setdefault(f"{k}x", []).append(
                    (video[lo : lo + FVD_FRAMES + 1], clip["frames"][lo : lo + FVD_FRAMES + 1])
                )
        curves.append(_chunk_curves(engine.causal, torch.cat(lats, dim=2)[0], gt_lat, video, clip["frames"]))
        if i == strip_clip:
            ends = [window_span(horizon_frames, k)[1] for k in factors if window_span(horizon_frames, k)[1] < T]
            strip = np.stack([video[ends], clip["frames"][ends]])
    windows = {w: {m: _mean([c[w][m] for c in per_clip]) for m in per_clip[0][w]} for w in per_clip[0]}
    if len(clips) >= fvd_min_clips:
        for w, pairs in snippets.items():
            gen_f = codec_video_features(codec, [a for a, _ in pairs])
            gt_f = codec_video_features(codec, [b for _, b in pairs])
            windows[w]["proxy_fvd"] = frechet_from_features(gen_f, gt_f)
    per_chunk = {k: np.mean([c[k] for c in curves], axis=0).tolist() for k in curves[0]}
    return {"windows": windows, "per_clip": per_clip, "per_chunk": per_chunk, "strip": strip, "num_clips": len(clips)}


def _chunk_curves(causal, lat: torch.Tensor, gt_lat: torch.Tensor, video: np.ndarray, gt: np.ndarray) -> dict:
    """Per generated chunk: latent RMS, latent error against the ground truth (also relative to an UNRELATED
    video of the ground truth's distribution: 2 x its latents' per-channel variance, so ~1 once nothing is
    shared), RMS over the ground truth's, and PSNR of its pixel frames (make run's drift curves)."""
    unrelated = 2.0 * float(gt_lat.var(dim=(1, 2, 3)).mean())
    out = {k: [] for k in ("latent_rms", "latent_err", "latent_err_rel", "latent_rms_rel", "psnr")}
    first = 1 if first_chunk_given(causal) else 0  # a given chunk 0 is the image itself
    for i in range(first, causal.num_chunks(lat.shape[1])):
        s, f = causal.chunk_start(i), causal.chunk_len(i)
        z, ref = lat[:, s : s + f], gt_lat[:, s : s + f]
        err = float((z - ref).square().mean())
        rms, ref_rms = float(z.square().mean().sqrt()), float(ref.square().mean().sqrt())
        lo, hi = chunk_pixel_frames(causal, i)
        mse = float(np.mean((video[lo:hi].astype(np.float64) - gt[lo:hi].astype(np.float64)) ** 2))
        out["latent_rms"].append(rms)
        out["latent_err"].append(err)
        out["latent_err_rel"].append(err / unrelated)
        out["latent_rms_rel"].append(rms / max(ref_rms, 1e-8))
        out["psnr"].append(float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse))
    return out


def _mean(values: list[float]) -> float:
    v = np.asarray(values, np.float64)
    return float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else float("nan")


def write_strip(path, rows: list[tuple[str, np.ndarray]], columns: list[str]) -> None:
    """One picture: a row per stream (label, uint8 [W, H, W, 3]: the last frame of each window), a column
    per window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(label, frames) for label, frames in rows if frames is not None]
    if not rows:
        return
    fig, axes = plt.subplots(
        len(rows), len(columns), figsize=(1.4 * len(columns) + 1.6, 1.5 * len(rows)), squeeze=False
    )
    for r, (label, frames) in enumerate(rows):
        for c, title in enumerate(columns):
            ax = axes[r][c]
            if c < len(frames):
                ax.imshow(frames[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def long_horizon_figures(
    run_dir: Path,
    engines: dict,
    codec,
    conditioner,
    world,
    seeds: list[int],
    *,
    horizon_frames: int,
    factors: tuple[int, ...],
    cfg,
) -> dict:
    """``long_horizon`` windows of each student (``engines``: name -> its ``StreamingGenerator``; ``cfg``: the
    evaluation's ``StreamEvalConfig``) on the panning ``world`` and its knowable twin, with and without the
    sink: ``{<student>: {<world>_<with|without>_sink: {windows, per_clip, per_chunk}}}``; writes
    ``long_horizon.png`` (the last frame of every window: ground truth, then each student with and without the
    sink, per world)."""
    from trackstream.data.clips import ClipPool

    out = {name: {} for name in engines}
    strips = []
    for world_name, w in (("panning", world), ("knowable", knowable_world(world))):
        clips = ClipPool(w, seeds).clips
        for name, engine in engines.items():
            for tag, sink in (("with_sink", engine.config.causal.sink_chunks or 1), ("without_sink", 0)):
                conf = dataclasses.replace(
                    engine.config, causal=dataclasses.replace(engine.config.causal, sink_chunks=sink)
                )
                eng = StreamingGenerator(
                    engine.network, codec, config=conf, image_features_fn=conditioner.image_features
                )
                r = long_horizon(
                    eng,
                    clips=clips,
                    codec=codec,
                    text_fn=conditioner.text,
                    horizon_frames=horizon_frames,
                    factors=factors,
                    seed=cfg.seed,
                    num_tracks=cfg.num_tracks,
                    tracker=cfg.tracker,
                )
                strip = r.pop("strip")
                if not any(label == f"{world_name}: ground truth" for label, _ in strips):
                    strips.append((f"{world_name}: ground truth", strip[1]))  # the same clips for every stream
                strips.append((f"{world_name}: {name}, {tag.replace('_', ' ')}", strip[0]))
                out[name][f"{world_name}_{tag}"] = r
    write_strip(Path(run_dir) / "long_horizon.png", strips, [f"{k}x horizon" for k in factors])
    return out
