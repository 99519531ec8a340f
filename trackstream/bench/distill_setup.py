"""The distillation step benchmark's set-up (trackstream/bench/distill.py): random-weight networks of a
recipe's model, the pair folder's shapes, random conditions of those shapes, the record of what was
benchmarked, and the timed unit shared by every stage's benchmark (one update as the loop runs it). Kept apart
so the benchmark modules (distill.py, distill_stages.py) stay about their stages."""

from __future__ import annotations

import statistics

import torch

from trackstream.bench.timing import time_calls
from trackstream.distill.horizons import rollout_frames
from trackstream.models.conditioner import Conditioner
from trackstream.models.motion_wan import TEXT_ENCODER_DIMS, build_motion_wan
from trackstream.models.tracks import latent_frames
from trackstream.models.wan import CLIP_DIM, CLIP_TOKENS
from trackstream.train.encoders import load_text_encoder
from trackstream.trainer.codec import build_codec_module
from trackstream.trainer.dist import Runtime
from trackstream.trainer.parallel import prepare_frozen, unwrap

__all__ = [
    "random_network",
    "pair_shapes",
    "long_shapes",
    "horizon_conditioner",
    "random_conditions",
    "describe",
    "timed",
    "updater",
]


def timed(fn, *, device: torch.device, repeats: int, warmup: int) -> dict:
    """Mean / min seconds of ``repeats`` calls of ``fn`` after ``warmup``, and the CUDA peak memory over them."""
    time_calls(fn, device=device, repeats=0, warmup=warmup)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = time_calls(fn, device=device, repeats=repeats, warmup=0)
    return {
        "seconds": statistics.mean(times),
        "seconds_min": min(times),
        "calls": len(times),
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    }


def updater(objective, net, batch: dict, runtime: Runtime, *, start_step: int = 0):
    """One update of ``net`` as trackstream/trainer/loop.py runs it for the last (here: only) micro-batch of a step:
    ``objective.loss`` under the runtime's autocast, backward, ``TrainedNetwork.step``; loop steps count from
    ``start_step``."""
    step = [start_step]

    def update():
        with runtime.autocast():
            loss, _ = objective.loss(net.name, batch, step=step[0])
        net.backward(loss, accum=1, last=True)
        net.step()
        step[0] += 1

    return update


def random_network(typed, *, clean_first_frame: bool = False):
    """A random-weight network of the recipe's model on meta, and its init function (``prepare_*`` materialise)."""
    net = build_motion_wan(typed.model, text_encoder_dim=TEXT_ENCODER_DIMS[typed.model.text_encoder], device="meta")
    net.conventions.clean_first_frame = clean_first_frame

    def init(module):
        module.init_weights()
        torch.nn.init.normal_(module.dit.head.head.weight, std=0.02)  # the official init zeroes the head

    return net, init


def pair_shapes(typed, net) -> dict:
    """The pair folder's per-sample shapes for this recipe (B, T, F, C, h, w, text tokens, tracks)."""
    from trackstream.models.codec_names import codec_spatial_factor

    d = typed.data
    s = codec_spatial_factor(typed.codec.name, dict(typed.codec.options))
    return dict(
        B=d.batch_size,
        T=d.num_frames,
        F=latent_frames(d.num_frames),
        C=net.latent_channels,
        h=d.height // s,
        w=d.width // s,
        L=net.dit.text_len,
        N=d.num_tracks[1] if d.num_tracks else d.grid_size**2,
        E=TEXT_ENCODER_DIMS[typed.model.text_encoder],
        H=d.height,
        W=d.width,
    )


def empty_prompt(shape: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The empty prompt's (embedding, lengths) at the text encoder's width: the builders encode "" with it."""
    return torch.zeros(1, 1, shape["E"]), torch.ones(1, dtype=torch.long)


def long_shapes(shape: dict, horizons: int, causal) -> dict:
    """The conditions' shapes of a rollout over ``horizons`` teacher horizons (``stage.rollout_horizons``)."""
    T = rollout_frames(shape["T"], horizons, causal)
    return {**shape, "T": T, "F": latent_frames(T)}


def horizon_conditioner(typed, runtime: Runtime) -> Conditioner:
    """The recipe's codec (random weights where it is trainable, the checkpoint's otherwise) and text encoder,
    as the DMD stage builds them from the teacher's (``NetworkExport.conditioner``)."""
    codec = prepare_frozen(runtime, build_codec_module(typed.codec))
    return Conditioner(
        codec=codec,
        text_encoder=load_text_encoder(typed.model, runtime),
        layout=typed.model.layout,
        device=runtime.device,
        image_features="zeros" if typed.model.image_feature_mode == "clip" else typed.model.image_feature_mode,
    )


def random_conditions(net, typed, shape: dict, device, gen: torch.Generator) -> dict:
    """Random conditions as ``train.pair_data.condition_stream`` batches them (before ``prepare_batch``)."""
    B, T, F, C, h, w, N = (shape[k] for k in "BTFChwN")
    img = {"wan_i2v": 4 + C, "fun_control": C}.get(typed.model.layout, 0)  # the layout's image channels
    batch = {
        "image_latent": torch.randn(B, C, 1, h, w, generator=gen),
        "tracks": torch.rand(B, T, N, 2, generator=gen) * torch.tensor([shape["W"] - 1.0, shape["H"] - 1.0]),
        "visibility": torch.rand(B, T, N, generator=gen) > 0.1,
        "text_emb": torch.randn(B, shape["L"], shape["E"], generator=gen),
        "text_len": torch.full((B,), shape["L"]),
        "gid": torch.arange(B),
    }
    if img:
        batch["image"] = torch.randn(B, img, F, h, w, generator=gen)
    if net.needs_image_features:
        batch["image_features"] = torch.randn(B, CLIP_TOKENS, CLIP_DIM, generator=gen)
    return {k: v.to(device) for k, v in batch.items()}


def describe(typed, shape: dict, net) -> dict:
    """The benchmarked setting, recorded beside its timings (model, sizes, tokens, schedule)."""
    dit = unwrap(net).dit
    tokens = shape["F"] * (shape["h"] // dit.patch_size[1]) * (shape["w"] // dit.patch_size[2])
    return {
        "flavor": typed.model.flavor,
        "params": sum(p.numel() for p in unwrap(net).parameters()),
        "batch": shape["B"],
        "frames": shape["T"],
        "height": shape["H"],
        "width": shape["W"],
        "latent_frames": shape["F"],
        "tokens_per_sample": tokens,
        "tracks": shape["N"],
        "causal": typed.stage.causal.name,
        "student_steps": typed.schedule.student_steps,
        "activation_checkpointing": typed.parallel.activation_checkpointing,
    }
