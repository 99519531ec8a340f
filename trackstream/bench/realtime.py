"""End-to-end realtime benchmark of what a user sees: the real streaming engine on a random-weight student.

    trackstream bench-realtime                                   # tiny student, CPU (the smoke setup)
    trackstream bench-realtime --setup wan1.3b-480p-taehv --mode both        # GPU, bf16
    trackstream bench-realtime --setup wan1.3b-480p-wanvae,wan5b-704p-taehv,wan5b-704p-wanvae
    trackstream bench-realtime --setup wan5b-704p-taehv --layers 2 --height 128 --width 256 --device cpu
                                                                    # CPU rehearsal of a real setup, cut down
    trackstream bench-realtime --setup tiny-student,small --tracks 128 --device cpu
                                  # the shipped tiny student against the small world model's (docs/small-world.md)
    trackstream bench-realtime --setup trackv0-480p-taehv --mode both     # FastVideo's Track-v0, random weights
    trackstream bench-realtime --network Track-v0 --mode both             # a bundle (or an export), its own weights

Per setup (``SETUPS``: the student of a real recipe, its codec, size, chunking, steps and shift; Track-v0's as
FastVideo's pipeline streams it; or ``--network``: a folder streamed with its own weights) and mode
(``reference``: the engine's plain eager path, ``fast=False``; ``eager``: the static-buffer step;
``compiled``: the torch.compile'd step, CUDA graphs on CUDA), with tracks of ``--tracks`` live points
produced on the host chunk by chunk:
1. a full warm-up request (start + chunks 1..last);
2. a warm request: its first-frames latency (start + the first generated chunk, until its frames are
   decoded; the 5B's given chunk 0 is the image itself and is reported separately), then frames/s over
   chunks first..last (1-based, default 5-40: pixel frames produced / wall time from chunk first - 1
   handed out to chunk last handed out; the engine hands a chunk out once its frames are decoded) and
   the peak memory of the request (CUDA: ``torch.cuda.max_memory_allocated``);
3. a breakdown request with ``timings=True`` (synchronised per phase, so apart from the frames/s run):
   condition / DiT (K noisy passes + the clean commit) / decode / host seconds per chunk (the engine's),
   the track source's host seconds (measured here: the engine's chunk time starts after it), and the
   DiT's achieved TFLOP/s (``bench.throughput``: analytic FLOPs of the passes) over a plain matmul
   measured in the same run.
The prompt's text-encoder output and the first frame's CLIP tokens are random tensors of their real
shapes (encoded once per request by frozen encoders, not part of the stream). A mode the engine does
not offer is one line of the table ("unavailable: ..."), not a crash. JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import inspect
import json
import sys
import time
import traceback
from pathlib import Path

import torch

from trackstream.bench.realtime_inputs import Inputs, LiveTracks, TimedSource, make_inputs
from trackstream.bench.realtime_setups import CPU_SETUPS, REAL_SETUPS, SETUPS, Setup, build, network_setup
from trackstream.bench.throughput import chunk_flops, matmul_tflops
from trackstream.bench.timing import environment
from trackstream.eval.tables import markdown_table
from trackstream.models.precision import synchronize
from trackstream.models.streaming import StreamConfig
from trackstream.stream.engine import StreamingGenerator
from trackstream.stream.options import add_precision_args, parsed_precision

# Setup, SETUPS and build (bench.realtime_setups), LiveTracks and TimedSource (bench.realtime_inputs) stay
# importable from here.
__all__ = ["Setup", "SETUPS", "MODES", "LiveTracks", "TimedSource", "Unavailable", "make_engine", "run_mode", "main"]


# mode -> the engine's keyword arguments (stream.engine.StreamingGenerator)
MODES = {"reference": {"fast": False}, "eager": {"fast": True}, "compiled": {"fast": True, "compile": True}}
MODE_ALIASES = {"both": ["eager", "compiled"], "all": ["reference", "eager", "compiled"]}
PHASES = ("condition", "dit", "decode", "host")


class Unavailable(Exception):
    """The engine does not offer this mode (an older engine, or a step it refuses to build)."""


def make_engine(
    net, codec, config: StreamConfig, mode: str, *, timings: bool = False, overlap_decode: bool = False
) -> StreamingGenerator:
    """The engine in ``mode``; ``Unavailable`` if this engine lacks the keywords or refuses the mode."""
    params = inspect.signature(StreamingGenerator).parameters
    kwargs = dict(MODES[mode])
    if mode == "reference" and "fast" not in params:
        kwargs.pop("fast")  # an engine without the fast step: its only path is the reference one
    if timings:
        kwargs["timings"] = True
    if overlap_decode and mode != "reference":
        kwargs["overlap_decode"] = True
    missing = [f"{k}=" for k in kwargs if k not in params]
    if missing:
        raise Unavailable(f"StreamingGenerator has no {', '.join(missing)} (engine API not merged)")
    try:
        return StreamingGenerator(net, codec, config=config, **kwargs)
    except ValueError as err:
        raise Unavailable(str(err).split("\n")[0]) from err


def request(engine, inputs: Inputs, source, *, chunks: int, seed: int, marks_at: set[int]) -> tuple[dict, list]:
    """One stream request of ``chunks`` chunks: {1-based chunk k: seconds from the request's start until
    chunk k was handed out} for k in ``marks_at`` (0: ``start`` done, synchronised), and the outputs.
    The engine hands a chunk out once its frames are decoded (it waits for them), so no further sync is
    added: with ``overlap_decode`` the next chunk's passes are already queued and keep running."""
    device = engine.device
    synchronize(device)
    t0 = time.perf_counter()
    state = engine.start(
        inputs.image, inputs.text, inputs.lengths, track_ids=inputs.track_ids, seed=seed, image_features=inputs.features
    )
    marks = {}
    if 0 in marks_at:
        synchronize(device)
        marks[0] = time.perf_counter() - t0
    outs = []
    for k, out in enumerate(engine.stream(state, source, num_chunks=chunks), start=1):
        if k in marks_at:
            marks[k] = time.perf_counter() - t0
        outs.append(
            dict(
                index=out.index,
                pixel_range=out.pixel_range,
                nfe=out.nfe,
                seconds=out.seconds,
                timings=getattr(out, "timings", None),
            )
        )
    return marks, outs


def _flops(net, codec, setup: Setup, config: StreamConfig, indices: list[int]) -> float:
    """Analytic FLOPs of the DiT passes of the chunks with these 0-based indices."""
    dit = net.dit
    tpf = (setup.height // codec.spatial_factor // dit.patch_size[1]) * (
        setup.width // codec.spatial_factor // dit.patch_size[2]
    )
    return sum(
        chunk_flops(dit, config.causal, i, tokens_per_frame=tpf, passes=config.nfe_per_chunk(i)) for i in indices
    )


def _breakdown(net, codec, setup, config, mode, inputs, source, args) -> dict:
    """Mean per-phase seconds over ``--breakdown-chunks`` chunks from ``--first`` on, after a warm-up request;
    ``sum_over_chunk``: the phases over the engine's chunk time, ``sum_over_wall``: the phases plus the track
    source over the wall time of the same chunks measured here."""
    engine = make_engine(net, codec, config, mode, timings=True, overlap_decode=args.overlap_decode)
    n = args.first + args.breakdown_chunks - 1
    request(engine, inputs, source, chunks=n, seed=args.seed, marks_at=set())  # warm-up (compiles, if so)
    timed = TimedSource(source)
    marks, outs = request(engine, inputs, timed, chunks=n, seed=args.seed + 1, marks_at={0, args.first - 1, n})
    window = outs[args.first - 1 :]
    if any(o["timings"] is None for o in window):
        raise Unavailable("ChunkOutput has no timings (engine API not merged)")
    means = {p: sum(o["timings"][p] for o in window) / len(window) for p in PHASES}
    chunk_s = sum(o["seconds"] for o in window) / len(window)
    wall_s = (marks[n] - marks[args.first - 1]) / len(window)
    source_s = timed.seconds / n  # the source is asked once per chunk, each call alike
    flops = _flops(net, codec, setup, config, [o["index"] for o in window])
    return {
        **means,
        "track_source": source_s,
        "chunk_s": chunk_s,
        "wall_s": wall_s,
        "chunks": len(window),
        "sum_over_chunk": sum(means.values()) / chunk_s,
        "sum_over_wall": (sum(means.values()) + source_s) / wall_s,
        "dit_tflops": flops / sum(o["timings"]["dit"] for o in window) / 1e12,
    }


def _progress(name: str, mode: str, what: str) -> None:
    print(f"[realtime] {name} {mode}: {what}", flush=True)


def run_mode(net, codec, setup: Setup, mode: str, args, matmul: dict, *, name: str) -> dict:
    """Warm-up request, warm request (first frames, frames/s, peak memory), breakdown; one result row. ``name``: the
    setup's, in the progress lines."""
    config = setup.stream_config.replace(steps=args.steps)
    device = next(net.parameters()).device
    inputs = make_inputs(net, setup, tracks=args.tracks, seed=args.seed)
    source = LiveTracks(args.tracks, height=setup.height, width=setup.width, seed=args.seed)
    row = {"mode": mode, "stream": config.name, "window": [args.first, args.last]}
    try:
        first_gen = 2 if config.first_chunk_given else 1  # 1-based: the first chunk sampled by the DiT
        chunks = max(args.last, first_gen)  # a window of the given chunk alone still times the first sampled one
        engine = make_engine(net, codec, config, mode, overlap_decode=args.overlap_decode)
        t0 = time.perf_counter()
        request(engine, inputs, source, chunks=chunks, seed=args.seed, marks_at=set())  # the warm-up request
        # the warm-up holds the compilations (one per chunk layout): a row cut at its limit says where it was
        _progress(
            name, mode, f"warm-up request of {chunks} chunks (compiles, if so) in {time.perf_counter() - t0:.1f} s"
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        marks, outs = request(
            engine,
            inputs,
            source,
            chunks=chunks,
            seed=args.seed + 1,
            marks_at={0, 1, first_gen, args.first - 1, args.last},
        )
        window = outs[args.first - 1 : args.last]
        frames = sum(hi - lo for lo, hi in (o["pixel_range"] for o in window))
        seconds = marks[args.last] - marks[args.first - 1]
        flops = _flops(net, codec, setup, config, [o["index"] for o in window])
        row.update(
            frames_per_s=frames / seconds,
            window_frames=frames,
            window_s=seconds,
            first_frames_s=marks[first_gen],
            first_output_s=marks[1],
            start_s=marks[0],
            window_tflops=flops / seconds / 1e12,
            window_over_matmul=flops / seconds / 1e12 / matmul["tflops"],
            peak_memory_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        )
        _progress(
            name,
            mode,
            f"timed request: {row['frames_per_s']:.1f} frames/s, first frames {row['first_frames_s']:.3f} s; "
            "the breakdown's requests next",
        )
        try:
            row["breakdown"] = _breakdown(net, codec, setup, config, mode, inputs, source, args)
            row["dit_over_matmul"] = row["breakdown"]["dit_tflops"] / matmul["tflops"]
        except Unavailable as why:
            row["breakdown"] = {"unavailable": str(why)}
    except Unavailable as why:
        row["unavailable"] = str(why)
    except torch.OutOfMemoryError as err:
        row["error"] = "out of memory: " + str(err).split(".")[0]
    except Exception as err:  # one failing mode (e.g. a compile error) must not lose the other rows
        traceback.print_exc()
        row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return row


def table(results: list[dict]) -> str:
    """The markdown table of a run (one line per setup x mode)."""
    head = ["setup", "mode", "frames/s", "first frames s", "condition ms", "DiT ms", "decode ms", "host ms"]
    head += ["chunk ms", "peak GiB", "DiT TFLOP/s", "/ matmul"]
    rows = []
    for r in results:
        if "frames_per_s" not in r:
            why = r.get("unavailable") and f"unavailable: {r['unavailable']}" or f"error: {r.get('error')}"
            rows.append([r["setup"], r["mode"], why])
            continue
        b = r.get("breakdown", {})
        ms = [f"{1e3 * b[p]:.1f}" if p in b else "-" for p in (*PHASES, "chunk_s")]
        peak = "n/a" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2**30:.1f}"
        tf = f"{b['dit_tflops']:.3g}" if "dit_tflops" in b else "-"
        ratio = f"{r['dit_over_matmul']:.0%}" if "dit_over_matmul" in r else "-"
        rows.append(
            [r["setup"], r["mode"], f"{r['frames_per_s']:.1f}", f"{r['first_frames_s']:.3f}", *ms, peak, tf, ratio]
        )
    # a setup that did not run: its reason runs on where its figures would be
    return "\n".join(markdown_table(head, rows, short_rows=True))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--setup",
        default=None,
        help=f"comma-separated, of {sorted(SETUPS)} (default: all real setups on CUDA, tiny elsewhere)",
    )
    ap.add_argument(
        "--network",
        default=None,
        help="an exported student or a FastVideo bundle (Track-v0): streamed with its own weights, size and "
        "stream, decoded by a random-weight tiny decoder of its latent space (instead of --setup)",
    )
    ap.add_argument(
        "--mode",
        default=None,
        help="comma-separated of eager (the static-buffer step), compiled, reference (fast=False), or "
        "both (eager,compiled) / all (default: both on CUDA, eager elsewhere)",
    )
    ap.add_argument("--first", type=int, default=5, help="first chunk of the frames/s window (1-based)")
    ap.add_argument("--last", type=int, default=40, help="last chunk of the frames/s window (1-based)")
    ap.add_argument("--breakdown-chunks", type=int, default=8, help="chunks averaged in the per-phase breakdown")
    ap.add_argument("--tracks", type=int, default=1000, help="live track points")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps per chunk (default: the recipe's, 3)")
    ap.add_argument("--layers", type=int, default=None, help="cut the DiT to this many blocks (CPU rehearsal)")
    ap.add_argument(
        "--dim", type=int, default=None, help=f"DiT width of {', '.join(CPU_SETUPS)} (FFN 3x, heads of 64): size sweeps"
    )
    ap.add_argument("--height", type=int, default=None, help="pixel height (default: the setup's)")
    ap.add_argument("--width", type=int, default=None, help="pixel width (default: the setup's)")
    ap.add_argument("--overlap-decode", action="store_true", help="engine overlap_decode=True (eager / compiled)")
    ap.add_argument(
        "--matmul-size",
        type=int,
        default=None,
        help="square matmul of the reference rate (default 8192 on CUDA, 512 elsewhere)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/bench_realtime.json")
    add_precision_args(ap)
    return ap


def _selection(ap: argparse.ArgumentParser, args, device: torch.device) -> tuple[list[str], list[str]]:
    """The setups and modes to run (defaults by device); a bad flag is the parser's error."""
    if args.network is not None:
        if args.setup or args.dim or args.layers:
            ap.error("--network streams one network as it is: drop --setup / --dim / --layers")
        names = [args.network]
    else:
        names = args.setup.split(",") if args.setup else (REAL_SETUPS if device.type == "cuda" else ["tiny"])
    unknown = [n for n in names if n not in SETUPS and n != args.network]
    if unknown:
        ap.error(f"--setup {','.join(unknown)}: choose from {', '.join(SETUPS)}")
    mode = args.mode or ("both" if device.type == "cuda" else "eager")
    modes = MODE_ALIASES.get(mode) or mode.split(",")
    if set(modes) - set(MODES):
        ap.error(f"--mode {mode}: choose from {', '.join([*MODES, *MODE_ALIASES])}")
    if not 1 <= args.first <= args.last:
        ap.error(f"--first {args.first} / --last {args.last}: need 1 <= first <= last")
    if args.breakdown_chunks < 1 or args.tracks < 1:
        ap.error("--breakdown-chunks and --tracks must be >= 1")
    if args.dim is not None and (args.dim < 64 or args.dim % 64 or set(names) - set(CPU_SETUPS)):
        ap.error(f"--dim {args.dim}: a multiple of 64, for {', '.join(CPU_SETUPS)} only (real flavors keep theirs)")
    return names, modes


def _run_setup(ap, args, name: str, modes: list[str], device: torch.device, dtype, matmul: dict) -> list[dict]:
    """One setup's rows (one per mode, each printed as it is done), its student built once for all modes."""
    if name == args.network:
        try:
            setup = network_setup(name)
        except ValueError as err:
            ap.error(f"--network {name}: {err}")
    else:
        setup = SETUPS[name]
    if args.height or args.width:
        setup = dataclasses.replace(setup, size=(args.height or setup.height, args.width or setup.width))
    t0 = time.perf_counter()
    try:
        net, codec = build(setup, device=device, dtype=dtype, layers=args.layers, dim=args.dim, seed=args.seed)
    except torch.OutOfMemoryError as err:
        return [{"setup": name, "mode": m, "error": "out of memory building: " + str(err).split(".")[0]} for m in modes]
    print(f"[realtime] {name}: student and codec built in {time.perf_counter() - t0:.1f} s", flush=True)
    cell = 2 * codec.spatial_factor  # DiT patch 2 on the codec's latent grid
    if setup.height % cell or setup.width % cell:
        ap.error(f"--height/--width {setup.height}x{setup.width}: {name} needs multiples of {cell}")
    rows = []
    for mode in modes:
        size = {
            "layers": len(net.dit.blocks),
            "dim": net.dit.dim,
            "dit_params": sum(p.numel() for p in net.dit.parameters()),
        }
        row = {"setup": name, **size, **run_mode(net, codec, setup, mode, args, matmul, name=name)}
        rows.append(row)
        print(table([row]).splitlines()[-1], flush=True)
        gc.collect()  # the mode's engine (static buffers, CUDA graphs) goes before the next is built
        if device.type == "cuda":
            torch.cuda.empty_cache()
    del net, codec
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)  # what ran, as the JSON records it
    args = ap.parse_args(argv)
    device, dtype = parsed_precision(ap, args)
    names, modes = _selection(ap, args, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.matmul_size or (8192 if device.type == "cuda" else 512)
    matmul = matmul_tflops(device, dtype, size=size)  # fp8: the fp8 linears' product; the rows' "/ matmul"
    meta = {**environment(device, dtype), "argv": argv}
    print(
        f"{meta['device_name']} {meta['dtype']}: matmul {matmul['size']}^3 {matmul['tflops']:.3g} TFLOP/s", flush=True
    )
    rates = {}
    if dtype == torch.float8_e4m3fn:  # the bf16 rate beside it: what the same pass would be held to in bf16
        rates["matmul_bf16"] = matmul_tflops(device, torch.bfloat16, size=size)
        print(f"bf16 matmul {size}^3 {rates['matmul_bf16']['tflops']:.3g} TFLOP/s", flush=True)
    results = []
    for name in names:
        results += _run_setup(ap, args, name, modes, device, dtype, matmul)
    print(table(results))
    result = {"meta": meta, "matmul": matmul, **rates, "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
