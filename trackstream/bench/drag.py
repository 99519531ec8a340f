"""Runtime factor of DragStream: seconds per generated frame while dragging with I iterations over the
same chunks streamed without dragging (random weights; speed only).

    trackstream bench-drag                                      # tiny student at 64x64, CPU
    trackstream bench-drag --flavor wan1.3b --device cuda       # the 1.3B recipe's student at 832x480, bf16

Per round, from the same stream state: one chunk streamed plainly (K sampler steps + the clean
cache pass + decode) and the same chunk animated by a one-token translation of a box (one coarse-to-
fine segment) with each I in ``--iterations``: the reference passes (one per SFSO cut-off), the
x0 pass and I forward + backward passes, then the rest of the chunk. Rounds are interleaved and the
median is reported; RF(I) = drag seconds / plain seconds. Larger drags multiply the iterations by
their segment count (one per token of motion or 8 degrees). ``--device`` / ``--dtype``: default CUDA +
bf16 when a GPU is present, else CPU + fp32. There is no export here (random weights built in
place), so the network and codec are cast as ``models.conditioner.load_export`` casts an export.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from trackstream.models.codecs import build_codec
from trackstream.models.motion_wan import ModelConfig, build_motion_wan
from trackstream.models.precision import dtype_name, synchronize, working_dtype
from trackstream.models.streaming import StreamConfig
from trackstream.stream.drag.editor import DragEditor
from trackstream.stream.drag.instructions import DragInstruction, Translation
from trackstream.stream.drag.optimize import DragConfig
from trackstream.stream.engine import StreamingGenerator
from trackstream.stream.options import add_precision_args, parsed_precision

__all__ = ["main", "SETUPS"]

# name -> (model config, codec, pixel height, width, text dim)
SETUPS = {
    "tiny": (
        ModelConfig(
            flavor="tiny", layout="wan_i2v", track_channels=32, overrides={"num_heads": 2, "patch_size": (1, 1, 1)}
        ),
        ("tiny-ae", {"width": 128, "patch": 4}),
        64,
        64,
        384,
    ),
    "wan1.3b": (
        ModelConfig(flavor="wan2.1-fun-1.3b-control", layout="fun_control", track_channels=16, text_encoder="umt5"),
        ("taehv-wan2.1", {}),
        480,
        832,
        4096,
    ),
}


def _engine(args, device, dtype) -> tuple:
    """The flavor's streaming engine (seeded network, codec cast as an export's would be), frame size and text width."""
    model_cfg, (codec_name, codec_kw), H, W, text_dim = SETUPS[args.flavor]
    torch.manual_seed(0)
    real = args.flavor != "tiny"
    net = build_motion_wan(model_cfg, text_encoder_dim=text_dim, device="meta" if real else None)
    if real:
        net.to_empty(device=device)
        net.init_weights()
    torch.nn.init.normal_(net.dit.head.head.weight, std=0.02)  # the official init zeroes the head
    net = net.to(device).eval().requires_grad_(False)
    codec = build_codec(codec_name, **codec_kw).to(device).eval()
    if dtype != torch.float32:  # what load_export does to an export's network and codec
        net.dit.cast_for_inference(dtype)
        codec.to(working_dtype(dtype))
    engine = StreamingGenerator(net, codec, config=StreamConfig(steps=3, shift=5.0))
    return engine, net, H, W, text_dim


def _instruction(H: int, W: int, token: int) -> DragInstruction:
    """A one-chunk drag of a centred 4x4-token box by one token to the right."""
    box = np.zeros((H, W), bool)
    box[H // 2 - 2 * token : H // 2 + 2 * token, W // 2 - 2 * token : W // 2 + 2 * token] = True
    c = np.array([W / 2, H / 2])
    return DragInstruction(
        mode="animate",
        object_masks=[box],
        editable=np.ones((H, W), bool),
        num_chunks=1,
        trajectories=[Translation(points=np.stack([c + [token * k / 3, 0] for k in range(4)]))],
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flavor", default="tiny", choices=sorted(SETUPS))
    ap.add_argument("--iterations", default="1,4", help="comma-separated I values")
    ap.add_argument("--keep", default="x0,latent", help="comma-separated DragConfig.keep modes to time")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="outputs/bench_drag.json")
    add_precision_args(ap)
    args = ap.parse_args(argv)
    device, dtype = parsed_precision(ap, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    engine, net, H, W, text_dim = _engine(args, device, dtype)
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(1, 3, H, W, generator=g) * 2 - 1).to(device)
    text, lens = torch.randn(1, 16, text_dim, generator=g).to(device), torch.tensor([16])
    feats = torch.randn(1, 257, 1280, generator=g).to(device) if net.needs_image_features else None

    editor = DragEditor(engine, DragConfig(pin=False))
    editor.start(image, text, lens, seed=0, image_features=feats)
    editor.step()  # chunk 1: the reference chunk of the drags below
    start = list(editor.history)
    token = editor.token
    instr = _instruction(H, W, token)
    its = [int(i) for i in args.iterations.split(",")]
    keeps = args.keep.split(",")
    runs = {f"I={i} keep={k}": DragConfig(iterations=i, keep=k, pin=False) for k in keeps for i in its}
    times: dict[str, list[float]] = {"plain": [], **{name: [] for name in runs}}

    def reset():
        editor.history.clear()
        editor.history.extend(start)
        editor.state = start[-1].after

    for r in range(args.warmup + args.rounds):
        for name in times:
            reset()
            synchronize(device)
            t0 = time.perf_counter()
            if name == "plain":
                editor.step()
            else:
                editor.drag(instr, method="latent", config=runs[name])
            synchronize(device)
            if r >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    frames = engine.pixel_range(2)[1] - engine.pixel_range(2)[0]
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "flavor": args.flavor,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu x {torch.get_num_threads()} threads",
        "dtype": dtype_name(dtype),
        "size": [H, W],
        "frames_per_chunk": frames,
        "seconds_per_frame": {k: v / frames for k, v in med.items()},
        "rf": {k: v / med["plain"] for k, v in med.items() if k != "plain"},
        "rounds": args.rounds,
        "segments": 1,
    }
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
