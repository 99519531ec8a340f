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
from trackstream.models.network import CodecRef, Network
from trackstream.stream.options import add_precision_args, parsed_precision


def step_motion(videos: np.ndarray, tracker) -> list[float]:
    """Median displacement (px) between consecutive frames t - 1 -> t of grid points, tracked pairwise (each
    pair on its own: nothing is lost along the way), pooled over videos [B, T, H, W, 3]: [T] (0 at t = 0)."""
    from trackstream.data.tracker_base import grid_queries

    H, W = videos.shape[2:4]
    q = grid_queries(H, W, 12).astype(np.float32)  # [N, 3] (t = 0, x, y)
    out = [0.0]
    for t in range(1, videos.shape[1]):
        d = []
        for v in videos:
            pos, seen = tracker.track(np.ascontiguousarray(v[t - 1 : t + 1]), q)
            ok = seen[1] & np.isfinite(pos[1]).all(-1)
            d.append(np.linalg.norm(pos[1, ok] - q[ok, 1:], axis=-1))
        out.append(float(np.median(np.concatenate(d))) if d else float("nan"))
    return out


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
    ap.add_argument("--guidance", default="joint", help="sampler guidance mode (diffusion.samplers.GUIDANCE_MODES)")
    ap.add_argument("--w-text", type=float, default=3.0)
    ap.add_argument("--w-motion", type=float, default=1.5)
    ap.add_argument("--out", type=Path, required=True)
    add_precision_args(ap)
    args = ap.parse_args(argv)
    device, dtype = parsed_precision(ap, args)
    torch.set_num_threads(args.threads)
    run = args.teacher.parents[1] if args.teacher.parent.name == "export" else args.teacher.parent
    codec = args.codec or next(p for p in (run / "codec.pt", run / "codec" / "codec.pt") if p.is_file())
    cfg = OmegaConf.to_container(OmegaConf.load(args.config or run / "config.yaml"), resolve=True)
    net, codec_m, cond = Network.open(args.teacher, "--teacher").for_inference(
        codec=CodecRef(cfg["codec"]["name"], str(codec)), device=device, dtype=dtype
    )
    if args.checkpoint is not None:
        # the training checkpoint's network file: its weights, then the EMA shadow by parameter name
        state = torch.load(args.checkpoint / "dit.pt", map_location=device, weights_only=True)
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
        sampler=SamplerConfig(
            steps=args.steps,
            solver="euler",
            guidance=GuidanceConfig(mode=args.guidance, w_text=args.w_text, w_motion=args.w_motion),
        ),
        shift=float(cfg["schedule"]["shift"]),
        cfg=EvalConfig(save_videos=0, num_tracks=ev.get("num_tracks"), preview_clips=args.samples),
        embed_dim=net.track_embed_dim,
        device=device,
    )
    floors = floor_figures(clips.clips, codec_m, num_tracks=ev.get("num_tracks"))
    from trackstream.data.trackers import build_tracker

    trk = build_tracker("lk_plain")
    motion = {m: step_motion(figures["preview"][m], trk) for m in ("with_tracks", "ground_truth_video")}
    rows = {}
    for mode in ("with_tracks", "ground_truth_video"):
        rows[mode] = hazards(figures["lost_per_frame"][mode], figures["at_risk_per_frame"][mode])
    out = {
        "teacher": str(args.teacher),
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "guidance": {"mode": args.guidance, "w_text": args.w_text, "w_motion": args.w_motion, "steps": args.steps},
        "epe_with_tracks": figures["epe_with_tracks"],
        "epe_without_tracks": figures["epe_without_tracks"],
        "ratio": figures["epe_ratio_with_over_without"],
        "lost_at_group_start_with_tracks": figures["lost_at_group_start_with_tracks"],
        "lost_inside_group_with_tracks": figures["lost_inside_group_with_tracks"],
        "hazard_per_frame": rows,
        "step_motion_px": motion,
        "floors": floors,
    }
    for mode, h in rows.items():
        groups = [np.nanmean(h[1 + 4 * j : 5 + 4 * j]) for j in range((len(h) - 1) // 4)]
        print(f"{mode}: hazard per frame", " ".join(f"{x:.3f}" for x in h[1:]))
        print(f"{mode}: per latent group (mean over its 4 frames)", " ".join(f"{x:.3f}" for x in groups))
        print(f"{mode}: median step motion (px)", " ".join(f"{x:.2f}" for x in motion[mode][1:]))
    print(
        f"EPE with {out['epe_with_tracks']:.2f} / without {out['epe_without_tracks']:.2f} (ratio {out['ratio']:.3f}); "
        f"lost at group start {out['lost_at_group_start_with_tracks']:.3f}, inside {out['lost_inside_group_with_tracks']:.3f}; "
        f"codec round trip {floors['epe_codec_round_trip']:.2f} px"
    )
    args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
