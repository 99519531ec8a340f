"""Does a (bidirectional) teacher move an object when its tracks say so? Native-track drags on the drag scenes.

    python lab/teacher_drag.py --teacher RUN/export/teacher [--codec RUN/codec.pt] [--config RUN/config.yaml] \
        [--scenes 8] --out OUT.json

The drag benchmark (``trackstream.eval.drag_bench``) asks a streaming student; a teacher candidate has to be
judged before there is a student. Here the teacher samples each translate scene of the benchmark (one sprite
dragged over a still, textured background: ``eval.drag_scenes``, at the teacher world's texture scale) as a
whole 25-frame clip, twice: with the static points off the sprite only ("no drag": what must not move is
pinned, the sprite gets no track) and with the sprite's own tracks too ("native tracks": ``drag_tracks`` with
``objects``). Each video is scored by the benchmark's ``score`` (the sprite's entity point re-tracked by
``lk_plain``) and the rows by ObjMC; "native / no drag" is the issue's ratio (target <= 0.5).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from trackstream.data.trackers import build_tracker
from trackstream.diffusion.samplers import GuidanceConfig, SamplerConfig
from trackstream.eval.drag_bench import score
from trackstream.eval.drag_metrics import objmc
from trackstream.eval.drag_scenes import make_scenes
from trackstream.eval.generate import GenerateConfig, generate_videos
from trackstream.eval.sample import Sample
from trackstream.stream.drag.points import drag_tracks
from trackstream.stream.options import add_precision_args, parsed_precision

TOKEN = 4  # pixels per latent cell of the tiny codec (its spatial factor): the drag points' spacing


def translate_scenes(count: int, *, texture_scale: float) -> list:
    """The first ``count`` translate scenes in animate mode (25 frames) of the benchmark's scene family."""
    scenes = [s for s in make_scenes(8 * count, texture_scale=texture_scale) if s.name.startswith("translate-animate")]
    return scenes[:count]


def drag_rows(
    teacher: Path, codec: Path, cfg: dict, *, count: int, steps: int, device: str = "auto", dtype: str = "auto"
) -> dict:
    scale = float(cfg["data"]["world"].get("texture_scale", 1.0))
    scenes = translate_scenes(count, texture_scale=scale)
    tracker = build_tracker("lk_plain")
    gcfg = GenerateConfig(
        codec={"name": cfg["codec"]["name"], "checkpoint": str(codec)},
        sampler=SamplerConfig(steps=steps, guidance=GuidanceConfig(**cfg["sampler"]["guidance"])),
        device=device,
        dtype=dtype,
    )
    rows = {}
    for row, objects in (("no drag", False), ("native tracks", True)):
        samples = []
        for s in scenes:
            T = len(s.gt_video)
            tracks, vis = drag_tracks(s.instruction, token=TOKEN, height=64, width=64, num_frames=T, objects=objects)
            samples.append(Sample(s.name, s.gt_video, tracks, vis, s.caption))
        videos = generate_videos(teacher, samples, mode="with_tracks", cfg=gcfg)
        scored = [score(s, videos[s.name], None, tracker, TOKEN) for s in scenes]
        rows[row] = {
            "objmc": objmc([[x["entity_pred"]] for x in scored], [[x["entity_gt"]] for x in scored]),
            "psnr_gt": float(np.mean([x["psnr_gt"] for x in scored])),
            "scenes": [x["scene"] for x in scored],
        }
    rows["native / no drag"] = rows["native tracks"]["objmc"] / max(rows["no drag"]["objmc"], 1e-9)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", type=Path, required=True, help="an exported teacher (RUN/export/teacher)")
    ap.add_argument("--codec", type=Path, default=None, help="default: the run's codec (codec.checkpoint or codec/)")
    ap.add_argument("--config", type=Path, default=None, help="default: RUN/config.yaml")
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    add_precision_args(ap)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    parsed_precision(ap, args)  # a bad --device / --dtype ends here, in one line
    torch.set_num_threads(args.threads)
    run = args.teacher.parents[1] if args.teacher.parent.name == "export" else args.teacher.parent
    cfg = OmegaConf.to_container(OmegaConf.load(args.config or run / "config.yaml"), resolve=True)
    codec = args.codec or Path(cfg["codec"].get("checkpoint") or run / "codec" / "codec.pt")
    rows = drag_rows(
        args.teacher, codec, cfg, count=args.scenes, steps=args.steps, device=args.device, dtype=args.dtype
    )
    print(
        f"ObjMC no drag {rows['no drag']['objmc']:.2f} px, native tracks {rows['native tracks']['objmc']:.2f} px "
        f"(native / no drag {rows['native / no drag']:.2f})"
    )
    args.out.write_text(json.dumps({"teacher": str(args.teacher), **rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
