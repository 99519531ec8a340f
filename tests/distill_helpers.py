"""Tiny random parts shared by the distillation tests (not a test module)."""

from dataclasses import asdict
from pathlib import Path

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


def tiny_teacher_run(root: Path, *, student: str, pairs: str, nudge: float = 0.0, conventions=None) -> Path:
    """Laid out as runs are, under ``root``: teacher/{export/teacher, codec/codec.pt} (a random teacher of
    the tiny experiments' model, its head not zero, and their codec), ``student`` (an export of the teacher, each weight moved by
    ``nudge`` x N(0, 1), recording ``conventions``) and ``pairs`` (4 ODE pairs of the tiny world at 64 px,
    25 frames, 3 teacher steps). Returns the teacher export."""
    from hydra_helpers import typed

    from trackstream.models.motion_wan import TEXT_ENCODER_DIMS, save_network
    from trackstream.train.pair_data import obtain_ode_pairs
    from trackstream.trainer.codec import build_codec_module, save_codec_file
    from trackstream.trainer.dist import init_runtime

    teacher = root / "teacher/export/teacher"
    cfg = typed(
        root,
        "experiment=tiny_ode_init",
        "debug=tiny",
        "data.num_frames=25",
        f"stage.teacher={teacher}",
        "stage.ode_pairs.num_pairs=4",
        "stage.ode_pairs.teacher_steps=3",
        "stage.ode_pairs.batch_size=2",
    )
    torch.manual_seed(0)
    net = build_motion_wan(cfg.model, text_encoder_dim=TEXT_ENCODER_DIMS["minilm"])
    net.init_weights()
    torch.nn.init.normal_(net.dit.head.head.weight, std=0.05)  # the official init zeroes the head
    model_cfg = asdict(cfg.model)
    save_network(net.state_dict(), teacher, model_cfg=model_cfg, text_encoder_dim=384, ema=True)
    if nudge:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p), alpha=nudge)
    save_network(
        net.state_dict(), root / student, model_cfg=model_cfg, text_encoder_dim=384, ema=True, conventions=conventions
    )
    (root / "teacher/codec").mkdir()
    save_codec_file(build_codec_module(cfg.codec), root / "teacher/codec/codec.pt")
    obtain_ode_pairs(
        cfg.stage.teacher,
        cfg.stage.ode_pairs,
        init_runtime("single"),
        root / pairs,
        count=cfg.stage.pool_size,
        model=cfg.model,
        codec=cfg.codec,
        data=cfg.data,
        schedule=cfg.schedule,
    )
    return teacher
