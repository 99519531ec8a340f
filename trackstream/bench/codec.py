"""Codec speed benchmark: full vs streaming decode (and encode) for every codec, in one run.

    trackstream bench-codec                      # CPU-sized: 6 latents -> 21 frames at 64x64
    trackstream bench-codec --device cuda --dtype bf16 --height 480 --width 832 --latents 21

Weights are random (architecture speed only; no checkpoint is needed). The Wan VAE is the real
released configuration. Reported: seconds per call (median of --repeats after one warm-up),
decoded frames per second, and each codec's decode speed-up over the Wan VAE measured here.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from trackstream.bench.timing import time_calls
from trackstream.models.codecs import CODEC_NAMES, VideoCodec, build_codec
from trackstream.stream.options import add_precision_args, parsed_precision


def bench(codec: VideoCodec, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    h, w = args.height // codec.spatial_factor, args.width // codec.spatial_factor
    z = torch.randn(1, codec.latent_channels, args.latents, h, w, device=device, dtype=dtype)
    frames = codec.num_pixel_frames(args.latents)
    chunks = [args.chunk] * (args.latents // args.chunk)
    if args.latents % args.chunk:
        chunks.append(args.latents % args.chunk)

    video = torch.rand(1, 3, frames, args.height, args.width, device=device, dtype=dtype) * 2 - 1
    with torch.inference_mode():
        full = statistics.median(time_calls(lambda: codec.decode(z), device=device, repeats=args.repeats))
        stream = statistics.median(
            time_calls(lambda: codec.decode_streaming(z, chunks), device=device, repeats=args.repeats)
        )
        enc = statistics.median(time_calls(lambda: codec.encode(video), device=device, repeats=args.repeats))
    return {"frames": frames, "decode_s": full, "stream_s": stream, "encode_s": enc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codecs", nargs="+", default=list(CODEC_NAMES), choices=CODEC_NAMES)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--latents", type=int, default=6, help="latent frames (6 -> 21 pixel frames)")
    parser.add_argument("--chunk", type=int, default=3, help="latents per streaming chunk")
    parser.add_argument("--repeats", type=int, default=2)
    add_precision_args(parser, device="cpu", dtype="fp32")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave default)")
    parser.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="let cuDNN time its convolution algorithms per shape (torch.backends.cudnn.benchmark)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    device, dtype = parsed_precision(parser, args)

    print(
        f"# device={device} dtype={args.dtype} threads={torch.get_num_threads()} "
        f"{args.latents} latents -> {args.height}x{args.width}, chunks of {args.chunk}, "
        f"cudnn.benchmark={args.cudnn_benchmark}"
    )
    results = {}
    for name in args.codecs:
        torch.manual_seed(0)
        codec = build_codec(name).to(device=device, dtype=dtype).eval()
        results[name] = bench(codec, args, device, dtype)
        del codec
    base = results.get("wan2.1-vae")
    print(f"{'codec':<14} {'frames':>6} {'decode s':>9} {'stream s':>9} {'encode s':>9} {'dec fps':>8} {'vs wan':>7}")
    for name, r in results.items():
        ratio = f"{base['decode_s'] / r['decode_s']:.1f}x" if base else "-"
        print(
            f"{name:<14} {r['frames']:>6} {r['decode_s']:>9.3f} {r['stream_s']:>9.3f} {r['encode_s']:>9.3f} "
            f"{r['frames'] / r['decode_s']:>8.1f} {ratio:>7}"
        )


if __name__ == "__main__":
    main()
