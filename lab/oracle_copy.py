"""What EPE can a copy-from-frame-0 generator reach at a given token size? (teacher diagnostics)

    python -m lab.oracle_copy --run-dir runs/tiny_teacher [--samples 16] [--out oracle.json]

MotionStream's track control is attention copying content from the first frame to where the
tracks say it went. A DiT copies whole TOKENS; to place content between token positions it must
also learn to re-synthesise it at sub-token offsets. This tool measures, on the run's held-out
clips, the EPE (eval.metrics.motion_epe, same input tracks) of ORACLE videos built without any network:

* ``copy@<q>px``: every latent frame f >= 1 is frame 0's latent shifted by the clip's true camera
  displacement at f (median of the ground-truth tracks), rounded to multiples of q pixels, then
  decoded by the run's codec. q = one DiT token (codec factor x patch) is the best a pure token
  copy can do; q = one latent cell is a copy at the codec's resolution;
* ``frozen``: frame 0 repeated (EPE of the input tracks against their start positions).

It is exact only for a camera-pan world (``data.world.camera_pan_prob: 1`` with small sprites: the
copy moves the whole frame; sprites are treated as background). The numbers tell how far a
token-level copier is from the EPE target before any training is spent. No network is involved.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from trackstream.data.clips import DataConfig, heldout_clips
from trackstream.data.trackers import build_tracker
from trackstream.data.video_io import to_uint8, video_tensor
from trackstream.eval.harness import Extractors, score_rows
from trackstream.eval.metrics import EPE_TRACKER, EPE_TRACKERS
from trackstream.eval.sample import Sample
from trackstream.models.codecs import build_codec


def shifted_latents(
    lat: torch.Tensor,
    tracks: list[np.ndarray],
    vis: list[np.ndarray],
    *,
    quantum_px: int,
    spatial_factor: int,
    temporal_factor: int = 4,
) -> torch.Tensor:
    """lat [B, C, F, h, w]: frame 0 shifted by each clip's median track displacement (pixels,
    rounded to ``quantum_px``, a multiple of ``spatial_factor``) at the middle of latent frame f."""
    if quantum_px % spatial_factor:
        raise ValueError(f"quantum_px={quantum_px} must be a multiple of the codec factor {spatial_factor}")
    out = lat.clone()
    cells = quantum_px // spatial_factor
    for b in range(lat.shape[0]):
        for f in range(1, lat.shape[2]):
            t = min(temporal_factor * f - temporal_factor // 2, len(tracks[b]) - 1)  # middle pixel frame of f
            both = vis[b][t] & vis[b][0]
            if not both.any():
                continue  # nothing known about this frame: keep the clip's own latent (does not help)
            disp = np.median(tracks[b][t, both] - tracks[b][0, both], axis=0)  # (dx, dy) px
            dx, dy = (int(round(float(v) / quantum_px)) * cells for v in disp)
            out[b, :, f] = torch.roll(lat[b, :, 0], shifts=(dy, dx), dims=(1, 2))
    return out


@torch.no_grad()
def oracle_copy_epe(
    clips: list[dict], codec, *, token_px: int, tracker: str = EPE_TRACKER, num_tracks: int | None = None
) -> dict:
    """EPE of the oracle copiers on ``clips`` (ClipPool entries), from the same input tracks as the
    evaluations (those visible in frame 0, ``num_tracks`` of them as eval.scorebook.input_tracks
    picks): ``epe_copy@<q>px`` per quantum q (one DiT token, one latent cell)."""
    from trackstream.eval.scorebook import input_tracks

    video = video_tensor(np.stack([c["frames"] for c in clips]))  # [B, 3, T, H, W] in [-1, 1]
    lat = codec.encode(video).float()  # [B, C, F, h, w]
    sf = codec.spatial_factor
    samples = []
    for b, c in enumerate(clips):
        tr, vi, counts = input_tracks([c], num_tracks)
        samples.append(Sample(str(b), c["frames"], tr[0, :, : counts[0]].numpy(), vi[0, :, : counts[0]].numpy()))
    quanta = sorted({token_px, sf}, reverse=True)
    rows: dict[str, dict[str, np.ndarray]] = {}
    for q in quanta:
        vid = codec.decode(
            shifted_latents(
                lat, [c["tracks"] for c in clips], [c["visibility"] for c in clips], quantum_px=q, spatial_factor=sf
            )
        )
        rows[f"copy@{q}px"] = {s.id: to_uint8(vid[b]) for b, s in enumerate(samples)}
    rows["frozen"] = {s.id: np.broadcast_to(s.frames[:1], s.frames.shape) for s in samples}
    scored = score_rows(
        rows, samples, metrics=["epe"], tracker=build_tracker(tracker), extractors=Extractors(), progress=False
    )
    figures: dict = {"num_samples": len(clips), "codec_factor": sf, "token_px": token_px}
    figures.update({f"epe_{row}": r["epe"] for row, r in scored.items()})
    return figures


def oracle_epe(run_dir: Path, *, samples: int = 16, num_frames: int | None = None) -> dict:
    """The oracle figures on a teacher run's held-out clips (its codec, token size and tracker), at
    ``num_frames`` (default the run's data.num_frames; its evaluation's eval.num_frames to stand beside it)."""
    cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    ckpt = run_dir / "codec" / "codec.pt"
    if not ckpt.is_file():
        ckpt = Path(cfg["codec"].get("checkpoint") or "")
    if not ckpt.is_file():
        raise ValueError(f"no codec checkpoint in {run_dir}/codec or codec.checkpoint; train the run first")
    data = DataConfig(**{**cfg["data"], "eval_samples": samples, "num_frames": num_frames or cfg["data"]["num_frames"]})
    codec = build_codec(cfg["codec"]["name"], checkpoint=str(ckpt)).eval()
    patch = (cfg["model"].get("overrides") or {}).get("patch_size", [1, 2, 2])
    ev = cfg.get("eval", {})
    tracker = ev.get("tracker") or EPE_TRACKER
    if str(tracker).lower().replace("-", "_") not in EPE_TRACKERS:  # a run from before the one EPE protocol
        print(f"[oracle_copy] the run's eval.tracker={tracker!r} is not an EPE tracker any more; using {EPE_TRACKER}")
        tracker = EPE_TRACKER
    return oracle_copy_epe(
        heldout_clips(data).clips,
        codec,
        token_px=codec.spatial_factor * int(patch[-1]),
        tracker=tracker,
        num_tracks=ev.get("num_tracks"),
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, required=True, help="a teacher run directory (config.yaml + codec/)")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    if not (args.run_dir / "config.yaml").is_file():
        raise SystemExit(f"--run-dir {args.run_dir} has no config.yaml: pass a teacher run directory")
    figures = oracle_epe(args.run_dir, samples=args.samples)
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
