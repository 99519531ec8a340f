"""The placement table of a teacher and its students: motion following on the inputs people give.

    python -m lab.placement_table --teacher assets/tiny-teacher --student student=assets/tiny-student/student \
        --clips 16 --out runs/placements-shipped

Each network is given every held-out clip of the teacher's world (its release ``config.yaml``: world, frame
size; ``eval.num_frames`` frames; the teacher's ``eval.num_tracks`` dense points) with its input tracks laid
by each placement of ``data.placements.EVAL_PLACEMENTS`` and scored on the clip's fixed scoring points
(``trackstream.eval.placements``: EPE over the frozen first frame's, the quality columns, blockiness, objects
kept). Writes ``placements.json`` (the figures and the protocol), ``placements.md`` (the table) and, per
network, ``strip_<name>.png`` (the first clips at frames 0, 8, 16, 24 in every placement, the ground truth
first): look at them before reading a number. ``--models`` picks which to run (``teacher`` is the
teacher sampled with ``--teacher-steps`` Euler steps and joint guidance, as make run's evaluation does).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

__all__ = ["main", "placement_run"]


def _release(folder: Path) -> tuple[Path, Path, dict]:
    """(network folder, codec file, resolved config) of a teacher release (``teacher/``, ``codec.pt``,
    ``config.yaml``) or a teacher's run directory (``export/teacher``, its config naming the codec file)."""
    network = next((folder / n for n in ("teacher", "export/teacher") if (folder / n / "network.json").is_file()), None)
    if network is None or not (folder / "config.yaml").is_file():
        raise ValueError(f"--teacher {folder}: expected a release folder or run directory of a teacher")
    cfg = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=True)
    codec = folder / "codec.pt" if (folder / "codec.pt").is_file() else Path(str(cfg["codec"].get("checkpoint")))
    if not codec.is_file():
        raise ValueError(f"--teacher {folder}: no codec.pt and its config's codec.checkpoint {codec} is not a file")
    return network, codec, cfg


def placement_run(
    teacher: Path,
    students: dict[str, Path],
    *,
    out: Path,
    clips: int,
    models: list[str],
    placements: list[str],
    teacher_steps: int,
    strip_clips: int = 2,
    device: str | None = None,
    dtype: str | None = None,
) -> dict:
    from trackstream.data.clips import DataConfig, heldout_clips
    from trackstream.data.trackers import build_tracker
    from trackstream.diffusion.samplers import GuidanceConfig, SamplerConfig
    from trackstream.eval.metrics import EPE_TRACKER
    from trackstream.eval.placements import evaluate_placements, placement_table, placement_tracks
    from trackstream.eval.stream_eval import student_network
    from trackstream.eval.stream_samples import write_contact_sheet
    from trackstream.eval.stream_scoring import stream_generate
    from trackstream.eval.teacher_eval import teacher_generate
    from trackstream.models.network import CodecRef, Network
    from trackstream.models.precision import resolve_precision
    from trackstream.stream.engine import StreamingGenerator

    out.mkdir(parents=True, exist_ok=True)
    dev, dtype = resolve_precision(device, dtype)
    network_dir, codec_path, cfg = _release(teacher)
    codec_name = cfg["codec"]["name"]
    frames = cfg["eval"].get("num_frames") or cfg["data"]["num_frames"]
    data = DataConfig(**{**cfg["data"], "num_frames": frames, "eval_samples": clips})
    held = heldout_clips(data).clips
    net, codec, conditioner = Network.open(network_dir, "--teacher").for_inference(
        codec=CodecRef(codec_name, str(codec_path)), device=dev, dtype=dtype
    )
    token = codec.spatial_factor * net.dit.patch_size[1]
    gens = {}
    if "teacher" in models:
        sampler = SamplerConfig(steps=teacher_steps, solver="euler", guidance=GuidanceConfig(mode="joint"))
        gens["teacher"] = teacher_generate(
            net,
            conditioner=conditioner,
            sampler=sampler,
            shift=net.conventions.schedule_shift,
            embed_dim=net.track_embed_dim,
            device=dev,
        )
    for name, folder in students.items():
        if name in models:
            student = student_network(folder, device=dev, dtype=dtype)
            engine = StreamingGenerator(
                student,
                codec,
                config=student.conventions.stream_config(str(folder)),
                image_features_fn=conditioner.image_features,
            )
            gens[name] = stream_generate(engine, text_fn=conditioner.text)
    num_tracks = cfg["eval"].get("num_tracks")
    t0 = time.perf_counter()
    figures = evaluate_placements(
        gens,
        held,
        placements=placements,
        grid_size=data.grid_size,
        num_tracks=num_tracks,
        tracker=build_tracker(EPE_TRACKER),
        token=token,
        keep=strip_clips,
    )
    videos = figures.pop("videos")
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    figures["protocol"] = {
        "teacher": str(teacher),
        "students": {k: str(v) for k, v in students.items()},
        "frames": frames,
        "clips": clips,
        "input_tracks_dense": num_tracks,
        "teacher_steps": teacher_steps,
        "tracker": EPE_TRACKER,
        "device": str(dev),
    }
    (out / "placements.json").write_text(json.dumps(figures, indent=1))
    (out / "placements.md").write_text(placement_table(figures) + "\n")
    gt = np.stack([c["frames"] for c in held[:strip_clips]])
    for model, per in videos.items():
        rows = [("ground truth", gt)] + [(p, per[p]) for p in placements]
        write_contact_sheet(out / f"strip_{model}.png", rows, every=8)
    for p in placements:  # the input points of the first clip per placement, for the record
        tr, vi, _ = placement_tracks(held[:1], p, grid_size=data.grid_size, num_tracks=num_tracks)
        figures.setdefault("input_points", {})[p] = int(tr.shape[2])
    (out / "placements.json").write_text(json.dumps(figures, indent=1))
    return figures


def main(argv=None) -> int:
    from trackstream.data.placements import EVAL_PLACEMENTS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--teacher", type=Path, required=True, help="teacher release folder (teacher/, codec.pt, config.yaml)"
    )
    ap.add_argument("--student", action="append", default=[], help="NAME=EXPORT_FOLDER (repeatable)")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--teacher-steps", type=int, default=24)
    ap.add_argument("--models", default=None, help="comma-separated: teacher and student names (default: all)")
    ap.add_argument("--placements", default=",".join(EVAL_PLACEMENTS))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default=None, help="default: CUDA when present, else cpu")
    ap.add_argument("--dtype", default=None, help="default: bf16 on CUDA, fp32 on the CPU")
    args = ap.parse_args(argv)
    students = {}
    for spec in args.student:
        name, sep, path = spec.partition("=")
        if not sep:
            raise SystemExit(f"--student {spec!r}: give NAME=EXPORT_FOLDER")
        students[name] = Path(path)
    models = args.models.split(",") if args.models else ["teacher", *students]
    figures = placement_run(
        args.teacher,
        students,
        out=args.out,
        clips=args.clips,
        models=models,
        placements=args.placements.split(","),
        teacher_steps=args.teacher_steps,
        device=args.device,
        dtype=args.dtype,
    )
    print((args.out / "placements.md").read_text())
    print(f"{figures['seconds']} s; {args.out}/placements.json, strip_*.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
