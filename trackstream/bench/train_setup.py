"""The teacher training-step benchmark's set-up (trackstream/bench/train.py): the seeded network with its
optimizer, EMA and objective, and a random batch. Kept apart so the benchmark module stays about timing."""

from __future__ import annotations

import torch

from trackstream.models.motion_wan import ModelConfig, build_motion_wan
from trackstream.models.tracks import latent_frames
from trackstream.train.teacher.build import teacher_objective
from trackstream.train.teacher.objective import TeacherConfig
from trackstream.trainer.ema import EMA, EMAConfig
from trackstream.trainer.optim import OptimConfig, build_optimizer, param_groups


def random_batch(
    *,
    batch: int,
    frames: int,
    height: int,
    width: int,
    tracks: int,
    text_len: int,
    text_dim: int,
    image_channels: int,
    latent_channels: int,
    spatial: int,
    clip_tokens: int,
    clip_dim: int,
    device,
    gen: torch.Generator,
) -> dict:
    """A random training batch of the teacher objective, drawn from ``gen`` in a fixed order."""
    lat = (batch, latent_channels, latent_frames(frames), height // spatial, width // spatial)
    b = {
        "latents": torch.randn(lat, generator=gen),
        "text_emb": torch.randn(batch, text_len, text_dim, generator=gen),
        "text_len": torch.full((batch,), text_len),
        "tracks": torch.rand(batch, frames, tracks, 2, generator=gen) * torch.tensor([width - 1.0, height - 1.0]),
        "visibility": torch.rand(batch, frames, tracks, generator=gen) > 0.1,
    }
    if image_channels:
        b["image"] = torch.randn(batch, image_channels, *lat[2:], generator=gen)
    if clip_tokens:  # i2v DiTs (the 1.3B Fun-Control) cross-attend to the frozen CLIP image tokens too
        b["image_features"] = torch.randn(batch, clip_tokens, clip_dim, generator=gen)
    return {k: v.to(device) for k, v in b.items()}


def training_setup(
    model: ModelConfig,
    *,
    text_dim: int,
    device: torch.device,
    checkpointing: bool,
    compile: bool,
    stage: TeacherConfig | None,
    shift: float,
    height: int,
    width: int,
) -> tuple:
    """The seeded network (built on meta and initialised in place on a GPU), its optimizer, EMA and teacher objective."""
    torch.manual_seed(0)
    net = build_motion_wan(model, text_encoder_dim=text_dim, device="meta" if device.type == "cuda" else None)
    if any(p.is_meta for p in net.parameters()):
        net.to_empty(device=device)
        net.init_weights()
    net.to(device).train()
    net.gradient_checkpointing = checkpointing
    if compile:  # what parallel.compile=true does: each DiT block (the sharding unit) compiled
        for block in net.dit.blocks:
            block.compile()
    optim_cfg = OptimConfig(lr=1e-5)
    opt = build_optimizer(param_groups(net, optim_cfg), optim_cfg, device=device)
    ema = EMA(net, EMAConfig(decay=0.999))
    empty = torch.zeros(1, 1, text_dim, device=device)
    obj = teacher_objective(
        stage or TeacherConfig(),
        net,
        shift=shift,
        null_text=(empty, torch.ones(1, dtype=torch.long)),
        height=height,
        width=width,
        seed=0,
        device=device,
    )
    return net, opt, ema, obj
