"""Evaluation of the streaming student for ``make run``: held-out motion following, long rollouts, latency.

``run_evaluation`` scores, on the same held-out clips of the run's synthetic world, the teacher
(``eval.teacher_eval.evaluate_motion``), the floors (``eval.floors``) and every student streamed through the
engine, then the evaluated student's long rollouts (with and without the sink) and its per-chunk latency.
The measures live in ``eval.stream_scoring`` (``evaluate_stream_motion``, ``long_rollout``, ``chunk_latency``,
``drift_summary``, ``stream_nfe``), the pictures of the samples in ``eval.stream_samples``
(``write_contact_sheet``, ``write_side_by_sides``); both are importable from here too.
Device and dtype: ``run_evaluation(device=, dtype=)`` (default CUDA + bf16 when a GPU is present,
else CPU + fp32) loads the teacher and every student through ``models.network``;
the engines follow their network's device and every timing here is synchronised with it.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from trackstream.eval.long_horizon import WINDOW_FACTORS, long_horizon_figures
from trackstream.eval.quality import REFERENCE_QUALITY, model_quality
from trackstream.eval.stream_samples import write_contact_sheet, write_side_by_sides
from trackstream.eval.stream_scoring import (
    StreamEvalConfig,
    chunk_latency,
    drift_summary,
    evaluate_stream_motion,
)
from trackstream.models.network import Network
from trackstream.models.tracks import latent_frames
from trackstream.stream.engine import StreamingGenerator

__all__ = [
    "run_evaluation",
]


def student_network(folder, *, device, dtype):
    """A student export on ``device`` in ``dtype`` (``models.conditioner.load_export_network``, the loading of
    ``Network.for_inference`` without its codec and encoders: the evaluation shares the teacher's, which are the
    same)."""
    from trackstream.models.conditioner import load_export_network
    from trackstream.models.precision import resolve_precision

    device, dtype = resolve_precision(device, dtype)
    return load_export_network(folder, device=device, dtype=dtype)


def run_evaluation(
    run_dir: Path,
    *,
    teacher: str,
    students: dict[str, str],
    data,
    teacher_steps: int,
    cfg: StreamEvalConfig | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    student_stage: str = "dmd",
) -> dict:
    """The evaluation of ``make run`` on held-out clips (see the module docstring); returns figures.

    ``teacher``/``students``: network folders (``models.network``); the teacher's folder gives the codec (its
    latent space, the students' too) and the noise shift it samples with. The last student of ``students`` is the one whose samples
    are written and whose long rollouts and latency are measured (``cfg.long_students="all"``: every
    student's long streams); ``student_stage`` names the stage that made the one called "student" ("dmd"
    or "rl": its label in the videos; figures keep the prefix ``student_``). Each student streams with the
    chunking, steps and shift its export records (``conventions.streaming``). ``data``: the stages'
    ``data.clips.DataConfig`` (world, size, clip length; ``eval_samples`` held-out clips from its
    evaluation seed namespace). ``device`` / ``dtype``: ``models.precision`` (None / "auto": CUDA + bf16
    when a GPU is present, else CPU + fp32)."""
    from trackstream.data.clips import heldout_clips
    from trackstream.eval.floors import floor_figures
    from trackstream.models.precision import resolve_precision

    _check_request(data, student_stage)
    cfg = cfg or StreamEvalConfig()
    run_dir = Path(run_dir)
    device, dtype = resolve_precision(device, dtype)
    # the teacher's codec and conditioner serve the students too (the same latent space and text encoder)
    network = Network.open(teacher, "teacher")
    teacher_net, codec_module, conditioner = network.for_inference(device=device, dtype=dtype)
    shift = network.conventions.schedule_shift
    if shift is None:
        raise ValueError(f"{network.folder}/network.json records no schedule shift (conventions): re-export it")
    clips = heldout_clips(data)
    figures = _world_figures(data, len(clips), cfg)
    tf = _teacher_figures(
        figures, teacher_net, conditioner, clips, cfg=cfg, steps=teacher_steps, shift=shift, device=device, fps=data.fps
    )
    # the floors beside the models: ground truth, codec round trip, pixel-space oracle copier, frozen frame
    figures["floors"] = floor_figures(
        clips.clips, codec_module, tracker=cfg.tracker, num_tracks=cfg.num_tracks, device=device
    )
    videos = {"ground truth": tf["preview"]["ground_truth_video"], "teacher": tf["preview"]["with_tracks"]}
    previews = [
        ("ground truth", videos["ground truth"][: cfg.preview_clips]),
        ("teacher, tracks", videos["teacher"][: cfg.preview_clips]),
    ]
    figures["student_stage"] = student_stage

    def engine_of(folder) -> StreamingGenerator:
        student = student_network(folder, device=device, dtype=dtype)
        stream_cfg = student.conventions.stream_config(str(folder))  # its chunking, steps and shift
        return StreamingGenerator(
            student, codec_module, config=stream_cfg, image_features_fn=conditioner.image_features
        )

    made: dict = {}
    long_engines = _student_figures(
        figures,
        students,
        engine_of,
        clips.clips,
        videos,
        previews,
        conditioner=conditioner,
        cfg=cfg,
        run_dir=run_dir,
        fps=data.fps,
        student_stage=student_stage,
        made=made,
    )
    if cfg.placements:
        token = codec_module.spatial_factor * teacher_net.dit.patch_size[1]
        given = {
            "teacher": {"lattice": list(tf["preview"]["with_tracks"]), "none": list(tf["preview"]["without_tracks"])}
        }
        figures["placements"] = _placement_figures(
            made, given, clips.clips, conditioner, cfg=cfg, data=data, token=token
        )
    _write_pictures(figures, run_dir, clips.clips, videos, previews, cfg=cfg, fps=data.fps)
    _long_figures(figures, run_dir, long_engines, students, codec_module, conditioner, data=data, cfg=cfg)
    return figures


def _check_request(data, student_stage: str) -> None:
    if data.source != "synthetic":  # its long clips and its world record are the synthetic world's
        raise ValueError(
            f"make run's evaluation is of the synthetic world (data.source={data.source!r}); evaluate networks "
            "trained on shards with `python -m trackstream.eval benchmark.name=shards benchmark.path=<held-out shards>`"
        )
    if student_stage not in ("dmd", "rl"):
        raise ValueError(f"student_stage={student_stage!r}: the evaluated student comes from 'dmd' or 'rl'")


def _world_figures(data, num_heldout: int, cfg: StreamEvalConfig) -> dict:
    """The figures' opening: how many held-out clips, how long, and the world they come from."""
    from trackstream.data.clips import make_world

    return {
        "num_heldout": num_heldout,
        "num_frames": data.num_frames,
        "eval_world": {
            **dataclasses.asdict(make_world(data)),
            "eval_seed": data.eval_seed,
            "input_tracks_per_clip": cfg.num_tracks,
        },
    }


def _teacher_figures(figures: dict, network, conditioner, clips, *, cfg, steps: int, shift: float, device, fps) -> dict:
    """The teacher's held-out figures (and the references it measures) added to ``figures``; returns its own
    figures, whose previews hold every clip's videos (the side-by-sides)."""
    from trackstream.diffusion.samplers import GuidanceConfig, SamplerConfig
    from trackstream.eval.teacher_eval import EvalConfig, evaluate_motion

    t0 = time.perf_counter()
    sampler = SamplerConfig(steps=steps, solver="euler", guidance=GuidanceConfig(mode="joint"))
    tf = evaluate_motion(
        network,
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
        embed_dim=network.track_embed_dim,
        device=device,
        out_dir=None,
        fps=fps,
        tag="teacher",
    )
    figures.update(
        teacher_epe_with_tracks=tf["epe_with_tracks"],
        teacher_epe_without_tracks=tf["epe_without_tracks"],
        teacher_nfe_per_video=tf["nfe_per_video"],
        teacher_sampler_steps=steps,
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
    return tf


def _student_figures(
    figures: dict, students, engine_of, clips, videos, previews, *, conditioner, cfg, run_dir, fps, student_stage, made
) -> dict:
    """Each student streamed over the held-out clips: its figures added to ``figures``, its videos to
    ``videos`` (label -> [clips, T, H, W, 3]) and ``previews``, the evaluated (last) one's engine and its with /
    without-tracks videos to ``made`` (name -> (engine, {"lattice": [...], "none": [...]})). Returns the engines
    whose long streams are scored (``cfg.long_students``), the evaluated (last) student's last."""
    labels = {"ode_init": "ODE-init student", "dmd": "DMD student", "rl": "RL student"}
    labels["student"] = labels[student_stage]
    long_engines = {}
    for i, (name, folder) in enumerate(students.items()):
        last = i == len(students) - 1
        engine = engine_of(folder)
        if last or cfg.long_students == "all":
            long_engines[name] = engine
        t0 = time.perf_counter()
        sf = evaluate_stream_motion(
            engine, clips=clips, text_fn=conditioner.text, cfg=cfg, out_dir=run_dir if last else None, fps=fps
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
            made[name] = (engine, {"lattice": sf["frames"]["with_tracks"], "none": sf["frames"]["without_tracks"]})
            previews.append((f"{name}, no tracks", sf.get("preview", {}).get("without_tracks")))
            figures.update(
                student_nfe_per_video=sf["nfe_video_equivalent_per_video"],
                student_nfe_calls_per_video=sf["nfe_calls_per_video"],
                student_config=sf["config"],
                student_chunks_per_video=sf["chunks_per_video"],
            )
    return long_engines


def _placement_figures(made: dict, given: dict, clips, conditioner, *, cfg, data, token: int) -> dict:
    """The placement table (``eval.placements``): the evaluated student in every placement of
    ``cfg.placements`` (its lattice and none from its own evaluation), the teacher's lattice and none from
    its evaluation; every video scored on each clip's fixed scoring points."""
    from trackstream.data.trackers import build_tracker
    from trackstream.eval.placements import evaluate_placements
    from trackstream.eval.stream_scoring import stream_generate

    t0 = time.perf_counter()
    models: dict = {"teacher": None}
    for name, (engine, videos) in made.items():
        models[name] = stream_generate(engine, text_fn=conditioner.text)
        given[name] = videos
    out = evaluate_placements(
        models,
        clips,
        placements=cfg.placements,
        grid_size=data.grid_size,
        num_tracks=cfg.num_tracks,
        tracker=build_tracker(cfg.tracker),
        token=token,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        given=given,
    )
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _write_pictures(figures: dict, run_dir: Path, clips, videos, previews, *, cfg, fps) -> None:
    """samples.png and strip.png of the previews (when any), and every sample's side-by-side."""
    if cfg.preview_clips:
        shown = [(label, v) for label, v in previews if v is not None]
        write_contact_sheet(run_dir / "samples.png", shown)
        # the README's strip: the first two clips at frames 0, 8, 16, 24, every model with tracks
        strip = [(label, v[:2]) for label, v in shown if "no tracks" not in label]
        write_contact_sheet(run_dir / "strip.png", strip, every=8)
    figures["side_by_side"] = write_side_by_sides(
        run_dir, clips, videos, num_tracks=cfg.num_tracks, fps=fps, gifs=cfg.side_by_side_gifs
    )


def _long_figures(figures: dict, run_dir, long_engines, students, codec_module, conditioner, *, data, cfg) -> None:
    """Long rollouts: factor x the training horizon, ground-truth tracks streamed in, with and without the
    sink (per window, and the panning world's per-chunk drift), then the evaluated student's chunk latency."""
    from trackstream.data.batching import derive_seed
    from trackstream.data.clips import ClipPool, make_world

    evaluated = list(students)[-1]
    engine = long_engines[evaluated]
    horizon = latent_frames(data.num_frames)  # latent frames the teacher (and the DMD rollout) covers
    causal = engine.causal  # the evaluated student's chunking (its export's stream config)
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
        horizon_frames=data.num_frames,
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
