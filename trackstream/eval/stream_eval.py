"""Evaluation of the streaming student: held-out motion following, long rollouts, latency.

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
Device and dtype: ``run_evaluation(device=, dtype=)`` (default CUDA + bf16 when a GPU is present,
else CPU + fp32) loads the teacher and every student through ``models.conditioner.load_export``;
the engines follow their network's device and every timing here is synchronised with it.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from trackstream.data.trackers import build_tracker
from trackstream.data.video_io import image_tensor, to_uint8, video_tensor
from trackstream.eval.long_horizon import WINDOW_FACTORS, long_horizon_figures
from trackstream.eval.metrics import EPE_TRACKER, check_epe_tracker
from trackstream.eval.quality import QUALITY_STEMS, REFERENCE_QUALITY, model_quality
from trackstream.eval.scorebook import ScoreBook, input_tracks
from trackstream.models.conditioner import load_export
from trackstream.models.precision import synchronize
from trackstream.models.tracks import latent_frames, sample_track_ids
from trackstream.stream.chunks import StreamConfig
from trackstream.stream.engine import StreamingGenerator, collect, tracks_from_array

__all__ = [
    "StreamEvalConfig",
    "input_tracks",
    "to_uint8",
    "evaluate_stream_motion",
    "long_rollout",
    "chunk_latency",
    "stream_nfe",
    "drift_summary",
    "run_evaluation",
    "write_contact_sheet",
    "write_side_by_sides",
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

    def __post_init__(self) -> None:
        check_epe_tracker(self.tracker, "StreamEvalConfig.tracker")
        if self.long_students not in ("last", "all"):
            raise ValueError(f"StreamEvalConfig.long_students={self.long_students!r}: use 'last' or 'all'")


def stream_nfe(config: StreamConfig, num_latents: int) -> dict:
    causal = config.causal
    n = causal.num_chunks(num_latents)
    calls = sum(config.nfe_per_chunk(i) for i in range(n))
    frames = sum(config.nfe_per_chunk(i) * causal.chunk_len(i) for i in range(n))
    return {"calls": calls, "video_equivalent": frames / num_latents, "chunks": n}


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
    book = ScoreBook(tracker)
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
        ids = sample_track_ids(B, tr.shape[2], generator=gen)
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
            for mode, f in frames.items():
                book.add(mode, f, clip["frames"], gt_tr, gt_vis)
                kept[mode].append(f)
                if start + b < cfg.preview_clips:
                    preview[mode].append(f)
            book.add_frozen(clip["frames"], gt_tr, gt_vis)  # frozen_video: the no-hold ratios' denominator
            if out_dir is not None:
                folder = Path(out_dir) / "samples" / str(clip["meta"]["id"])
                folder.mkdir(parents=True, exist_ok=True)
                write_mp4(str(folder / "video.mp4"), frames["with_tracks"], fps=fps)
                write_mp4(str(folder / "video_without_tracks.mp4"), frames["without_tracks"], fps=fps)
                np.save(folder / "tracks.npy", gt_tr.astype(np.float32))
                np.save(folder / "visibility.npy", gt_vis.astype(bool))
    nfe = stream_nfe(engine.config, num_latents)
    out = book.figures()
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
    book = ScoreBook(build_tracker(tracker), frozen_row="frozen")  # the whole rollouts, and the frozen frame
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
        ids = sample_track_ids(1, tr.shape[2], generator=gen)
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
        book.add("whole", video, clip["frames"], tr[0].numpy(), vi[0].numpy())
        book.add_frozen(clip["frames"], tr[0].numpy(), vi[0].numpy())
    curves = {k: np.mean(np.array(v), axis=0).tolist() for k, v in per_chunk.items()}
    scores = book.figures()
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
    CPU only ever add time); medians are reported too. On a shared 2-core CPU both scatter by
    5-10 % from run to run for two chunks of identical work, so read one ratio near 1.05 as noise."""
    first = image_tensor(clip["frames"][0])
    tr, vi, _ = input_tracks([clip], num_tracks)
    text, lens = text_fn([clip["caption"]])
    source = tracks_from_array(tr, vi, hold_last=True)
    ids = sample_track_ids(1, tr.shape[2], generator=torch.Generator().manual_seed(seed))
    state = engine.start(first, text, lens, track_ids=ids, seed=seed)
    seconds, kept = [], {}
    last = num_chunks - 1
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


def write_contact_sheet(path: Path, rows: list[tuple[str, np.ndarray]], *, every: int = 4) -> Path:
    """A PNG of held-out samples: for each clip one row per model (``rows``: label, uint8 frames
    [clips, T, H, W, 3]), every ``every``-th frame left to right. Lets a reader see what the EPE
    figures were measured on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("write_contact_sheet: no rows to draw")
    clips, T = rows[0][1].shape[:2]
    idx = list(range(0, T, every))
    fig, axes = plt.subplots(clips * len(rows), 1, figsize=(1.1 * len(idx), 1.2 * clips * len(rows)), squeeze=False)
    for c in range(clips):
        for r, (label, frames) in enumerate(rows):
            ax = axes[c * len(rows) + r, 0]
            ax.imshow(np.concatenate([frames[c, t] for t in idx], axis=1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_ylabel(f"{c}: {label}", rotation=0, ha="right", va="center", fontsize=7)
    axes[-1, 0].set_xlabel("frames " + ", ".join(map(str, idx)), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def write_side_by_sides(
    run_dir: Path, clips: list[dict], videos: dict[str, np.ndarray], *, num_tracks: int | None, fps: int, gifs: int
) -> list[dict]:
    """Per held-out sample ``samples/<id>/side_by_side.mp4`` (ground truth | teacher | students, the
    input tracks drawn on each), and a GIF for the first ``gifs`` samples (report.md embeds them)."""
    from trackstream.data.video_io import write_mp4
    from trackstream.stream.visualize import side_by_side, write_gif

    out = []
    for i, clip in enumerate(clips):
        tr, vi, counts = input_tracks([clip], num_tracks)
        m = counts[0]
        panels = [(label, v[i]) for label, v in videos.items()]
        sbs = side_by_side(panels, tr[0, :, :m].numpy(), vi[0, :, :m].numpy())
        folder = Path(run_dir) / "samples" / str(clip["meta"]["id"])
        folder.mkdir(parents=True, exist_ok=True)
        write_mp4(str(folder / "side_by_side.mp4"), sbs, fps=fps)
        entry = {
            "id": str(clip["meta"]["id"]),
            "mp4": str((folder / "side_by_side.mp4").relative_to(run_dir)),
            "panels": list(videos),
        }
        if i < gifs:
            write_gif(folder / "side_by_side.gif", sbs, fps=fps, max_width=400)
            entry["gif"] = str((folder / "side_by_side.gif").relative_to(run_dir))
        out.append(entry)
    return out


def student_network(folder, *, codec_name: str, codec: str, device, dtype):
    """A student export on ``device`` in ``dtype`` through ``load_export`` (the one loading path); its own
    codec and conditioner are dropped: the evaluation shares the teacher's, which are the same."""
    net, _, _ = load_export(folder, codec_name=codec_name, codec=codec, device=device, dtype=dtype)
    return net


def run_evaluation(
    run_dir: Path,
    *,
    teacher: str,
    codec: str,
    students: dict[str, str],
    data,
    teacher_steps: int,
    shift: float,
    cfg: StreamEvalConfig | None = None,
    codec_name: str = "tiny-ae",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    student_stage: str = "dmd",
) -> dict:
    """The evaluation of ``make run`` on held-out clips (see the module docstring); returns figures.

    ``teacher``/``students``: exported network folders; ``codec``: the teacher's codec file
    (``codec_name`` in models.codecs). The last student of ``students`` is the one whose samples
    are written and whose long rollouts and latency are measured (``cfg.long_students="all"``: every
    student's long streams); ``student_stage`` names the stage that made the one called "student" ("dmd"
    or "rl": its label in the videos; figures keep the prefix ``student_``). Each student streams with the
    chunking, steps and shift its export records (``conventions.streaming``). ``data``: the stages'
    ``data.clips.DataConfig`` (world, size, clip length; ``eval_samples`` held-out clips from its
    evaluation seed namespace). ``device`` / ``dtype``: ``models.precision`` (None / "auto": CUDA + bf16
    when a GPU is present, else CPU + fp32)."""
    from trackstream.data.batching import derive_seed
    from trackstream.data.clips import ClipPool, heldout_clips, make_world
    from trackstream.diffusion.samplers import GuidanceConfig, SamplerConfig
    from trackstream.eval.floors import floor_figures
    from trackstream.eval.teacher_eval import EvalConfig, evaluate_motion
    from trackstream.models.precision import resolve_precision

    if data.source != "synthetic":  # its long clips and its world record are the synthetic world's
        raise ValueError(
            f"make run's evaluation is of the synthetic world (data.source={data.source!r}); evaluate networks "
            "trained on shards with `python -m trackstream.eval benchmark.name=shards benchmark.path=<held-out shards>`"
        )
    if student_stage not in ("dmd", "rl"):
        raise ValueError(f"student_stage={student_stage!r}: the evaluated student comes from 'dmd' or 'rl'")
    cfg = cfg or StreamEvalConfig()
    run_dir = Path(run_dir)
    device, dtype = resolve_precision(device, dtype)
    # the teacher's codec and conditioner serve the students too (the same latent space and text encoder)
    teacher_net, codec_module, conditioner = load_export(
        teacher, codec_name=codec_name, codec=codec, device=device, dtype=dtype
    )
    num_frames, fps = data.num_frames, data.fps
    clips = heldout_clips(data)
    figures: dict = {
        "num_heldout": len(clips),
        "num_frames": num_frames,
        "eval_world": {
            **dataclasses.asdict(make_world(data)),
            "eval_seed": data.eval_seed,
            "input_tracks_per_clip": cfg.num_tracks,
        },
    }

    t0 = time.perf_counter()
    sampler = SamplerConfig(steps=teacher_steps, solver="euler", guidance=GuidanceConfig(mode="joint"))
    tf = evaluate_motion(
        teacher_net,
        conditioner=conditioner,
        clips=clips,
        sampler=sampler,
        shift=shift,
        cfg=EvalConfig(
            batch_size=cfg.batch_size,
            save_videos=0,
            tracker=cfg.tracker,
            seed=cfg.seed,
            num_tracks=cfg.num_tracks,
            preview_clips=len(clips),
        ),  # every clip's videos: the side-by-sides
        embed_dim=teacher_net.track_embed_dim,
        device=device,
        out_dir=None,
        fps=fps,
        tag="teacher",
    )
    figures.update(
        teacher_epe_with_tracks=tf["epe_with_tracks"],
        teacher_epe_without_tracks=tf["epe_without_tracks"],
        teacher_nfe_per_video=tf["nfe_per_video"],
        teacher_sampler_steps=teacher_steps,
        epe_ground_truth_video=tf["epe_ground_truth_video"],
        epe_frozen_video=tf["epe_frozen_video"],
        teacher_per_sample=tf["per_sample"],
        teacher_eval_seconds=round(time.perf_counter() - t0, 2),
        teacher_psnr_with_tracks=tf["psnr_with_tracks"],
        teacher_psnr_without_tracks=tf["psnr_without_tracks"],
        psnr_frozen_video=tf["psnr_frozen_video"],
        teacher_ssim_with_tracks=tf["ssim_with_tracks"],
        teacher_ssim_without_tracks=tf["ssim_without_tracks"],
        ssim_frozen_video=tf["ssim_frozen_video"],
    )
    figures.update({f"teacher_{k}": v for k, v in tf.items() if k.startswith("lost_")})
    figures.update(model_quality(tf, "teacher"))
    # the references' quality columns (the frozen frame's no-hold EPE: every no_hold_ratio's denominator)
    figures.update({k: tf[k] for k in REFERENCE_QUALITY if k in tf})
    figures["epe_tracker"] = cfg.tracker
    # the floors beside the models: ground truth, codec round trip, pixel-space oracle copier, frozen frame
    figures["floors"] = floor_figures(
        clips.clips, codec_module, tracker=cfg.tracker, num_tracks=cfg.num_tracks, device=device
    )
    videos = {"ground truth": tf["preview"]["ground_truth_video"], "teacher": tf["preview"]["with_tracks"]}
    previews = [
        ("ground truth", videos["ground truth"][: cfg.preview_clips]),
        ("teacher, tracks", videos["teacher"][: cfg.preview_clips]),
    ]

    labels = {"ode_init": "ODE-init student", "dmd": "DMD student", "rl": "RL student"}
    labels["student"] = labels[student_stage]
    figures["student_stage"] = student_stage
    engine = stream_cfg = None
    long_engines = {}  # the students whose long streams are scored per window (cfg.long_students)
    for i, (name, folder) in enumerate(students.items()):
        last = i == len(students) - 1
        student = student_network(folder, codec_name=codec_name, codec=codec, device=device, dtype=dtype)
        stream_cfg = student.conventions.stream_config(str(folder))  # its chunking, steps and shift
        engine = StreamingGenerator(
            student, codec_module, config=stream_cfg, image_features_fn=conditioner.image_features
        )
        if last or cfg.long_students == "all":
            long_engines[name] = engine
        t0 = time.perf_counter()
        sf = evaluate_stream_motion(
            engine, clips=clips.clips, text_fn=conditioner.text, cfg=cfg, out_dir=run_dir if last else None, fps=fps
        )
        figures.update(
            {
                f"{name}_epe_with_tracks": sf["epe_with_tracks"],
                f"{name}_epe_without_tracks": sf["epe_without_tracks"],
                f"{name}_per_sample": sf["per_sample"],
                f"{name}_psnr_with_tracks": sf["psnr_with_tracks"],
                f"{name}_psnr_without_tracks": sf["psnr_without_tracks"],
                f"{name}_ssim_with_tracks": sf["ssim_with_tracks"],
                f"{name}_ssim_without_tracks": sf["ssim_without_tracks"],
                f"{name}_eval_seconds": round(time.perf_counter() - t0, 2),
                **{f"{name}_{k}": v for k, v in sf.items() if k.startswith("lost_")},
                **model_quality(sf, name),
            }
        )
        videos[labels.get(name, name)] = np.stack(sf["frames"]["with_tracks"])
        previews.append((f"{name}, tracks", sf.get("preview", {}).get("with_tracks")))
        if last:
            previews.append((f"{name}, no tracks", sf.get("preview", {}).get("without_tracks")))
            figures.update(
                student_nfe_per_video=sf["nfe_video_equivalent_per_video"],
                student_nfe_calls_per_video=sf["nfe_calls_per_video"],
                student_config=sf["config"],
                student_chunks_per_video=sf["chunks_per_video"],
            )

    if cfg.preview_clips:
        shown = [(label, v) for label, v in previews if v is not None]
        write_contact_sheet(run_dir / "samples.png", shown)
        # the README's strip: the first two clips at frames 0, 8, 16, 24, every model with tracks
        strip = [(label, v[:2]) for label, v in shown if "no tracks" not in label]
        write_contact_sheet(run_dir / "strip.png", strip, every=8)
    figures["side_by_side"] = write_side_by_sides(
        run_dir, clips.clips, videos, num_tracks=cfg.num_tracks, fps=fps, gifs=cfg.side_by_side_gifs
    )

    # long rollouts: factor x the training horizon, ground-truth tracks streamed in, with and without the sink
    evaluated = list(students)[-1]
    horizon = latent_frames(num_frames)  # latent frames the teacher (and the DMD rollout) covers
    causal = stream_cfg.causal
    horizon_chunks = causal.num_chunks(horizon) - 1  # generated chunks inside the horizon
    long_latents = 1 + cfg.long_factor * (horizon - 1)
    long_frames = 1 + 4 * (long_latents - 1)
    long_world = make_world(dataclasses.replace(data, num_frames=long_frames))
    long = ClipPool(long_world, [derive_seed(data.eval_seed, "long", i) for i in range(cfg.long_clips)])
    figures.update(
        long_rollout_factor=cfg.long_factor,
        long_rollout_frames=long_frames,
        long_rollout_latents=long_latents,
        training_horizon_chunks=horizon_chunks,
        drift={},
    )
    t0 = time.perf_counter()
    figures["long_horizon"] = long_horizon_figures(
        run_dir,
        long_engines,
        codec_module,
        conditioner,
        long_world,
        [derive_seed(data.eval_seed, "long", i) for i in range(cfg.long_clips)],
        horizon_frames=num_frames,
        factors=tuple(k for k in WINDOW_FACTORS if k <= cfg.long_factor),
        cfg=cfg,
    )
    for tag in ("with_sink", "without_sink"):  # the panning world's per-chunk curves: drift.png
        curves = figures["long_horizon"][evaluated][f"panning_{tag}"]["per_chunk"]
        figures["drift"][tag] = {
            "per_chunk": curves,
            "chunks": len(curves["psnr"]),
            "summary": drift_summary(curves, horizon_chunks=horizon_chunks),
        }
    figures["long_rollout_seconds"] = round(time.perf_counter() - t0, 2)
    lat = chunk_latency(
        engine,
        clip=long.clips[0],
        text_fn=conditioner.text,
        num_tracks=cfg.num_tracks,
        num_chunks=causal.num_chunks(long_latents),
        repeats=cfg.timing_repeats,
        seed=cfg.seed,
    )
    figures["latency"] = lat
    figures["latency_ratio_last_over_early"] = lat["latency_ratio_last_over_early"]
    return figures
