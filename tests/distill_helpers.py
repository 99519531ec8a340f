"""Tiny random parts shared by the distillation tests (not a test module)."""

import torch

from trackstream.models.channel_layouts import i2v_condition
from trackstream.models.codecs import build_codec
from trackstream.models.motion_wan import ModelConfig, build_motion_wan

H = W = 32
TEXT_DIM = 24
NUM_FRAMES = 25  # 7 latents: the first-frame chunk + 2 chunks of 3 (c3s1w1's steady-state layout)
NUM_TRACKS = 5


def tiny_network(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_motion_wan(ModelConfig(), text_encoder_dim=TEXT_DIM)
    torch.nn.init.normal_(net.dit.head.head.weight, std=0.05)  # the official init zeroes the head
    return net


def tiny_codec() -> torch.nn.Module:
    torch.manual_seed(123)
    return build_codec("tiny-ae", width=16).eval()


def null_text():
    return torch.zeros(1, 1, TEXT_DIM), torch.tensor([1])


def make_conditions(codec, *, seed: int = 0):
    """conditions(indices) -> the batch ``distill.ode_pairs.generate_ode_pairs`` expects, keyed by index."""

    @torch.no_grad()
    def conditions(idx):
        out = {k: [] for k in ("image", "image_latent", "first_frame", "tracks", "visibility", "text_emb")}
        lens, captions = [], []
        for i in idx:
            g = torch.Generator().manual_seed(seed * 7919 + i)
            frame_u8 = torch.randint(0, 256, (1, 3, H, W), generator=g, dtype=torch.uint8)
            frame = frame_u8.float() / 127.5 - 1  # exactly what a consumer of first_frame rebuilds
            out["image"].append(i2v_condition(codec, frame, num_frames=NUM_FRAMES)[0])
            out["image_latent"].append(codec.encode(frame[:, :, None])[0])
            out["first_frame"].append(frame_u8[0])
            start = torch.rand(NUM_TRACKS, 2, generator=g) * (W - 1)
            vel = torch.randn(NUM_TRACKS, 2, generator=g)
            t = torch.arange(NUM_FRAMES, dtype=torch.float32)[:, None, None]
            out["tracks"].append((start + t * vel).clamp(0, W - 1))
            out["visibility"].append(torch.ones(NUM_FRAMES, NUM_TRACKS, dtype=torch.bool))
            n = 2 + i % 3
            out["text_emb"].append(torch.nn.functional.pad(torch.randn(n, TEXT_DIM, generator=g), (0, 0, 0, 4 - n)))
            lens.append(n)
            captions.append(f"clip {i}")
        batch = {k: torch.stack(v) for k, v in out.items()}
        batch.update(text_len=torch.tensor(lens), caption=captions, seeds=list(idx))
        return batch

    return conditions
