"""A small trainable causal video autoencoder for the embedded synthetic world (CPU-sized).

Same contract as the Wan 2.1 VAE: T = 1 + 4k frames <-> 1 + k latents, 4x temporal and (by
default) 8x spatial compression, so the DiT, the track head and the streaming engine see identical
shapes whichever codec is plugged in. ``patch=4`` gives a 4x spatial factor instead: on the 64x64
synthetic world an 8x8 latent grid (4x4 DiT tokens of 16x16 pixels) is too coarse for a tiny DiT
to move content by a few pixels, while a 16x16 grid (8x8 tokens) lets motion be mostly a copy
between tokens; it also compresses 12x instead of 48x. Consumers read ``spatial_factor``.

How the grouping is made causal: frame 0 is repeated three times in front, giving 4(k + 1)
frames; group t (latent t) is frames 4t-3..4t, i.e. latent 0 is frame 0 alone and no latent sees
a later frame. Each group's 4 frames x 8x8 pixels x RGB are folded into one 768-vector per latent
cell (pixel-unshuffle, like a DiT patch embedding), so every conv runs at latent resolution: a
1x1 embedding, residual 3x3 blocks, a 1x1 projection to the latent channels. This mostly-linear
design is what makes it fit in about a minute on CPU: on 64x64 clips of moving squares, ~200 Adam
steps (batch 8 x 9 frames, lr 2e-3, ~60 s on one busy core) reach ~22 dB PSNR with objects in
place but soft 8x8-block edges; a strided conv pyramid of similar cost was still below 15 dB.
The only mixing across groups is a causal temporal conv (kernel
``temporal_kernel`` over the current and previous latents, zeros before the start). The decoder
mirrors this and drops the first 3 frames of group 0. Streaming decode carries the last
``temporal_kernel - 1`` inputs of the decoder's temporal conv and therefore equals the full decode;
streaming encode carries the encoder's the same way.

Latent normalisation: ``latents_mean``/``latents_std`` are per-channel buffers saved in the
state dict (identity until set, e.g. with :meth:`TinyAE.fit_latent_stats` after training).
``encode``/``decode`` use normalised latents; ``encode_raw``/``decode_raw`` are the training path.

Legend: B batch, G latent groups (= F), C channels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import VideoCodec, load_state_dict_strict

__all__ = ["TinyAEConfig", "TinyAEDecodeState", "TinyAEEncodeState", "TinyAE", "reconstruction_loss"]

_GROUP = 4  # pixel frames per latent (temporal factor)
# what writes a tiny-AE codec.pt again, for an error about one that does not parse
TINY_AE_FIX = (
    "codec.pt is written by the teacher stage's codec fit (RUN/teacher/codec/codec.pt; re-run the stage) "
    "or shipped as assets/tiny-teacher/codec.pt (git checkout assets/)"
)


@dataclass(frozen=True)
class TinyAEConfig:
    latent_channels: int = 16
    width: int = 128  # hidden channels at latent resolution
    num_res_blocks: int = 1  # per side
    temporal_kernel: int = 2  # latents seen by each causal temporal conv (1 = no temporal mixing)
    patch: int = 8  # pixels per latent cell side: the spatial factor (Wan: 8)

    def __post_init__(self) -> None:
        if self.width < 1 or self.num_res_blocks < 0 or self.latent_channels < 1:
            raise ValueError(
                f"TinyAEConfig: width={self.width}, latent_channels={self.latent_channels} must be >= 1 "
                f"and num_res_blocks={self.num_res_blocks} >= 0"
            )
        if self.patch not in (2, 4, 8, 16):
            raise ValueError(f"TinyAEConfig.patch={self.patch} must be one of 2, 4, 8, 16 (pixels per latent cell)")
        if self.temporal_kernel < 1:
            raise ValueError(f"TinyAEConfig.temporal_kernel={self.temporal_kernel} must be >= 1")


class _ResBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class _CausalTimeMix(nn.Module):
    """Residual conv over latent time that only looks back: x_t + gate * conv(x_{t-k+1..t}).

    The per-channel gate starts at zero, so the module starts as the identity and temporal mixing
    only grows where it helps: an ungated version mixed noise from the previous latent into every
    cell and slowed fitting markedly (measured on CPU).
    """

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv3d(dim, dim, (kernel, 1, 1))
        self.gate = nn.Parameter(torch.zeros(1, dim, 1, 1, 1))

    def forward(self, x: torch.Tensor, history: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        # x: [B, C, G, h, w]; history: the previous kernel-1 inputs [B, C, kernel-1, h, w] or None (start).
        if history is None:
            history = x.new_zeros(*x.shape[:2], self.kernel - 1, *x.shape[3:])
        seq = torch.cat([history, x], dim=2)
        out = x + self.gate * self.conv(F.silu(seq))
        return out, seq[:, :, seq.shape[2] - (self.kernel - 1) :].clone()  # a copy, not a view pinning seq


@dataclass(frozen=True)
class TinyAEDecodeState:
    history: torch.Tensor | None = None  # decoder temporal-conv inputs of the last kernel-1 latents
    started: bool = False


@dataclass(frozen=True)
class TinyAEEncodeState:
    history: torch.Tensor | None = None  # encoder temporal-conv inputs of the last kernel-1 latents
    started: bool = False


class TinyAE(VideoCodec):
    """Causal conv autoencoder: [B, 3, 1+4k, H, W] in [-1, 1] <-> [B, C, 1+k, H/p, W/p] (p = patch)."""

    def __init__(self, config: TinyAEConfig | None = None):
        super().__init__()
        self.config = config = config or TinyAEConfig()
        self.latent_channels = config.latent_channels
        c, k = config.width, config.temporal_kernel
        self.spatial_factor = config.patch
        c_patch = 3 * _GROUP * config.patch**2  # 4 frames x RGB x p x p (768 at p = 8) per latent cell
        self.enc_in = nn.Conv2d(c_patch, c, 1)
        self.enc_res = nn.Sequential(*[_ResBlock(c) for _ in range(config.num_res_blocks)])
        self.enc_time = _CausalTimeMix(c, k) if k > 1 else None
        self.enc_out = nn.Conv2d(c, config.latent_channels, 1)

        self.dec_in = nn.Conv2d(config.latent_channels, c, 1)
        self.dec_time = _CausalTimeMix(c, k) if k > 1 else None
        self.dec_res = nn.Sequential(*[_ResBlock(c) for _ in range(config.num_res_blocks)])
        self.dec_out = nn.Conv2d(c, c_patch, 1)

        self.register_buffer("latents_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latents_std", torch.ones(config.latent_channels))

    # ------------------------------------------------------------------ raw (training) path

    def encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        """Unnormalised latents [B, C, 1+k, h, w] (differentiable)."""
        self.check_video(video)
        z, _ = self._encode_groups(self._front_pad(video), None)
        return z

    @staticmethod
    def _front_pad(video: torch.Tensor) -> torch.Tensor:
        """[B, 3, 1+4k, H, W] -> [B, 3, 4(k+1), H, W]: frame 0 three times more in front (group 0 = frame 0)."""
        return torch.cat([video[:, :, :1].expand(-1, -1, _GROUP - 1, -1, -1), video], dim=2)

    def _encode_groups(self, x: torch.Tensor, history: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frames [B, 3, 4G, H, W] -> raw latents [B, C, G, h, w], new encoder history."""
        b, _, t, h, w = x.shape
        g = t // _GROUP
        x = x.to(self.enc_in.weight.dtype)
        x = x.view(b, 3, g, _GROUP, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b * g, _GROUP * 3, h, w)
        x = self.enc_res(self.enc_in(F.pixel_unshuffle(x, self.spatial_factor)))  # [B*G, width, h, w]
        if self.enc_time is not None:
            x = x.view(b, g, *x.shape[1:]).transpose(1, 2)  # [B, width, G, h, w]
            x, history = self.enc_time(x, history)
            x = x.transpose(1, 2).flatten(0, 1)
        z = self.enc_out(F.silu(x))
        return z.view(b, g, *z.shape[1:]).transpose(1, 2), history  # [B, C, G, h, w]

    def _decode_groups(self, z: torch.Tensor, history: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw latents [B, C, G, h, w] -> all 4G frames [B, 3, 4G, H, W] (unclamped), new history."""
        b, _, g, h, w = z.shape
        x = self.dec_in(z.to(self.dec_in.weight.dtype).transpose(1, 2).flatten(0, 1))  # [B*G, width, h, w]
        if self.dec_time is not None:
            x, history = self.dec_time(x.view(b, g, *x.shape[1:]).transpose(1, 2), history)
            x = x.transpose(1, 2).flatten(0, 1)
        x = F.pixel_shuffle(self.dec_out(F.silu(self.dec_res(x))), self.spatial_factor)  # [B*G, 12, H, W]
        hh, ww = x.shape[-2:]
        x = x.view(b, g, _GROUP, 3, hh, ww).permute(0, 3, 1, 2, 4, 5).reshape(b, 3, g * _GROUP, hh, ww)
        return x, history

    def decode_raw(self, raw_latents: torch.Tensor) -> torch.Tensor:
        """Unnormalised latents -> unclamped video [B, 3, 1+4(F-1), H, W] (differentiable)."""
        self.check_latents(raw_latents)
        x, _ = self._decode_groups(raw_latents, None)
        return x[:, :, _GROUP - 1 :]

    # ------------------------------------------------------------------ normalisation

    def set_latent_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if mean.shape != (self.latent_channels,) or std.shape != (self.latent_channels,):
            raise ValueError(f"latent stats must have shape ({self.latent_channels},), got {mean.shape}, {std.shape}")
        if not bool((std > 0).all()):
            raise ValueError("latent std must be positive in every channel")
        self.latents_mean.copy_(mean)
        self.latents_std.copy_(std)

    @torch.no_grad()
    def fit_latent_stats(self, videos: Iterable[torch.Tensor]) -> None:
        """Set mean/std per channel from the raw latents of ``videos`` (batches [B, 3, T, H, W])."""
        total, total_sq, count = 0.0, 0.0, 0
        for video in videos:
            z = self.encode_raw(video).double()
            total = total + z.sum(dim=(0, 2, 3, 4))
            total_sq = total_sq + z.square().sum(dim=(0, 2, 3, 4))
            count += z.numel() // z.shape[1]
        if count == 0:
            raise ValueError("fit_latent_stats got no videos")
        mean = total / count
        std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
        self.set_latent_stats(mean.float(), std.float())

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.latent_channels, 1, 1, 1)
        return self.latents_mean.view(shape), self.latents_std.view(shape)

    # ------------------------------------------------------------------ VideoCodec

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats()
        return (self.encode_raw(video) - mean) / std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats()
        self.check_latents(latents)
        return self.decode_raw(latents * std + mean).clamp(-1.0, 1.0)

    def init_encode_state(self) -> TinyAEEncodeState:
        return TinyAEEncodeState(history=None, started=False)

    def encode_chunk(self, video: torch.Tensor, state: TinyAEEncodeState) -> tuple[torch.Tensor, TinyAEEncodeState]:
        self.check_encode_chunk(video, started=state.started)
        x = video if state.started else self._front_pad(video)
        z, history = self._encode_groups(x, state.history)
        mean, std = self._stats()
        return (z - mean) / std, TinyAEEncodeState(history=history, started=True)

    def init_decode_state(self) -> TinyAEDecodeState:
        return TinyAEDecodeState(history=None, started=False)

    def decode_chunk(self, latents: torch.Tensor, state: TinyAEDecodeState) -> tuple[torch.Tensor, TinyAEDecodeState]:
        self.check_latents(latents)
        mean, std = self._stats()
        x, history = self._decode_groups(latents * std + mean, state.history)
        if not state.started:
            x = x[:, :, _GROUP - 1 :]
        return x.clamp(-1.0, 1.0), TinyAEDecodeState(history=history, started=True)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_dict(self) -> dict:
        """{"config", "state_dict"}: what :meth:`from_checkpoint` reads (``torch.save`` it)."""
        return {"config": asdict(self.config), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, path: str, config: TinyAEConfig | None = None) -> "TinyAE":
        """Load a ``checkpoint_dict()`` file (config inside) or a bare state dict (config given)."""
        from trackstream.models.formats.files import read_torch_file

        obj = read_torch_file(path, fix=TINY_AE_FIX)
        if isinstance(obj, Mapping) and "state_dict" in obj:
            if config is None and "config" in obj:
                config = TinyAEConfig(**obj["config"])
            obj = obj["state_dict"]
        if not isinstance(obj, Mapping):
            raise ValueError(f"{path} holds a {type(obj).__name__}, not a tiny-AE checkpoint; {TINY_AE_FIX}")
        model = cls(config)
        load_state_dict_strict(model, obj, source=str(path))
        return model


def reconstruction_loss(model: TinyAE, video: torch.Tensor, *, latent_l2: float = 1e-4) -> torch.Tensor:
    """Mean squared pixel error of encode -> decode, plus a small L2 on the raw latents.

    The L2 keeps the latent scale bounded (an unregularised AE can drift to huge latents, which a
    diffusion model then struggles with); the per-channel std normalisation does the rest.
    """
    z = model.encode_raw(video)
    recon = model.decode_raw(z)
    return F.mse_loss(recon, video.to(recon.dtype)) + latent_l2 * z.square().mean()
