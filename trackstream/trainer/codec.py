"""The frozen video codec of a stage, and the codec-fitting objective for trainable codecs.

The teacher trains in the codec's latent space, so the codec is fixed before the teacher
starts. Real codecs (Wan 2.1 VAE, TAEHV) load from a checkpoint; the CPU-sized ``tiny-ae`` of
the embedded synthetic world is trained first through the same loop (``CodecObjective``:
reconstruction on random space-time crops, which a fully convolutional causal AE can be
trained on at a fraction of the cost of full clips), then its latent statistics are fitted so
the DiT sees unit-variance latents, and it is frozen.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from trackstream.models.codec_names import CodecChoice, codec_name
from trackstream.trainer.objective import Objective, generator_state, load_generator_state

__all__ = [
    "CodecFitConfig",
    "CodecConfig",
    "build_codec_module",
    "ReconstructionModel",
    "CodecObjective",
    "load_codec_file",
    "save_codec_file",
    "check_codec_overrides",
]

log = logging.getLogger(__name__)
TRAINABLE = ("tiny-ae",)


@dataclass
class CodecFitConfig:
    steps: int = 400
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 20
    crop: int = 32  # spatial crop (pixels, multiple of 8)
    num_frames: int = 9  # temporal crop (1 + 4k)
    latent_l2: float = 1e-4
    stats_clips: int = 64  # clips used to fit the latent mean/std

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"codec.fit.steps={self.steps} and codec.fit.batch_size={self.batch_size} must be >= 1")
        if self.crop % 8:
            raise ValueError(f"codec.fit.crop={self.crop} must be a multiple of 8")
        if self.num_frames < 1 or (self.num_frames - 1) % 4:
            raise ValueError(f"codec.fit.num_frames={self.num_frames} must be 1 + 4k")


@dataclass
class CodecConfig(CodecChoice):
    """The stage's codec: a name and its weights (``CodecChoice``: checkpoint is required for pretrained
    codecs; tiny-ae is fitted when it is null), plus the trainable codec's options and fit."""

    options: dict = field(default_factory=dict)  # fields of the codec's config (TinyAEConfig: width, ...)
    fit: CodecFitConfig = field(default_factory=CodecFitConfig)

    def __post_init__(self) -> None:
        codec_name(self.name, field="codec.name")
        if self.name not in TRAINABLE and self.checkpoint is None:
            raise ValueError(
                f"codec.name={self.name!r} is not trainable here: set codec.checkpoint to its weights file"
            )
        if self.options.get("latent_channels", 16) != 16:
            raise ValueError(
                "codec.options.latent_channels must be 16: the trainable codecs stand in for the Wan 2.1 "
                "latent space (48-channel latents come with codec=wan2.2-vae)"
            )


def check_codec_overrides(overrides: list[str]) -> None:
    """A ``codec=NAME`` override picks conf/codec/NAME.yaml, whose stem is the codec's one name: any other
    spelling is :func:`codec_name`'s one-line ValueError naming it (before Hydra's page of options)."""
    for arg in overrides:
        m = re.fullmatch(r"\+{0,2}codec=(.*)", arg)
        if m:
            codec_name(m.group(1), field="codec")


def build_codec_module(cfg: CodecConfig) -> nn.Module:
    """The codec as an nn.Module (weights from ``cfg.checkpoint`` when given)."""
    from trackstream.models.codecs import build_codec

    return build_codec(cfg.name, checkpoint=cfg.checkpoint, **cfg.options)


def save_codec_file(codec: nn.Module, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(codec.checkpoint_dict(), tmp)
    tmp.replace(path)


def load_codec_file(cfg: CodecConfig, path: Path) -> nn.Module:
    """A codec fitted by this trainer (its config is stored in the file)."""
    from trackstream.models.codecs import build_codec

    return build_codec(cfg.name, checkpoint=str(path))


class ReconstructionModel(nn.Module):
    """Wraps the codec so that its training loss IS a forward: DDP/FSDP hooks need forward()."""

    def __init__(self, codec: nn.Module, *, latent_l2: float):
        super().__init__()
        self.codec, self.latent_l2 = codec, latent_l2

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        from trackstream.models.codecs import reconstruction_loss

        return reconstruction_loss(self.codec, video, latent_l2=self.latent_l2)


class CodecObjective(Objective):
    """Reconstruction of random space-time crops of the batch's clips (``batch['video']``)."""

    networks = ("codec",)

    def __init__(self, codec: nn.Module, *, fit: CodecFitConfig, device: torch.device, seed: int):
        # ``codec``: the (wrapped) ReconstructionModel
        self.codec, self.fit, self.device = codec, fit, device
        self.gen = torch.Generator().manual_seed(seed)

    def prepare_batch(self, batch: dict) -> dict:
        video = batch["video"]  # [B, 3, T, H, W] in [-1, 1]
        B, _, T, H, W = video.shape
        c, t = self.fit.crop, self.fit.num_frames
        if c > min(H, W) or t > T:
            raise ValueError(f"codec.fit crop {t}x{c}x{c} does not fit clips of {T}x{H}x{W}")
        g = self.gen
        t0 = int(torch.randint(0, T - t + 1, (), generator=g))
        y0 = int(torch.randint(0, H - c + 1, (), generator=g))
        x0 = int(torch.randint(0, W - c + 1, (), generator=g))
        return {"video": video[:, :, t0 : t0 + t, y0 : y0 + c, x0 : x0 + c].to(self.device)}

    def loss(self, name: str, batch: dict, *, step: int):
        return self.codec(batch["video"]), {}

    def state_dict(self) -> dict:
        return {"gen": generator_state(self.gen)}

    def load_state_dict(self, state: dict) -> None:
        load_generator_state(self.gen, state["gen"])
