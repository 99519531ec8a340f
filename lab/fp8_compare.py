"""fp8 against bf16 on the same inputs: the realtime benchmark's student (random weights at a setup's real shapes,
``bench.realtime_setups.build``, the same seed for both), its DiT output and its decoded frames.

    python -m lab.fp8_compare --setup wan1.3b-480p-taehv --out outputs/fp8_compare.json          # GPU
    python -m lab.fp8_compare --setup wan1.3b-480p-taehv --layers 1 --height 64 --width 112 --chunks 3 \\
        --device cpu --out /tmp/fp8_compare.json                                                 # CPU rehearsal

Measured, with one network built in bf16 and one in fp8 (``--dtype fp8``: the blocks' linears in float8):
* the relative L2 error of one DiT forward (the whole clip of ``--chunks`` chunks' latent frames, a noisy
  latent at t = 700, the setup's conditioning channels random) of fp8 against bf16, and of each against an fp32
  forward of the same weights (``--no-fp32`` skips it);
* the streaming engine's decoded frames of ``--chunks`` chunks (eager fast step, same seed, inputs and tracks):
  PSNR of fp8's against bf16's (frames in [-1, 1], peak-to-peak 2), and the latents' relative error;
* the matmul rates of the run (``bench.throughput.matmul_tflops``): bf16 and fp8 at ``--matmul-size``.
Writes the JSON to ``--out`` and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import torch

from trackstream.bench.realtime import make_engine
from trackstream.bench.realtime_inputs import LiveTracks, make_inputs
from trackstream.bench.realtime_setups import SETUPS, build
from trackstream.bench.throughput import matmul_tflops
from trackstream.bench.timing import environment
from trackstream.models.fp8 import FP8
from trackstream.stream.options import add_precision_args, parsed_precision


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)  # peak-to-peak 2 ([-1, 1])


@torch.no_grad()
def dit_output(net, codec, setup, chunks: int, device) -> torch.Tensor:
    """One DiT forward on fixed random inputs (same for every dtype: drawn on the CPU from a fixed seed)."""
    dit = net.dit
    frames = setup.causal.chunk_start(chunks)  # latent frames of the first ``chunks`` chunks
    g = torch.Generator().manual_seed(11)
    lat_h, lat_w = setup.height // codec.spatial_factor, setup.width // codec.spatial_factor
    x = torch.randn(1, dit.out_dim, frames, lat_h, lat_w, generator=g)
    y = (
        torch.randn(1, dit.in_dim - dit.out_dim, frames, lat_h, lat_w, generator=g)
        if dit.in_dim > dit.out_dim
        else None
    )
    ctx = torch.randn(1, 64, dit.text_dim, generator=g)
    clip = torch.randn(1, 257, 1280, generator=g) if hasattr(dit, "img_emb") else None
    dev = lambda t: None if t is None else t.to(device)  # noqa: E731
    return dit(dev(x), torch.tensor([700.0], device=device), dev(ctx), dev(clip), dev(y)).float().cpu()


@torch.no_grad()
def stream_frames(net, codec, setup, chunks: int, args) -> tuple[torch.Tensor, torch.Tensor]:
    """The engine's decoded frames and latents of ``chunks`` chunks (eager fast step), fixed seed and inputs."""
    config = setup.stream_config
    inputs = make_inputs(net, setup, tracks=args.tracks, seed=args.seed)
    source = LiveTracks(args.tracks, height=setup.height, width=setup.width, seed=args.seed)
    engine = make_engine(net, codec, config, "eager")
    state = engine.start(
        inputs.image,
        inputs.text,
        inputs.lengths,
        track_ids=inputs.track_ids,
        seed=args.seed,
        image_features=inputs.features,
    )
    outs = list(engine.stream(state, source, num_chunks=chunks))
    return torch.cat([o.frames.float().cpu() for o in outs], 2), torch.cat([o.latents.float().cpu() for o in outs], 2)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setup", default="wan1.3b-480p-taehv", choices=sorted(SETUPS))
    ap.add_argument("--chunks", type=int, default=6, help="chunks streamed (and latent frames of the DiT forward)")
    ap.add_argument("--layers", type=int, default=None, help="cut the DiT to this many blocks (CPU rehearsal)")
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--tracks", type=int, default=1000)
    ap.add_argument("--matmul-size", type=int, default=None, help="default 8192 on CUDA, 512 elsewhere")
    ap.add_argument("--no-fp32", action="store_true", help="skip the fp32 reference forward")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/fp8_compare.json")
    add_precision_args(ap, dtype="fp8")
    args = ap.parse_args(argv)
    device, dtype = parsed_precision(ap, args)
    if dtype != FP8:
        ap.error("--dtype: this script compares fp8 with bf16; leave --dtype at fp8")
    setup = SETUPS[args.setup]
    if args.height or args.width:
        setup = dataclasses.replace(setup, size=(args.height or setup.height, args.width or setup.width))
    t0 = time.perf_counter()
    size = args.matmul_size or (8192 if device.type == "cuda" else 512)
    result = {
        "meta": {**environment(device, FP8), "argv": argv, "setup": args.setup, "size": [setup.height, setup.width]},
        "matmul_bf16": matmul_tflops(device, torch.bfloat16, size=size),
        "matmul_fp8": matmul_tflops(device, FP8, size=size),
    }
    dit_out, frames, latents = {}, {}, {}
    for name, dt in ([] if args.no_fp32 else [("fp32", torch.float32)]) + [("bf16", torch.bfloat16), ("fp8", FP8)]:
        net, codec = build(setup, device=device, dtype=dt, layers=args.layers, seed=args.seed)
        dit_out[name] = dit_output(net, codec, setup, args.chunks, device)
        if name != "fp32":
            frames[name], latents[name] = stream_frames(net, codec, setup, args.chunks, args)
        del net, codec
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["dit_rel_error"] = {"fp8_vs_bf16": _rel(dit_out["fp8"], dit_out["bf16"])}
    if "fp32" in dit_out:
        result["dit_rel_error"].update(
            fp8_vs_fp32=_rel(dit_out["fp8"], dit_out["fp32"]), bf16_vs_fp32=_rel(dit_out["bf16"], dit_out["fp32"])
        )
    result["stream"] = {
        "chunks": args.chunks,
        "frames": frames["fp8"].shape[2],
        "psnr_fp8_vs_bf16_db": _psnr(frames["fp8"], frames["bf16"]),
        "latent_rel_error_fp8_vs_bf16": _rel(latents["fp8"], latents["bf16"]),
    }
    result["seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "meta"}, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
