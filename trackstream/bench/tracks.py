"""Benchmark: track-head encoding vs. RGB-rendered tracks encoded by the Wan VAE (MotionStream Table 3).

Both paths turn the SAME tracks at the SAME resolution into a [1, 16, 1 + (T-1)/4, H/8, W/8]
conditioning tensor:

* PE-Head (ours): random track IDs -> d=64 sinusoidal embeddings -> rasterisation on the latent
  grid (eq. 1) -> TrackHead (4x temporal fold + 1x1x1 conv). Everything is timed, ID sampling
  included.
* RGB-VAE (the baseline of Table 3 / Diffusion-as-Shader style): each track gets a unique colour
  and is drawn as a filled disc on a black canvas in every frame where it is visible, and the
  [-1, 1] video is encoded by the Wan 2.1 VAE architecture (diffusers ``AutoencoderKLWan``, real
  config: base_dim 96, z_dim 16, dim_mult [1, 2, 4, 4], 2 res blocks, temporal downsample
  [F, T, T]; random weights: speed does not depend on the values) and normalised with the
  per-channel mean/std. Rendering and encoding are timed (and reported separately).

Each path gets ``--warmup`` untimed runs, then ``--repeats`` (VAE) / ``--head-repeats`` timed
runs; medians are compared. Prints and writes JSON (default outputs/bench_tracks.json).
The record and the printout put the paper's figures beside the measured ones (Table 3, one H100: 1053 ms vs
24.8 ms); on CPU the ratio is far above the paper's (the VAE is fast on an H100): report it as a CPU number, not
as a reproduction of Table 3.

    trackstream bench-tracks [--frames 17 --height 256 --width 256 --num-tracks 2000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from trackstream.bench.timing import sync, time_calls
from trackstream.models.tracks import TrackEncoder

PAPER_MS = {"rgb_vae": 1053.0, "pe_head": 24.8}  # MotionStream Table 3, one H100


def make_tracks(
    num_frames: int, height: int, width: int, num_tracks: int, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """CoTracker-like tracks: a uniform grid in frame 0 (subsampled to ``num_tracks``), smooth
    random motion (per-track velocity + a shared camera pan), ~10% occlusion in runs of frames.
    -> tracks [1, T, N, 2] pixels (some leave the frame), visibility [1, T, N] bool."""
    side = math.ceil(math.sqrt(num_tracks))
    ys, xs = torch.meshgrid(
        (torch.arange(side) + 0.5) * height / side, (torch.arange(side) + 0.5) * width / side, indexing="ij"
    )
    start = torch.stack([xs.flatten(), ys.flatten()], dim=-1)  # [side^2, 2]
    start = start[torch.randperm(start.shape[0], generator=generator)[:num_tracks]]
    t = torch.arange(num_frames, dtype=torch.float32)[:, None, None]  # [T, 1, 1]
    velocity = torch.randn(num_tracks, 2, generator=generator) * 1.5  # px / frame
    pan = torch.randn(2, generator=generator) * 2.0
    wobble = torch.sin(t * 0.4 + torch.rand(num_tracks, 1, generator=generator) * 6.28) * 3.0
    tracks = start[None] + t * (velocity[None] + pan) + wobble  # [T, N, 2]
    # occlusions: each track hidden on a random run of frames with probability 0.3
    occ_start = torch.randint(num_frames, (num_tracks,), generator=generator)
    occ_len = torch.randint(1, max(2, num_frames // 3), (num_tracks,), generator=generator)
    occluded = torch.rand(num_tracks, generator=generator) < 0.3
    frames = torch.arange(num_frames)[:, None]
    hidden = occluded & (frames >= occ_start) & (frames < occ_start + occ_len)
    return tracks[None], (~hidden)[None]


def track_colors(num_tracks: int) -> torch.Tensor:
    """A distinct RGB colour in [-1, 1] per track (golden-ratio hue walk, two value levels)."""
    hue = (torch.arange(num_tracks, dtype=torch.float32) * 0.618034) % 1.0
    value = 1.0 - 0.35 * (torch.arange(num_tracks) % 2).float()
    k = (torch.tensor([5.0, 3.0, 1.0])[None] + hue[:, None] * 6.0) % 6.0  # HSV -> RGB, saturation 1
    rgb = value[:, None] * (1.0 - torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return rgb * 2.0 - 1.0  # [N, 3]


def render_tracks_rgb(
    tracks: torch.Tensor,
    visibility: torch.Tensor,
    colors: torch.Tensor,
    *,
    height: int,
    width: int,
    radius: int = 2,
) -> torch.Tensor:
    """Draw each visible point as a filled disc of its track's colour on black: [B, 3, T, H, W] in [-1, 1].

    Vectorised over (frame, track, disc pixel); overlapping discs keep one writer.
    """
    B, T, N, _ = tracks.shape
    r = torch.arange(-radius, radius + 1, device=tracks.device)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    inside = dx**2 + dy**2 <= radius**2
    dx, dy = dx[inside], dy[inside]  # [P] disc offsets
    canvas = torch.full((B, T, height, width, 3), -1.0, device=tracks.device)
    px = tracks[..., 0].floor().long()[..., None] + dx  # [B, T, N, P]
    py = tracks[..., 1].floor().long()[..., None] + dy
    ok = visibility[..., None] & (px >= 0) & (px < width) & (py >= 0) & (py < height)
    b = torch.arange(B, device=tracks.device).view(B, 1, 1, 1).expand_as(px)
    f = torch.arange(T, device=tracks.device).view(1, T, 1, 1).expand_as(px)
    n = torch.arange(N, device=tracks.device).view(1, 1, N, 1).expand_as(px)
    canvas[b[ok], f[ok], py[ok], px[ok]] = colors.to(canvas.device)[n[ok]]
    return canvas.permute(0, 4, 1, 2, 3)  # [B, 3, T, H, W]


def build_wan_vae():
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan(
        base_dim=96,
        z_dim=16,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=2,
        attn_scales=[],
        temperal_downsample=[False, True, True],
    )
    return vae.eval().requires_grad_(False)


def vae_encode(vae, video: torch.Tensor) -> torch.Tensor:
    """Pixels [-1, 1] -> normalised latents (mu - mean) / std, as the DiT consumes them."""
    mu = vae.encode(video).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean, device=mu.device).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=mu.device).view(1, -1, 1, 1, 1)
    return (mu - mean) / std


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=17, help="pixel frames, 1 + 4k")
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--num-tracks", type=int, default=2000)
    ap.add_argument("--track-channels", type=int, default=16)
    ap.add_argument("--radius", type=int, default=2, help="disc radius (px) of the RGB rendering")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of the RGB-VAE path")
    ap.add_argument("--head-repeats", type=int, default=50, help="timed runs of the PE-head path")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", default="outputs", help="folder for bench_tracks.json")
    return ap


def _result(args, device, head_out, head_ms: list, rgb_ms: list, render_ms: list, encode_ms: list) -> dict:
    """The JSON record: config, environment, both paths' times and their ratio, and the paper's."""
    head_med, rgb_med = statistics.median(head_ms), statistics.median(rgb_ms)
    ratio = rgb_med / head_med
    return {
        "config": vars(args) | {"latent_shape": list(head_out.shape)},
        "environment": {
            "device": str(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            # other processes share the CPU on dev machines: record the load next to the times
            "loadavg_1m_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "pe_head_ms": {"median": head_med, "runs": head_ms},
        "rgb_vae_ms": {
            "median": rgb_med,
            "runs": rgb_ms,
            "render_median": statistics.median(render_ms),
            "encode_median": statistics.median(encode_ms),
        },
        "ratio": ratio,
        "paper_ms": PAPER_MS,
        "paper_ratio": PAPER_MS["rgb_vae"] / PAPER_MS["pe_head"],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = _parser()
    args = ap.parse_args(argv)
    if (args.frames - 1) % 4 or args.height % 16 or args.width % 16:
        raise ValueError("--frames must be 1 + 4k and --height/--width multiples of 16")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(args.seed)
    tracks, vis = make_tracks(args.frames, args.height, args.width, args.num_tracks, generator=gen)
    tracks, vis = tracks.to(device), vis.to(device)
    H, W = args.height, args.width

    encoder = TrackEncoder(args.track_channels).to(device).eval()
    id_gen = torch.Generator().manual_seed(args.seed + 1)
    colors = track_colors(args.num_tracks).to(device)
    vae = build_wan_vae().to(device)

    with torch.no_grad():
        head_out = encoder(tracks, vis, height=H, width=W, generator=id_gen)
        head_ms = [
            1e3 * t
            for t in time_calls(
                lambda: encoder(tracks, vis, height=H, width=W, generator=id_gen),
                warmup=args.warmup,
                repeats=args.head_repeats,
                device=device,
            )
        ]
        render_ms, encode_ms = [], []

        def rgb_vae():
            sync(device)
            t0 = time.perf_counter()
            v = render_tracks_rgb(tracks, vis, colors, height=H, width=W, radius=args.radius)
            sync(device)
            t1 = time.perf_counter()
            z = vae_encode(vae, v)
            sync(device)
            render_ms.append((t1 - t0) * 1e3)
            encode_ms.append((time.perf_counter() - t1) * 1e3)
            # both paths produce the same conditioning grid
            assert z.shape[2:] == head_out.shape[2:], (tuple(z.shape), tuple(head_out.shape))

        rgb_ms = [1e3 * t for t in time_calls(rgb_vae, warmup=args.warmup, repeats=args.repeats, device=device)]
        render_ms, encode_ms = render_ms[args.warmup :], encode_ms[args.warmup :]

    result = _result(args, device, head_out, head_ms, rgb_ms, render_ms, encode_ms)
    head_med, rgb_med, ratio = result["pe_head_ms"]["median"], result["rgb_vae_ms"]["median"], result["ratio"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_tracks.json").write_text(json.dumps(result, indent=2))
    print(
        f"[bench_tracks] {args.frames}x{H}x{W}, {args.num_tracks} tracks, {device}, "
        f"{torch.get_num_threads()} threads\n"
        f"  PE-head : {head_med:10.2f} ms (median of {len(head_ms)})\n"
        f"  RGB-VAE : {rgb_med:10.2f} ms (median of {len(rgb_ms)}; render "
        f"{result['rgb_vae_ms']['render_median']:.2f} ms + encode {result['rgb_vae_ms']['encode_median']:.2f} ms)\n"
        f"  ratio   : {ratio:10.1f}x  (MotionStream Table 3, one H100: {PAPER_MS['rgb_vae']:g} ms / "
        f"{PAPER_MS['pe_head']:g} ms = {result['paper_ratio']:.1f}x)\n"
        f"  wrote {out / 'bench_tracks.json'}"
    )
    return result


if __name__ == "__main__":
    main()
