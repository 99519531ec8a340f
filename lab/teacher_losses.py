"""Where a teacher loses the tracked points: per pixel frame, against the codec's latent grouping.

    python lab/teacher_losses.py --teacher DIR [--codec codec.pt] [--config config.yaml] [--samples 16] \
        [--checkpoint RUN/checkpoints/step_N] --out OUT.json

``--teacher``: an exported teacher folder (``export/teacher``) or a release folder; ``--checkpoint`` instead
scores the EMA weights of a training checkpoint of the run whose ``config.yaml`` is given. The held-out clips,
input tracks, sampler and guidance are the teacher evaluation's (``eval.teacher_eval.evaluate_motion``); the
hazard at frame t is the share of points the tracker held at t - 1 that it loses at t (``metrics.track_motion``),
for the teacher's videos with tracks, the ground truth, and the ground truth through the codec. Prints the
hazard per frame and per latent group, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from trackstream.data.clips import DataConfig, heldout_clips
from trackstream.diffusion.samplers import GuidanceConfig, SamplerConfig
from trackstream.eval.floors import floor_figures
from trackstream.eval.teacher_eval import EvalConfig, evaluate_motion
from trackstream.models.conditioner import load_export


def hazards(lost: list[int], at_risk: list[int]) -> list[float]:
    return [float(a / b) if b else float("nan") for a, b in zip(lost, at_risk)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--codec", type=Path, default=None, help="default: <teacher>/codec.pt or <run>/codec/codec.pt")
    ap.add_argument("--config", type=Path, default=None, help="default: <teacher>/config.yaml or <run>/config.yaml")
    ap.add_argument("--checkpoint", type=Path, default=None, help="a training checkpoint folder: its EMA weights")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--steps", type=int, default=24, help="the teacher's Euler steps (make run: 24)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = args.teacher.parents[1] if args.teacher.parent.name == "export" else args.teacher.parent
    codec = args.codec or next(p for p in (run / "codec.pt", run / "codec" / "codec.pt") if p.is_file())
    cfg = OmegaConf.to_container(OmegaConf.load(args.config or run / "config.yaml"), resolve=True)
    net, codec_m, cond = load_export(args.teacher, codec_name=cfg["codec"]["name"], codec=str(codec), device="cpu")
    if args.checkpoint is not None:
        # the training checkpoint's network file: its weights, then the EMA shadow by parameter name
        state = torch.load(args.checkpoint / "dit.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"])
        params = dict(net.named_parameters())
        with torch.no_grad():
            for name, value in (state.get("ema") or {}).get("shadow", {}).items():
                params[name].copy_(value)
    data = DataConfig(**{**cfg["data"], "eval_samples": args.samples, "num_frames": args.frames})
    clips = heldout_clips(data)
    ev = cfg.get("eval", {})
    figures = evaluate_motion(
        net,
        conditioner=cond,
        clips=clips,
        sampler=SamplerConfig(steps=args.steps, solver="euler", guidance=GuidanceConfig(mode="joint")),
        shift=float(cfg["schedule"]["shift"]),
        cfg=EvalConfig(save_videos=0, num_tracks=ev.get("num_tracks"), preview_clips=0),
        embed_dim=net.track_embed_dim,
        device=torch.device("cpu"),
    )
    floors = floor_figures(clips.clips, codec_m, num_tracks=ev.get("num_tracks"))
    rows = {}
    for mode in ("with_tracks", "ground_truth_video"):
        rows[mode] = hazards(figures["lost_per_frame"][mode], figures["at_risk_per_frame"][mode])
    out = {
        "teacher": str(args.teacher),
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "epe_with_tracks": figures["epe_with_tracks"],
        "epe_without_tracks": figures["epe_without_tracks"],
        "ratio": figures["epe_ratio_with_over_without"],
        "lost_at_group_start_with_tracks": figures["lost_at_group_start_with_tracks"],
        "lost_inside_group_with_tracks": figures["lost_inside_group_with_tracks"],
        "hazard_per_frame": rows,
        "floors": floors,
    }
    for mode, h in rows.items():
        groups = [np.nanmean(h[1 + 4 * j : 5 + 4 * j]) for j in range((len(h) - 1) // 4)]
        print(f"{mode}: hazard per frame", " ".join(f"{x:.3f}" for x in h[1:]))
        print(f"{mode}: per latent group (mean over its 4 frames)", " ".join(f"{x:.3f}" for x in groups))
    print(
        f"EPE with {out['epe_with_tracks']:.2f} / without {out['epe_without_tracks']:.2f} (ratio {out['ratio']:.3f}); "
        f"lost at group start {out['lost_at_group_start_with_tracks']:.3f}, inside {out['lost_inside_group_with_tracks']:.3f}; "
        f"codec round trip {floors['epe_codec_round_trip']:.2f} px"
    )
    args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
