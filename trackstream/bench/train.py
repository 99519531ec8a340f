"""Training-step benchmark of the motion-conditioned teacher.

    trackstream bench-train                       # tiny teacher (the tiny_teacher experiment) on
                                                     # --device/--dtype (auto: CUDA + bf16 when present,
                                                     # else CPU fp32); on a GPU also the real 1.3B at 832x480
    trackstream bench-train --real --steps 10     # only the real config (GPU)

What is timed: one optimizer update of ``FlowMatchingObjective`` with the experiment's stage settings (timestep/noise/dropout
sampling, track rasterisation, forward, weighted flow-matching loss, backward, clip, AdamW,
EMA), i.e. the loop's inner work, on random latents/tracks/text of the experiment's shapes (no
codec or text encoder in the timed region: they are frozen and, for the tiny world, cached).
Warm-up steps are excluded; GPU timings are synchronised.

Real config: Wan2.1-Fun-1.3B-Control layout (in_dim 48 = 16 noisy + 16 track + 16 start image),
832x480, 81 frames -> 21 x 30 x 52 = 32,760 tokens, UMT5 context [512, 4096], bf16 autocast with
fp32 master weights, activation checkpointing, fused AdamW, batch 1. MFU counts model FLOPs
(no recompute): 6 x (matmul parameters) x tokens + attention 12 x L^2 x dim per layer, plus
cross-attention 12 x L x 512 x dim per layer, over the GPU's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch

from trackstream.bench.timing import time_calls
from trackstream.bench.train_setup import random_batch, training_setup
from trackstream.models.motion_wan import ModelConfig
from trackstream.models.tracks import latent_frames
from trackstream.models.wan import CLIP_DIM, CLIP_TOKENS
from trackstream.stream.options import add_precision_args, parsed_precision
from trackstream.train.teacher.objective import TeacherConfig
from trackstream.train.train_config import ScheduleConfig
from trackstream.trainer.dist import training_allocator

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def model_flops(net, *, tokens: int, text_tokens: int, batch: int) -> float:
    """Training FLOPs of one step (forward + backward, no activation recompute)."""
    dit = net.dit
    on_text = (".cross_attn.k.", ".cross_attn.v.")  # cross-attention K/V project the text tokens
    video = sum(
        p.numel() for n, p in dit.blocks.named_parameters() if p.ndim == 2 and not any(k in "." + n for k in on_text)
    )
    text = sum(
        p.numel() for n, p in dit.blocks.named_parameters() if p.ndim == 2 and any(k in "." + n for k in on_text)
    )
    dense = 6.0 * (video * tokens + text * text_tokens)
    attn = dit.num_layers * 12.0 * dit.dim * (tokens**2 + tokens * text_tokens)  # QK^T and AV, fwd + bwd
    # patch embedding, head, time and text embeddings: < 1% at 480p, left out
    return batch * (dense + attn)


def _record(
    net,
    model: ModelConfig,
    *,
    frames: int,
    height: int,
    width: int,
    batch: int,
    spatial: int,
    sdpa: str,
    compile: bool,
    dt: float,
    device: torch.device,
) -> dict:
    """The step's throughput record: tokens, model FLOPs, achieved TFLOP/s and (CUDA) MFU and peak memory."""
    pt, ph, pw = net.dit.patch_size
    tokens = (latent_frames(frames)) // pt * (height // spatial // ph) * (width // spatial // pw)
    text_tokens = net.dit.text_len + (CLIP_TOKENS if hasattr(net.dit, "img_emb") else 0)
    flops = model_flops(net, tokens=tokens, text_tokens=text_tokens, batch=batch)
    out = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu x {torch.get_num_threads()} threads",
        "flavor": model.flavor,
        "params": sum(p.numel() for p in net.parameters()),
        "batch": batch,
        "frames": frames,
        "height": height,
        "width": width,
        "tokens_per_sample": tokens,
        "sdpa": sdpa,
        "compile": compile,
        "step_time_s": dt,
        "samples_per_s": batch / dt,
        "tokens_per_s": batch * tokens / dt,
        "model_tflops_per_step": flops / 1e12,
        "achieved_tflops": flops / dt / 1e12,
    }
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        out["peak_bf16_tflops"] = peak
        out["mfu"] = (flops / dt / 1e12 / peak) if peak else None
        out["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def _step_fn(net, opt, ema, obj, data: dict, *, sdpa: str, bf16: bool, device: torch.device):
    """One timed training step: the objective's loss and backward, clipping, the optimizer and the EMA."""
    params = [p for p in net.parameters() if p.requires_grad]

    def step():
        # the pinned kernel must also hold in backward, where checkpointed blocks recompute attention
        with _sdpa_backend(sdpa):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
                loss, _ = obj.loss("dit", data, step=0)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(net)

    return step


def bench(
    *,
    model: ModelConfig,
    frames: int,
    height: int,
    width: int,
    tracks: int,
    batch: int,
    text_len: int,
    text_dim: int,
    steps: int,
    warmup: int,
    device: torch.device,
    checkpointing: bool,
    bf16: bool,
    stage: TeacherConfig | None = None,
    shift: float = ScheduleConfig.shift,
    spatial: int = 8,
    sdpa: str = "default",
    profile: int = 0,
    compile: bool = False,
) -> dict:
    """One training step of the teacher objective on random data; ``spatial``: the codec's pixels per
    latent cell (8 for Wan 2.1, 16 for the Wan 2.2 VAE)."""
    net, opt, ema, obj = training_setup(
        model,
        text_dim=text_dim,
        device=device,
        checkpointing=checkpointing,
        compile=compile,
        stage=stage,
        shift=shift,
        height=height,
        width=width,
    )
    gen = torch.Generator().manual_seed(0)
    image_channels = {"wan_i2v": 4 + net.latent_channels, "fun_control": net.latent_channels}.get(model.layout, 0)
    data = random_batch(
        batch=batch,
        frames=frames,
        height=height,
        width=width,
        tracks=tracks,
        text_len=text_len,
        text_dim=text_dim,
        image_channels=image_channels,
        latent_channels=net.latent_channels,
        spatial=spatial,
        clip_tokens=CLIP_TOKENS if hasattr(net.dit, "img_emb") else 0,
        clip_dim=CLIP_DIM,
        device=device,
        gen=gen,
    )
    step = _step_fn(net, opt, ema, obj, data, sdpa=sdpa, bf16=bf16, device=device)
    time_calls(step, device=device, repeats=0, warmup=warmup)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    dt = statistics.mean(time_calls(step, device=device, repeats=steps, warmup=0))
    if profile:
        _print_profile(step, steps=profile, device=device)
    return _record(
        net,
        model,
        frames=frames,
        height=height,
        width=width,
        batch=batch,
        spatial=spatial,
        sdpa=sdpa,
        compile=compile,
        dt=dt,
        device=device,
    )


# The real teachers (random weights): Wan 2.1 1.3B Fun-Control at 832x480x81, Wan 2.2 TI2V-5B at 1280x704x121
# (their recipes' model, size and length: conf/experiment, conf/family).
REAL_RECIPES = ("teacher_wan1.3b_480p", "teacher_wan2.2_5b_704p")


def recipe_config(name: str) -> tuple[ModelConfig, dict]:
    """The recipe's model (random weights: no ``init_from``) and shapes, read from its composed config."""
    from trackstream.models.codec_names import codec_spatial_factor
    from trackstream.train.recipes import compose_recipe

    typed = compose_recipe([f"experiment={name}"])
    d = typed.data
    tracks = d.num_tracks[1] if d.num_tracks else d.grid_size**2
    return dataclasses.replace(typed.model, init_from=None), dict(
        frames=d.num_frames,
        height=d.height,
        width=d.width,
        tracks=tracks,
        batch=d.batch_size,
        stage=typed.stage,
        shift=typed.schedule.shift,
        spatial=codec_spatial_factor(typed.codec.name, dict(typed.codec.options)),
    )


SDPA_BACKENDS = ("default", "flash", "cudnn", "efficient", "math")


def _sdpa_backend(name: str):
    """Pin PyTorch SDPA to one kernel family ("default": PyTorch's own choice)."""
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel

    if name == "default":
        return nullcontext()
    return sdpa_kernel(
        {
            "flash": SDPBackend.FLASH_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "math": SDPBackend.MATH,
        }[name]
    )


def _print_profile(step, *, steps: int, device: torch.device) -> None:
    """Where a step's device time goes: the top kernels/ops over ``steps`` profiled steps."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize(device) if device.type == "cuda" else None
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))


def _bench_or_oom(**kw) -> dict:
    """``bench`` on a GPU; a config that does not fit one GPU (the 5B with fp32 master weights, AdamW
    state and EMA needs ~16 bytes per parameter before activations) is recorded, not fatal: the real
    recipe shards it with FSDP2."""
    device = kw["device"]
    try:
        return bench(**kw)
    except torch.OutOfMemoryError as e:
        out = {
            "device": torch.cuda.get_device_name(device),
            "flavor": kw["model"].flavor,
            "error": "out of memory on one GPU: " + str(e).split(".")[0],
            "gpu_memory_gib": torch.cuda.get_device_properties(device).total_memory / 2**30,
            "max_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30,
        }
    import gc

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--real", action="store_true", help="only the real 1.3B and 5B configs (needs a GPU)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for the tiny benchmark")
    ap.add_argument("--sdpa", default="default", choices=SDPA_BACKENDS, help="pin the attention kernel family")
    ap.add_argument("--profile", type=int, default=0, help="profile this many extra steps; print the top ops")
    ap.add_argument("--compile", action="store_true", help="torch.compile each DiT block (parallel.compile=true)")
    ap.add_argument("--configs", default=None, help="comma-separated real config names (default: all)")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    add_precision_args(ap)
    args = ap.parse_args(argv)
    training_allocator()  # before the first CUDA allocation: as `trackstream train` runs
    device, dtype = parsed_precision(ap, args, training=True)
    results = []
    if not args.real:
        if args.threads:
            torch.set_num_threads(args.threads)
        model, shapes = recipe_config("tiny_teacher")
        results.append(
            {
                "config": "tiny_teacher",
                **bench(
                    model=model,
                    **shapes,
                    text_len=48,
                    text_dim=384,
                    steps=args.steps,
                    warmup=args.warmup,
                    device=device,
                    checkpointing=False,
                    bf16=dtype == torch.bfloat16,
                ),
            }
        )
    if device.type == "cuda":
        for name in REAL_RECIPES:
            if args.configs and name not in args.configs.split(","):
                continue
            model, recipe = recipe_config(name)
            shape = {k: recipe[k] for k in ("frames", "height", "width", "spatial", "stage", "shift")}
            results.append(
                {
                    "config": name,
                    **_bench_or_oom(
                        model=model,
                        **shape,
                        tracks=2000,
                        batch=1,
                        text_len=512,
                        text_dim=4096,
                        steps=max(3, args.steps // 2),
                        warmup=args.warmup,
                        device=device,
                        checkpointing=True,
                        bf16=dtype == torch.bfloat16,
                        sdpa=args.sdpa,
                        profile=args.profile,
                        compile=args.compile,
                    ),
                }
            )
    elif args.real:
        raise SystemExit("--real needs a CUDA GPU (the 1.3B / 5B configs at 480p / 704p do not fit a CPU benchmark)")
    for r in results:
        print(json.dumps(r, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
