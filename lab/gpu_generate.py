"""Times the real ``trackstream generate`` and the exported diffusers pipeline on the realtime benchmark's setup.

    python -m lab.gpu_generate --out outputs/gpu_generate                         # GPU: wan1.3b-480p-taehv, bf16
    python -m lab.gpu_generate --out outputs/gpu_generate --compile               # generate's compiled step
    python -m lab.gpu_generate --out outputs/gpu_generate_vae --setup wan1.3b-480p-wanvae
    python -m lab.gpu_generate --out /tmp/g --device cpu --dim 64 --num-layers 2 --num-heads 2 --ffn-dim 128 \\
        --height 64 --width 112 --chunks 7 --tracks 20                           # CPU rehearsal (the test's)

Same student as ``trackstream bench-realtime --setup wan1.3b-480p-taehv`` (``bench.realtime_setups``: the
recipe's flavor, chunking, steps and shift, 832x480, random weights at the real shapes), written to disk as a
user gets it: a rehearsal release folder (umT5 / CLIP small, ``pipeline.rehearsal_release``), a student export
(``save_network``, bf16 files), a random TAEHV in the official ``taew2_1.pth`` layout (or a real-size Wan 2.1
VAE), a first frame and ``--tracks`` live tracks from the bench's own generator. Then the real CLI runs as a
subprocess and the pipeline folder (``trackstream export --format pipeline``) streams the same chunks.
frames/s is the bench's: the frames of chunks first..last (1-based, default 5-40) over the wall time from chunk
first - 1 handed out to chunk last handed out, one request each (generate has no warm-up request; its
chunk-layout warm-ups fall before the window). generate's handout times are when its per-chunk lines reach
this process (it prints each with flush=True once the chunk's frames are on the host).
Writes OUT/generate_timing.json and prints one markdown row per path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from trackstream.bench.realtime_inputs import LiveTracks
from trackstream.bench.realtime_setups import SETUPS
from trackstream.bench.timing import environment
from trackstream.eval.tables import markdown_table
from trackstream.models.codecs import TAEHV, WanVAE, WanVAEConfig
from trackstream.models.motion_wan import ModelConfig, build_motion_wan, save_network
from trackstream.models.precision import synchronize
from trackstream.models.streaming import StreamConfig
from trackstream.pipeline.rehearsal_release import RELEASE_CLIP, SHRINK, TINY_UMT5, wan_clip_state, write_release_folder
from trackstream.stream.chunks import chunk_pixel_frames
from trackstream.stream.options import add_precision_args, parsed_precision

CHUNK_LINE = re.compile(r"^chunk\s+(\d+): frames (\d+)-(\d+), ([\d.]+) ms")
FPS_LINE = re.compile(r"^([\d.]+) frames/s \(")
ROOT = Path(__file__).resolve().parents[1]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="working folder (release, student, inputs, JSON)")
    ap.add_argument("--setup", default="wan1.3b-480p-taehv", choices=["wan1.3b-480p-taehv", "wan1.3b-480p-wanvae"])
    for key in SHRINK:  # the DiT's size; default: the flavor's real one
        ap.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help="CPU rehearsal: shrink the DiT")
    ap.add_argument("--height", type=int, default=None, help="default: the setup's (480)")
    ap.add_argument("--width", type=int, default=None, help="default: the setup's (832)")
    ap.add_argument("--chunks", type=int, default=40, help="chunks streamed; the window ends at the last one")
    ap.add_argument("--first", type=int, default=5, help="first chunk of the frames/s window (1-based, as the bench)")
    ap.add_argument("--tracks", type=int, default=1000)
    ap.add_argument("--compile", action="store_true", help="generate --compile (the pipeline has no compiled path)")
    ap.add_argument("--no-overlap-decode", action="store_true", help="generate --no-overlap-decode (the bench's)")
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    add_precision_args(ap)
    return ap


def write_student(out: Path, setup, dims: dict, device: torch.device) -> tuple[Path, Path, str]:
    """Release folder, student export and codec file; (student, codec path, codec name)."""
    # the release's own DiT is never read (the student is built here, no init_from): written at the rehearsal's
    # small size so that no 6 GB of unused weights are initialised on the host and written out
    release = write_release_folder(out / "release", flavor=setup.model.flavor, parts=("t5",), **SHRINK)
    # the bench feeds 257 CLIP tokens (a 224 px image); the rehearsal CLIP's 28 px gives 5: same width, 224 px
    clip = wan_clip_state({**RELEASE_CLIP, "image_size": 224})
    torch.save(clip, release / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
    (release / "xlm-roberta-large").mkdir(exist_ok=True)
    if setup.codec == "wan2.1-vae":  # the real-size VAE (the rehearsal's is shrunk): decode time is measured
        torch.save(WanVAE.from_config(WanVAEConfig()).official_state_dict(), release / "Wan2.1_VAE.pth")
        codec_path = release
    else:  # taehv-wan2.1: a random TAEHV in the official layout, the file name the product's codec conf names
        torch.manual_seed(1)
        codec_path = out / "taew2_1.pth"
        torch.save(TAEHV().state_dict(), codec_path)
    model = setup.model
    cfg = dict(
        flavor=model.flavor,
        layout=model.layout,
        track_channels=model.track_channels,
        track_embed_dim=model.track_embed_dim,
        text_encoder=model.text_encoder,
        text_encoder_path=str(release),
        image_encoder_path=str(release),
        overrides={**model.overrides, **dims},
    )
    torch.manual_seed(0)
    # built on meta and materialised on the device (1.3B random init on the host is slow), as bench.realtime does
    net = build_motion_wan(ModelConfig(**cfg), text_encoder_dim=TINY_UMT5["d_model"], device="meta")
    net.to_empty(device=device)
    net.init_weights()
    with torch.no_grad():
        torch.nn.init.normal_(net.dit.head.head.weight, std=0.02)  # the official init zeroes the head
    state = {k: v.detach().to("cpu", torch.bfloat16) for k, v in net.state_dict().items()}  # a bf16 release
    del net
    stream = StreamConfig(causal=setup.causal, steps=setup.steps, shift=setup.shift)
    conv = {"height": setup.height, "width": setup.width, "num_frames": 81, "causal": stream.to_dict()}
    student = save_network(
        state, out / "student", model_cfg=cfg, text_encoder_dim=TINY_UMT5["d_model"], ema=False, conventions=conv
    )
    return student, codec_path, setup.codec


def write_inputs(out: Path, setup, stream: StreamConfig, chunks: int, n: int, seed: int) -> dict:
    """First frame (PNG) and tracks [T, N, 2] + visibility [T, N] covering every chunk (the bench's LiveTracks)."""
    import cv2

    frames = chunk_pixel_frames(stream.causal, chunks - 1)[1]
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (setup.height, setup.width, 3), dtype=np.uint8)  # RGB
    cv2.imwrite(str(out / "image.png"), image[:, :, ::-1])  # generate reads BGR
    xy, vis = LiveTracks(n, height=setup.height, width=setup.width, seed=seed)(0, (0, frames))
    tracks, visibility = xy[0].numpy().astype(np.float32), vis[0].numpy()
    np.save(out / "tracks.npy", tracks)
    np.save(out / "visibility.npy", visibility)
    return {"image": image, "tracks": tracks, "visibility": visibility}


def window(chunks: list[dict], first: int) -> dict:
    """The bench's frames/s over chunks first..last (1-based; ``t``: handed-out time), plus frames over the
    summed per-chunk seconds (not a wall time when decode overlaps the next chunk)."""
    last = len(chunks)
    got = chunks[first - 1 : last]
    frames = sum(c["frames"] for c in got)
    wall = chunks[last - 1]["t"] - chunks[first - 2]["t"]
    return {
        "window": [first, last],
        "frames": frames,
        "seconds": wall,
        "frames_per_s": frames / wall,
        "frames_per_s_chunk_ms": frames / (sum(c["ms"] for c in got) / 1e3),
    }


def run_generate(args, student: Path, codec: Path, codec_name: str, out: Path, device, dtype) -> dict:
    """The real CLI as a subprocess; its per-chunk lines timestamped as they arrive."""
    argv = [sys.executable, "-m", "trackstream.stream.generate", "--student", student, "--codec", codec]
    argv += ["--codec-name", codec_name, "--image", out / "image.png", "--tracks", out / "tracks.npy"]
    argv += ["--visibility", out / "visibility.npy", "--chunks", args.chunks, "--out", out / "gen.mp4"]
    argv += ["--device", str(device), "--dtype", str(dtype).removeprefix("torch."), "--seed", args.seed]
    argv += ["--compile"] * args.compile + ["--no-overlap-decode"] * args.no_overlap_decode
    proc = subprocess.Popen(
        [str(a) for a in argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    chunks, own_fps, lines = [], None, []
    for line in proc.stdout:
        now = time.perf_counter()
        lines.append(line.rstrip())
        print("  generate| " + line.rstrip(), flush=True)
        if m := CHUNK_LINE.match(line):
            lo, hi = int(m[2]), int(m[3]) + 1
            chunks.append({"index": int(m[1]), "frames": hi - lo, "ms": float(m[4]), "t": now})
        elif m := FPS_LINE.match(line):
            own_fps = float(m[1])
    rc = proc.wait()
    if len(chunks) != args.chunks:  # no timing at all: nothing to record
        raise RuntimeError(f"generate exited {rc} after {len(chunks)} of {args.chunks} chunks:\n" + "\n".join(lines))
    # PyAV may be missing on the lent machine: the mp4 is written after the timing, so a failure there is recorded
    error = None if rc == 0 else "\n".join(lines[-5:])
    return {"rc": rc, "error": error, "own_frames_per_s": own_fps, "chunks": chunks, **window(chunks, args.first)}


def run_pipeline(args, student: Path, codec: Path, codec_name: str, out: Path, inputs: dict, device, dtype) -> dict:
    """``trackstream export --format pipeline``, loaded by diffusers, streamed with prepare / step as a user does."""
    import diffusers

    from trackstream.pipeline.export_network import main as export

    folder = out / "pipe"
    argv = ["--network", student, "--format", "pipeline", "--codec", codec, "--codec-name", codec_name]
    if export([str(a) for a in [*argv, "--out", folder]]) != 0:
        raise RuntimeError("trackstream export --format pipeline failed (see above)")
    pipe = diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True, torch_dtype=dtype)
    if next(pipe.network.parameters()).device != device:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    tracks, vis = inputs["tracks"], inputs["visibility"]
    synchronize(device)
    t0 = time.perf_counter()
    state = pipe.prepare(image=inputs["image"], prompt="", num_tracks=tracks.shape[1], generator=args.seed)
    chunks = []
    for i in range(args.chunks):
        lo, hi = state.frame_range
        start = time.perf_counter()
        frames = pipe.step(state, tracks=tracks[lo:hi], visibility=vis[lo:hi])  # numpy on the host
        synchronize(device)
        now = time.perf_counter()
        chunks.append({"index": i, "frames": frames.shape[0], "ms": 1e3 * (now - start), "t": now})
    return {"prepare_s": chunks[0]["t"] - t0 - chunks[0]["ms"] / 1e3, "chunks": chunks, **window(chunks, args.first)}


_HEAD = ["path", "setup", "device", "dtype", "compile", "window", "frames/s", "frames/s (chunk ms)", "generate's own"]


def _cells(path: str, meta: dict, r: dict) -> list[str]:
    """One path's row of the printed table, under ``_HEAD``."""
    own = r.get("own_frames_per_s")
    return [
        path,
        meta["setup"],
        meta["device_name"],
        meta["dtype"],
        str(meta["compile"]),
        f"{r['window'][0]}-{r['window'][1]}",
        f"{r['frames_per_s']:.2f}",
        f"{r['frames_per_s_chunk_ms']:.2f}",
        "-" if own is None else f"{own:.2f}",
    ]


def main(argv: list[str] | None = None) -> dict:
    ap = _parser()
    args = ap.parse_args(argv)
    device, dtype = parsed_precision(ap, args)
    if not 2 <= args.first <= args.chunks:
        ap.error(f"--first {args.first} / --chunks {args.chunks}: need 2 <= first <= chunks")
    setup = SETUPS[args.setup]
    if args.height or args.width:
        setup = dataclasses.replace(setup, size=(args.height or setup.height, args.width or setup.width))
    dims = {k: getattr(args, k) for k in SHRINK if getattr(args, k) is not None}
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    student, codec, codec_name = write_student(args.out, setup, dims, device)
    stream = StreamConfig(causal=setup.causal, steps=setup.steps, shift=setup.shift)
    inputs = write_inputs(args.out, setup, stream, args.chunks, args.tracks, args.seed)
    print(f"wrote the student, codec and inputs in {time.perf_counter() - t0:.1f} s", flush=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the random init's memory goes before generate's process needs it
    env = environment(device, dtype)
    meta = {"setup": args.setup, "compile": args.compile, **env, "size": [setup.height, setup.width]}
    meta.update(stream=stream.to_dict(), chunks=args.chunks, tracks=args.tracks, dims=dims or "the flavor's")
    meta["overlap_decode"] = device.type == "cuda" and not args.no_overlap_decode  # generate's; the pipeline's: off
    result = {"meta": meta, "generate": run_generate(args, student, codec, codec_name, args.out, device, dtype)}
    if not args.skip_pipeline:
        result["pipeline"] = run_pipeline(args, student, codec, codec_name, args.out, inputs, device, dtype)
    (args.out / "generate_timing.json").write_text(json.dumps(result, indent=2))
    table = [_cells(path, meta, result[path]) for path in ("generate", "pipeline") if path in result]
    print("\n".join(markdown_table(_HEAD, table)))
    print(f"wrote {args.out / 'generate_timing.json'}")
    return result


if __name__ == "__main__":
    main()
