"""The streaming student's measures, clip by clip: held-out motion following, long rollouts, latency.

* ``evaluate_stream_motion``: the teacher's protocol (trackstream/eval/teacher_eval.py) run through the
  streaming engine: per held-out clip the first frame, caption and input tracks (those visible
  in frame 0), tracks handed over chunk by chunk; generated with and without tracks from the
  same noise; EPE by ``eval.metrics.motion_epe`` (the one protocol, as the teacher's), with the quality
  columns of ``eval.quality`` (no-hold EPE and its ratio to the frozen first frame's, points lost,
  brightness / texture per chunk against the ground truth). Writes
  ``samples/<id>/{video.mp4, tracks.npy [T, N, 2] pixels, visibility.npy [T, N]}``.
* ``long_rollout``: ``factor`` x the training horizon on synthetic clips rendered that long, with
  the ground-truth tracks streamed in; per chunk: latent RMS, latent error and PSNR against the
  ground truth (the drift measures) - run once with the sink and once without; over the whole
  rollout EPE, PSNR, SSIM and the quality columns.
* ``chunk_latency``: per-chunk wall time over a rollout, plus a re-timing of an early and the last
  chunk from their kept (immutable) states, interleaved so machine-load drift hits both alike.
NFE: every DiT call is an evaluation; ``nfe_video_equivalent`` weights each call by the share of
the video's latent frames it processes (a chunk call = 3/F of a full-clip teacher call).
The engines follow their network's device and every timing here is synchronised with it.
``eval.stream_eval.run_evaluation`` runs them all for ``make run``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from trackstream.data.placements import EVAL_PLACEMENTS
from trackstream.data.trackers import build_tracker
from trackstream.data.video_io import image_tensor, to_uint8, video_tensor
from trackstream.eval.harness import RowScorer
from trackstream.eval.metrics import EPE_TRACKER, check_epe_tracker
from trackstream.eval.placements import check_placements
from trackstream.eval.quality import QUALITY_STEMS
from trackstream.eval.sample import Sample
from trackstream.eval.scorebook import flat_figures, input_tracks
from trackstream.models.precision import synchronize
from trackstream.models.streaming import StreamConfig
from trackstream.models.tracks import latent_frames, sample_track_ids
from trackstream.stream.chunk_io import collect, tracks_from_array
from trackstream.stream.engine import StreamingGenerator

__all__ = [
    "StreamEvalConfig",
    "evaluate_stream_motion",
    "stream_generate",
    "long_rollout",
    "chunk_latency",
    "stream_nfe",
    "drift_summary",
]


@dataclass
class StreamEvalConfig:
    tracker: str = EPE_TRACKER  # the EPE protocol's tracker (eval.metrics.motion_epe), as the teacher's
    batch_size: int = 8
    seed: int = 0
    long_factor: int = 10  # long rollout = factor x the training horizon
    long_clips: int = 2
    timing_repeats: int = 25
    num_tracks: int | None = None  # input tracks per clip (random subset of those visible in frame 0); None: all
    preview_clips: int = 3  # held-out clips shown in samples.png (ground truth / teacher / students)
    side_by_side_gifs: int = 4  # held-out samples whose side-by-side GIF report.md embeds (every sample gets an mp4)
    long_students: str = "last"  # whose long streams are scored per window: "last" (the evaluated one) or "all"
    # the input placements the evaluated student is also given (eval.placements; () : none); the teacher's rows
    # are the lattice and none its own evaluation made
    placements: tuple[str, ...] = EVAL_PLACEMENTS

    def __post_init__(self) -> None:
        check_epe_tracker(self.tracker, "StreamEvalConfig.tracker")
        if self.placements:
            self.placements = check_placements(self.placements, field="StreamEvalConfig.placements")
        if self.long_students not in ("last", "all"):
            raise ValueError(f"StreamEvalConfig.long_students={self.long_students!r}: use 'last' or 'all'")


def stream_nfe(config: StreamConfig, num_latents: int) -> dict:
    causal = config.causal
    n = causal.num_chunks(num_latents)
    calls = sum(config.nfe_per_chunk(i) for i in range(n))
    frames = sum(config.nfe_per_chunk(i) * causal.chunk_len(i) for i in range(n))
    return {"calls": calls, "video_equivalent": frames / num_latents, "chunks": n}


def stream_generate(engine: StreamingGenerator, *, text_fn):
    """``eval.placements``' ``Generate`` of a streaming student: each clip's first frame and caption, the given
    tracks handed over chunk by chunk (none at all: the stream without tracks), noise seeded by ``seed``."""

    @torch.no_grad()
    def generate(clips: list[dict], tr: torch.Tensor, vi: torch.Tensor, seed: int) -> list[np.ndarray]:
        gen = torch.Generator().manual_seed(seed)
        first = torch.cat([image_tensor(c["frames"][0]) for c in clips])  # [B, 3, H, W]
        text, lens = text_fn([c["caption"] for c in clips])
        ids = sample_track_ids(len(clips), tr.shape[2], id_range=engine.network.track_id_range, generator=gen)
        state = engine.start(first, text, lens, track_ids=ids, seed=int(torch.randint(2**31 - 1, (), generator=gen)))
        source = tracks_from_array(tr, vi) if tr.shape[2] else None
        n_chunks = engine.causal.num_chunks(latent_frames(tr.shape[1]))
        frames, _, _ = collect(engine.stream(state, source, num_chunks=n_chunks))
        return [to_uint8(v) for v in frames]

    return generate


@torch.no_grad()
def evaluate_stream_motion(
    engine: StreamingGenerator, *, clips: list[dict], text_fn, cfg: StreamEvalConfig, out_dir: Optional[Path], fps: int
) -> dict:
    """EPE with / without tracks of the streamed student on held-out ``clips`` (ClipPool entries).

    ``text_fn(captions) -> (emb, lengths)`` is the frozen text encoder. Writes the per-sample
    folders under ``out_dir/samples`` when given."""
    from trackstream.data.video_io import write_mp4

    tracker = build_tracker(cfg.tracker)
    gen = torch.Generator().manual_seed(cfg.seed)
    scorer = RowScorer(tracker, frozen_row="frozen_video")  # frozen_video: the no-hold ratios' denominator
    kept: dict[str, list[np.ndarray]] = {"with_tracks": [], "without_tracks": []}  # every clip, for side-by-sides
    preview: dict[str, list[np.ndarray]] = {"with_tracks": [], "without_tracks": []}
    latents_all = []
    num_latents = None
    for start in range(0, len(clips), cfg.batch_size):
        batch = clips[start : start + cfg.batch_size]
        B = len(batch)
        first = torch.cat([image_tensor(c["frames"][0]) for c in batch])  # [B, 3, H, W]
        tr, vi, counts = input_tracks(batch, cfg.num_tracks)
        T = tr.shape[1]
        text, lens = text_fn([c["caption"] for c in batch])
        ids = sample_track_ids(B, tr.shape[2], id_range=engine.network.track_id_range, generator=gen)
        seed = int(torch.randint(2**31 - 1, (), generator=gen))
        n_chunks = engine.causal.num_chunks(latent_frames(T))
        videos = {}
        for mode, source in (("with_tracks", tracks_from_array(tr, vi)), ("without_tracks", None)):
            state = engine.start(first, text, lens, track_ids=ids, seed=seed)
            frames, lat, _ = collect(engine.stream(state, source, num_chunks=n_chunks))
            videos[mode] = frames
            if mode == "with_tracks":
                latents_all.append(lat)
                num_latents = lat.shape[2]
        for b, clip in enumerate(batch):
            m = counts[b]
            gt_tr, gt_vis = tr[b, :, :m].numpy(), vi[b, :, :m].numpy()
            frames = {mode: to_uint8(vids[b]) for mode, vids in videos.items()}  # [T, H, W, 3] uint8
            still = np.broadcast_to(clip["frames"][:1], clip["frames"].shape)
            scorer.add(
                Sample(str(clip["meta"]["id"]), clip["frames"], gt_tr, gt_vis), {**frames, "frozen_video": still}
            )
            for mode, f in frames.items():
                kept[mode].append(f)
                if start + b < cfg.preview_clips:
                    preview[mode].append(f)
            if out_dir is not None:
                folder = Path(out_dir) / "samples" / str(clip["meta"]["id"])
                folder.mkdir(parents=True, exist_ok=True)
                write_mp4(str(folder / "video.mp4"), frames["with_tracks"], fps=fps)
                write_mp4(str(folder / "video_without_tracks.mp4"), frames["without_tracks"], fps=fps)
                np.save(folder / "tracks.npy", gt_tr.astype(np.float32))
                np.save(folder / "visibility.npy", gt_vis.astype(bool))
    nfe = stream_nfe(engine.config, num_latents)
    out = flat_figures(scorer.results())
    out["frames"] = kept
    if cfg.preview_clips:
        out["preview"] = {k: np.stack(v) for k, v in preview.items() if v}
    out.update(
        num_samples=len(clips),
        nfe_calls_per_video=nfe["calls"],
        nfe_video_equivalent_per_video=nfe["video_equivalent"],
        chunks_per_video=nfe["chunks"],
        config=engine.config.name,
    )
    return out


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.float() - b.float()).square().mean())
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)  # range [-1, 1]: peak-to-peak 2


@torch.no_grad()
def long_rollout(
    engine: StreamingGenerator,
    *,
    clips: list[dict],
    codec,
    text_fn,
    seed: int = 0,
    num_tracks: int | None = None,
    tracker: str = EPE_TRACKER,
) -> dict:
    """Per-chunk drift measures of one long streamed rollout per clip (averaged over clips), and the
    whole rollout's EPE (the one protocol, ``eval.metrics.motion_epe``, against the input tracks),
    PSNR and SSIM, averaged over clips, with the quality columns (``eval.quality``: ``no_hold_epe_whole``,
    ``no_hold_ratio_whole``, ``lost_share_whole``, ``late_brightness_gap_whole``, ``late_texture_ratio_whole``
    and per 12-frame chunk ``brightness_gap_per_chunk`` / ``texture_ratio_per_chunk``)."""
    gen = torch.Generator().manual_seed(seed)
    scorer = RowScorer(build_tracker(tracker), frozen_row="frozen")  # the whole rollouts, and the frozen frame
    # latent_err_rel: latent error / the error of an UNRELATED video from the ground truth's
    # distribution (2 x the ground-truth latents' per-channel variance). Error against ground truth
    # must rise on a long panning rollout (the canvas it reveals is unknowable from frame 0); it
    # saturates near 1 while the rollout stays a plausible video, and goes past 1 when it drifts
    # out of distribution (saturated colours, exploding latents). latent_rms_rel: rollout latent
    # RMS / ground-truth latent RMS of the same chunk (1 = same energy).
    per_chunk: dict[str, list[list[float]]] = {
        "latent_rms": [],
        "latent_err": [],
        "latent_err_rel": [],
        "latent_rms_rel": [],
        "psnr": [],
    }
    for clip in clips:
        first = image_tensor(clip["frames"][0])
        tr, vi, _ = input_tracks([clip], num_tracks)
        T = tr.shape[1]
        gt = video_tensor(clip["frames"])  # [1, 3, T, H, W]
        gt = gt.to(engine.device)  # compared with the stream's frames and latents, which live there
        gt_lat = codec.encode(gt).float()
        unrelated = 2.0 * float(gt_lat.float().var(dim=(0, 2, 3, 4)).mean())  # E|x - y|^2, x, y independent
        text, lens = text_fn([clip["caption"]])
        ids = sample_track_ids(1, tr.shape[2], id_range=engine.network.track_id_range, generator=gen)
        state = engine.start(first, text, lens, track_ids=ids, seed=int(torch.randint(2**31 - 1, (), generator=gen)))
        n = engine.causal.num_chunks(latent_frames(T))
        rows = {k: [] for k in per_chunk}
        chunks = []
        for out in engine.stream(state, tracks_from_array(tr, vi), num_chunks=n):
            chunks.append(out.frames)
            if out.index == 0:
                continue  # the given first frame
            s, f = engine.causal.chunk_start(out.index), engine.causal.chunk_len(out.index)
            lo, hi = out.pixel_range
            lat = out.latents.float()
            rows["latent_rms"].append(float(lat.square().mean().sqrt()))
            ref = gt_lat[:, :, s : s + f]
            err = float((lat - ref).square().mean())
            rows["latent_err"].append(err)
            rows["latent_err_rel"].append(err / unrelated)
            rows["latent_rms_rel"].append(
                float(lat.square().mean().sqrt() / ref.square().mean().sqrt().clamp_min(1e-8))
            )
            rows["psnr"].append(_psnr(out.frames, gt[:, :, lo:hi]))
        for k in per_chunk:
            per_chunk[k].append(rows[k])
        video = to_uint8(torch.cat(chunks, dim=2)[0])  # [T, H, W, 3]
        still = np.broadcast_to(clip["frames"][:1], clip["frames"].shape)
        sample = Sample(str(clip["meta"]["id"]), clip["frames"], tr[0].numpy(), vi[0].numpy())
        scorer.add(sample, {"whole": video, "frozen": still})
    curves = {k: np.mean(np.array(v), axis=0).tolist() for k, v in per_chunk.items()}
    scores = flat_figures(scorer.results())
    return {
        "per_chunk": curves,
        "chunks": len(curves["psnr"]),
        "config": engine.config.name,
        **{f"{k}_whole": scores.get(f"{k}_whole", float("nan")) for k in ("epe", "psnr", "ssim", *QUALITY_STEMS)},
        **{k: scores[k]["whole"] for k in ("brightness_gap_per_chunk", "texture_ratio_per_chunk")},
    }


def drift_summary(curves: dict, *, horizon_chunks: int, tail: int = 3) -> dict:
    """Late (last ``tail`` chunks) over early (chunks inside the training horizon) for each measure."""
    out = {}
    for k, v in curves.items():
        early, late = float(np.mean(v[:horizon_chunks])), float(np.mean(v[-tail:]))
        out[k] = {
            "early": early,
            "late": late,
            "late_over_early": late / early if early else float("nan"),
            "max": float(np.max(v)),
            "min": float(np.min(v)),
        }
    return out


@torch.no_grad()
def chunk_latency(
    engine: StreamingGenerator,
    *,
    clip: dict,
    text_fn,
    num_chunks: int,
    early_chunk: int = 3,
    num_tracks: int | None = None,
    repeats: int = 15,
    seed: int = 0,
) -> dict:
    """Per-chunk latency of a B = 1 stream (tracks supplied per chunk) and an interleaved re-timing
    of chunk ``early_chunk`` and the last chunk from their kept states.

    The ratio uses the minimum over the repeats (as ``timeit`` does: other processes on a shared
    CPU only ever add time); medians are reported too. On a shared CPU both scatter from run to run for two chunks of
    identical work, so read a ratio a few per cent from 1 as noise."""
    first = image_tensor(clip["frames"][0])
    tr, vi, _ = input_tracks([clip], num_tracks)
    text, lens = text_fn([clip["caption"]])
    source = tracks_from_array(tr, vi, hold_last=True)
    ids = sample_track_ids(
        1, tr.shape[2], id_range=engine.network.track_id_range, generator=torch.Generator().manual_seed(seed)
    )
    state = engine.start(first, text, lens, track_ids=ids, seed=seed)
    seconds, kept = [], {}
    assert num_chunks >= 2, f"chunk latency needs two chunks to compare, got {num_chunks}"
    last = num_chunks - 1
    early_chunk = min(early_chunk, last - 1)  # a short stream's early chunk: the one before its last
    for i in range(num_chunks):
        if i in (early_chunk, last):
            kept[i] = state
        out, state = engine.step(state, *source(i, engine.pixel_range(i)))
        seconds.append(out.seconds)
    times = {early_chunk: [], last: []}
    for r in range(repeats + 2):  # 2 warm-up rounds
        for i in (early_chunk, last) if r % 2 == 0 else (last, early_chunk):
            synchronize(engine.device)  # queued GPU work would otherwise land in (or out of) the timing
            t0 = time.perf_counter()
            engine.step(kept[i], *source(i, engine.pixel_range(i)))
            synchronize(engine.device)
            if r >= 2:
                times[i].append(time.perf_counter() - t0)
    med = {i: statistics.median(v) for i, v in times.items()}
    best = {i: min(v) for i, v in times.items()}
    steady = seconds[early_chunk : early_chunk + 5]
    return {
        "per_chunk_seconds": seconds,
        "early_chunk": early_chunk,
        "last_chunk": last,
        "repeats": repeats,
        "retimed_early_s": best[early_chunk],
        "retimed_last_s": best[last],
        "latency_ratio_last_over_early": best[last] / best[early_chunk],
        "retimed_median_early_s": med[early_chunk],
        "retimed_median_last_s": med[last],
        "median_ratio_last_over_early": med[last] / med[early_chunk],
        "in_stream_ratio_last5_over_early5": statistics.median(seconds[-5:]) / statistics.median(steady),
        "cache_frames_last": state.cache.frames,
        "cache_bytes_last": state.cache.nbytes(),
    }
