"""The tiny network, the global batch and the loss shared by tests/test_sequence_parallel.py and its
multi-process driver (imported by both, so the one-process reference and the ranks agree exactly)."""

import torch

from trackstream.models.motion_wan import ModelConfig, build_motion_wan

TEXT_DIM = 8
GLOBAL_BATCH = 2
FRAMES, HEIGHT, WIDTH = 3, 8, 8  # latent: 3 frames of 4x4 tokens after the 2x2 patch


def build_net() -> torch.nn.Module:
    """A tiny t2v MotionWan with a track head, every parameter random (the official init zeroes the
    output head, which would leave most gradients zero and the comparison empty)."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        flavor="tiny",
        layout="t2v",
        track_channels=4,
        track_embed_dim=8,
        overrides={"dim": 64, "ffn_dim": 128, "num_heads": 4, "num_layers": 2, "text_len": 8},
    )
    net = build_motion_wan(cfg, text_encoder_dim=TEXT_DIM, device="cpu")
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return net


def global_batch() -> dict:
    g = torch.Generator().manual_seed(1)
    B, F = GLOBAL_BATCH, FRAMES
    return {
        "x": torch.randn(B, 16, F, HEIGHT, WIDTH, generator=g),
        "t": torch.rand(B, F, generator=g) * 1000,  # per-frame timesteps: the modulation differs per frame
        "text": torch.randn(B, 5, TEXT_DIM, generator=g),
        "lens": torch.tensor([5, 3]),
        "motion": torch.randn(B, 8, 4 * (F - 1) + 1, HEIGHT, WIDTH, generator=g),
        "target": torch.randn(B, 16, F, HEIGHT, WIDTH, generator=g),
    }


def take(batch: dict, index: int, parts: int) -> dict:
    """Data rank ``index`` of ``parts``: its contiguous share of the global batch."""
    n = GLOBAL_BATCH // parts
    return {k: v[index * n : (index + 1) * n] for k, v in batch.items()}


def loss_of(net, batch: dict) -> torch.Tensor:
    v = net(batch["x"], batch["t"], text=batch["text"], text_lengths=batch["lens"], motion=batch["motion"])
    return (v - batch["target"]).square().mean()
