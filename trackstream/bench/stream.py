"""Benchmark: streaming latency and memory of the rolling KV cache vs full causal context.

For each attention layout, a chunk-by-chunk rollout (random weights, random inputs, one cached
DiT forward per chunk + the functional cache write) runs to ``--chunks`` chunks:

* rolling: chunk C, sink S, window W (default c3s1w1, MotionStream);
* full: the same chunk and sink with unbounded window (full causal history, Self-Forcing-like).

At the measured chunks (1-based: chunk k is generated with k-1 chunks cached; default 5, 50,
200) it records peak memory of the step (CUDA: ``torch.cuda.max_memory_allocated`` after a
peak reset, minus cache snapshots kept for the timing phase; CPU: not measurable per step, so
only the exact K/V cache bytes) and keeps the cache. Because the cache is immutable and a step
does not write it, the kept caches are then re-timed INTERLEAVED (5, 50, 200, 5, 50, ...) for
``--repeats`` rounds after a warm-up and the median is reported: load drift on a shared machine
hits every point alike. A K-step sampler costs K+1 such forwards per chunk (K noisy + clean).

Reports the latency ratio chunk200/chunk5 of the rolling cache (and its memory) against the growth of
full context. Full context that runs out of GPU memory stops there (recorded).

    trackstream bench-stream                                   # tiny, CPU
    trackstream bench-stream --flavor wan2.1-t2v-1.3b --device cuda --dtype bf16 \\
        --height 480 --width 832                                  # real 1.3B, random weights
    trackstream bench-stream --flavor wan2.2-ti2v-5b --device cuda   # 5B at 1280x704 (48-ch latents, H/16)
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from trackstream.models.causal import KVCache, new_cache, stream_step
from trackstream.models.flavors import build_wan
from trackstream.models.streaming import CausalConfig
from trackstream.models.wan import WanModel
from trackstream.stream.options import add_precision_args, parsed_precision
from trackstream.train.recipes import family_facts

VAE_STRIDE = {"wan2.2-ti2v-5b": 16}  # pixels per latent cell: Wan 2.2 VAE 16, Wan 2.1 VAE 8 (default)
# the real flavors' families (conf/family): their pixel size is the default here
FAMILY = {"wan2.1-t2v-1.3b": "wan2.1_480p", "wan2.1-t2v-14b": "wan2.1_480p", "wan2.2-ti2v-5b": "wan2.2_5b_704p"}
_OOM = getattr(torch, "OutOfMemoryError", getattr(torch.cuda, "OutOfMemoryError", RuntimeError))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(flavor: str, device: torch.device, dtype: torch.dtype) -> WanModel:
    """Random-weight model; real flavors are built on meta and materialised on the device
    (no slow CPU init). The zero-init head is randomised so outputs are not all zero."""
    if flavor.startswith("tiny"):
        model = build_wan(flavor, device=device)
    else:
        model = build_wan(flavor, device="meta").to_empty(device=device)
        model.init_weights()
    with torch.no_grad():
        torch.nn.init.normal_(model.head.head.weight, std=0.02)
    if dtype != torch.float32:
        model.cast_for_inference(dtype)
    return model.eval().requires_grad_(False)


def _snapshot_extra_bytes(current: KVCache, kept: dict[int, KVCache]) -> int:
    """Bytes held only by kept snapshots (not by the current cache): excluded from peak memory."""
    live = {id(c) for c in current.chunks}
    extra = {id(c): c for snap in kept.values() for c in snap.chunks if id(c) not in live}
    return sum(k.nbytes + v.nbytes for c in extra.values() for k, v in c.layers)


def rollout(
    model, cfg: CausalConfig, *, chunks: int, measure: list[int], latent_hw, context, device, generator
) -> dict:
    """Roll out ``chunks`` chunks, keeping the cache before each measured chunk."""
    h, w = latent_hw
    cache = new_cache(model, cfg, context)
    kept: dict[int, KVCache] = {}
    per_chunk_ms, memory, stopped = [], {}, None
    t = torch.full((1,), 500.0, device=device)
    for k in range(1, chunks + 1):  # chunk k (1-based) has index k-1
        x = torch.randn(1, model.out_dim, cfg.chunk_len(k - 1), h, w, generator=generator).to(device)
        if k in measure:
            kept[k] = cache
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
        try:
            _sync(device)
            t0 = time.perf_counter()
            _, kv = stream_step(model, cache, x, t)
            cache = cache.append(kv)
            _sync(device)
        except _OOM:
            stopped = f"out of memory at chunk {k}"
            kept.pop(k, None)
            break
        per_chunk_ms.append((time.perf_counter() - t0) * 1e3)
        if k in measure:
            peak = None
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) - _snapshot_extra_bytes(kept[k], kept)
            memory[k] = {"peak_mem_bytes": peak, "cache_bytes": kept[k].nbytes(), "cache_frames": kept[k].frames}
        del kv
    return {"kept": kept, "per_chunk_ms": per_chunk_ms, "memory": memory, "stopped": stopped}


def time_interleaved(
    model, kept: dict[int, KVCache], *, latent_hw, device, repeats: int, warmup: int, generator
) -> dict[int, list[float]]:
    h, w = latent_hw
    t = torch.full((1,), 500.0, device=device)
    xs = {
        k: torch.randn(1, model.out_dim, c.config.chunk_len(c.next_chunk), h, w, generator=generator).to(device)
        for k, c in kept.items()
    }
    times: dict[int, list[float]] = {k: [] for k in kept}
    for r in range(warmup + repeats):
        for k, cache in kept.items():
            _sync(device)
            t0 = time.perf_counter()
            _, kv = stream_step(model, cache, xs[k], t)
            cache.append(kv)  # timed like a real chunk; the result is dropped (cache is immutable)
            _sync(device)
            if r >= warmup:
                times[k].append((time.perf_counter() - t0) * 1e3)
            del kv
    return times


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flavor", default="tiny", choices=["tiny", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-ti2v-5b"])
    ap.add_argument("--height", type=int, default=None, help="pixel height (default tiny 256, real: the family's)")
    ap.add_argument("--width", type=int, default=None, help="pixel width (default tiny 256, real: the family's)")
    ap.add_argument("--latent", action="store_true", help="--height/--width are latent sizes, not pixels")
    add_precision_args(ap)
    ap.add_argument("--chunk-frames", type=int, default=CausalConfig.chunk_frames)
    ap.add_argument("--sink", type=int, default=CausalConfig.sink_chunks, help="sink chunks (both layouts)")
    ap.add_argument(
        "--window", type=int, default=CausalConfig.window_chunks, help="window chunks of the rolling layout"
    )
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--full-chunks", type=int, default=None, help="cap the full-context rollout (default --chunks)")
    ap.add_argument("--measure", default="5,50,200", help="1-based chunks to measure")
    ap.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds (median)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/bench_stream.json")
    return ap


def _latent_hw(args) -> tuple[int, int]:
    """The latent grid (h, w) of ``--height``/``--width`` (pixels unless ``--latent``; default: the family's)."""
    tiny = args.flavor.startswith("tiny")
    family = None if tiny else family_facts(FAMILY[args.flavor])
    height = args.height or (256 if tiny else family.height)
    width = args.width or (256 if tiny else family.width)
    scale = 1 if args.latent else VAE_STRIDE.get(args.flavor, 8)
    if height % (2 * scale) or width % (2 * scale):
        raise ValueError(f"--height/--width must be multiples of {2 * scale} (VAE stride x patch 2)")
    return (height // scale, width // scale)


def _run_layout(model, cfg: CausalConfig, n: int, measure: list[int], args, *, latent_hw, context, device, gen) -> dict:
    """One layout's rollout to ``n`` chunks and the interleaved re-timing of its kept caches: a ``runs`` entry."""
    t0 = time.perf_counter()
    roll = rollout(
        model,
        cfg,
        chunks=n,
        measure=[k for k in measure if k <= n],
        latent_hw=latent_hw,
        context=context,
        device=device,
        generator=gen,
    )
    times = time_interleaved(
        model,
        roll["kept"],
        latent_hw=latent_hw,
        device=device,
        repeats=args.repeats,
        warmup=args.warmup,
        generator=gen,
    )
    points = {
        k: roll["memory"][k] | {"latency_ms_median": statistics.median(v), "latency_ms_min": min(v), "repeats": len(v)}
        for k, v in times.items()
    }
    run = {
        "layout": cfg.name,
        "chunks_done": len(roll["per_chunk_ms"]),
        "stopped": roll["stopped"],
        "points": points,
        "per_chunk_ms": [round(v, 3) for v in roll["per_chunk_ms"]],
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    del roll
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return run


def _summary(runs: dict, measure: list[int], device: torch.device) -> dict:
    """Per layout the growth from the first to the last measured chunk it reached."""
    first = measure[0]
    summary = {}
    for name, run in runs.items():
        pts = run["points"]
        reached = max(pts) if pts else None
        summary[f"{name}_latency_ratio"] = (
            pts[reached]["latency_ms_median"] / pts[first]["latency_ms_median"] if reached and first in pts else None
        )
        # identical work measured under load: the min is the noise floor, a robust second look
        summary[f"{name}_latency_ratio_min"] = (
            pts[reached]["latency_ms_min"] / pts[first]["latency_ms_min"] if reached and first in pts else None
        )
        summary[f"{name}_ratio_chunks"] = f"{reached}/{first}"
        summary[f"{name}_cache_bytes_ratio"] = (
            pts[reached]["cache_bytes"] / max(1, pts[first]["cache_bytes"]) if reached and first in pts else None
        )
        if device.type == "cuda" and reached and first in pts:
            summary[f"{name}_peak_mem_ratio"] = pts[reached]["peak_mem_bytes"] / pts[first]["peak_mem_bytes"]
    return summary


def main(argv: list[str] | None = None) -> dict:
    ap = _parser()
    args = ap.parse_args(argv)

    device, dtype = parsed_precision(ap, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    latent_hw = _latent_hw(args)
    measure = sorted({int(k) for k in args.measure.split(",")})
    if measure[0] < 1 or measure[-1] > args.chunks:
        raise ValueError(f"--measure {args.measure} must lie in 1..--chunks ({args.chunks})")
    layouts = {
        "rolling": (CausalConfig(args.chunk_frames, args.sink, args.window), args.chunks),
        "full": (CausalConfig(args.chunk_frames, args.sink, None), args.full_chunks or args.chunks),
    }

    torch.manual_seed(args.seed)
    model = build_model(args.flavor, device, dtype)
    gen = torch.Generator().manual_seed(args.seed)
    context = torch.randn(1, model.text_len, model.text_dim, generator=gen).to(device)
    tokens_per_frame = latent_hw[0] * latent_hw[1] // 4
    result = {
        "config": vars(args)
        | {
            "latent_hw": list(latent_hw),
            "tokens_per_frame": tokens_per_frame,
            "dtype": str(dtype).removeprefix("torch."),
        },
        "environment": {
            "device": str(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        },
        "runs": {},
    }
    print(
        f"{args.flavor} {dtype} on {device}: latent {latent_hw[0]}x{latent_hw[1]} "
        f"({tokens_per_frame} tokens/frame), {args.chunk_frames} frames/chunk"
    )
    with torch.inference_mode():
        for name, (cfg, n) in layouts.items():
            result["runs"][name] = _run_layout(
                model, cfg, n, measure, args, latent_hw=latent_hw, context=context, device=device, gen=gen
            )
            _print_run(name, result["runs"][name])

    summary = _summary(result["runs"], measure, device)
    result["summary"] = summary
    print("summary: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


def _print_run(name: str, run: dict) -> None:
    print(
        f"[{name} {run['layout']}] {run['chunks_done']} chunks in {run['wall_s']} s"
        + (f" ({run['stopped']})" if run["stopped"] else "")
    )
    print(f"  {'chunk':>6} {'median ms':>10} {'min ms':>9} {'peak MiB':>9} {'cache MiB':>10} {'frames':>7}")
    for k, p in sorted(run["points"].items()):
        peak = "n/a" if p["peak_mem_bytes"] is None else f"{p['peak_mem_bytes'] / 2**20:.1f}"
        print(
            f"  {k:>6} {p['latency_ms_median']:>10.2f} {p['latency_ms_min']:>9.2f} {peak:>9} "
            f"{p['cache_bytes'] / 2**20:>10.2f} {p['cache_frames']:>7}"
        )


if __name__ == "__main__":
    main()
