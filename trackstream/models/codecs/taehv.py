"""TAEHV (Tiny AutoEncoder for Hunyuan Video, madebyollin/taehv) for Wan 2.1 and Wan 2.2, as a ``VideoCodec``.

One architecture, one preset per official release (``TAEHV_RELEASES``, keyed by codec name):
- ``taehv-wan2.1``: ``taew2_1.pth`` (Wan 2.1 and Wan 2.2-14B latents): 16 latent channels, no pixel
  patch, spatial factor 8.
- ``taehv-wan2.2``: ``taew2_2.pth`` (Wan 2.2 TI2V-5B latents): 48 latent channels and a 2x2 pixel patch
  (``F.pixel_unshuffle`` before the encoder, ``F.pixel_shuffle`` after the decoder, so the convs see
  12 = 3 x 2 x 2 channels, channel index 4c + 2dy + dx), spatial factor 2 x 8 = 16. Widths, time
  down/upsampling and the 3-frame trim are those of taew2_1, and neither release applies a latent
  mean/std (the official taehv.py of madebyollin/taehv selects exactly patch_size=2,
  latent_channels=48 for a "taew2_2" file). The "super" decoder of ``taew2_2_super`` is not built here.

Architecture and state-dict names follow the official files and taehv.py of madebyollin/taehv:
``encoder.{i}`` / ``decoder.{i}`` index an ``nn.Sequential``; all convs are 2D and run per frame,
time mixes only through MemBlock (concat of the current and previous frame), TPool (s frames
folded into channels, 1x1 conv) and TGrow (1x1 conv to s*C channels, unfolded into s frames).
TAEHV works in NTCHW and [0, 1] and consumes/produces *normalised* Wan latents directly (no
mean/std); this wrapper converts from/to the interface's [B, 3, T, H, W] in [-1, 1].

Frame conventions:
- Decoder: every latent grows into 4 frames and the first 3 frames of a stream are dropped, so
  F latents give 4F - 3 frames (21 -> 81) with latent 0 <-> frame 0 and latent t <-> frames
  4t-3..4t, which is Wan's grouping. The decoder is causal, so streaming equals full decode.
- Encoder: the official ``encode_video`` pads the *end* with copies of the last frame to a
  multiple of 4, so T = 1 + 4k frames -> 4k + 4 -> 1 + k latents, with latent t seeing frames
  4t..4t+3. That is what the released encoder was trained with and is our default
  (``encoder_time_pad="end"``). ``encoder_time_pad="front"`` instead repeats frame 0 three times
  in front, so latent t sees frames up to 4t exactly as Wan's causal encoder; use it for an
  encoder trained from scratch under our frame convention.
- Streaming encode carries each encoder MemBlock's memory and the frames of a group not yet complete:
  a latent comes out once its 4 frames are in. Padded in front that is the causal contract (1 + k,
  then k latents per chunk); padded at the end a chunk completes one latent fewer, the clip's last
  latent (its last frame padded with copies) coming out only when the next frames arrive.

``patch_tgrow_layers``: a checkpoint TGrow weight with more output channels than the module (a
decoder built with temporal upsampling switched off) is sliced to its last-timestep channels,
as the official loader does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import VideoCodec, load_state_dict_strict, read_state_dict_file

__all__ = [
    "TAEHVConfig",
    "TAEHV_RELEASES",
    "TAEHVDecodeState",
    "TAEHVEncodeState",
    "TAEHV",
    "MemBlock",
    "TPool",
    "TGrow",
    "Clamp",
    "checkpoint_sizes",
]


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Soft clamp of the incoming latents to (-3, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """Residual conv block that also sees the previous frame's input (its "memory")."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(
            _conv(n_in * 2, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out)
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        # x, past: [N*T, C, H, W]; channel order (current, previous) as in the checkpoint.
        return self.act(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class TPool(nn.Module):
    """Fold ``stride`` consecutive frames into channels and mix them with a 1x1 conv."""

    def __init__(self, n_f: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n_f * stride, n_f, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c, h, w = x.shape  # [N, T, C, H, W] -> [N, T / s, C, H, W]
        assert t % self.stride == 0, f"TPool needs T={t} divisible by {self.stride}"
        y = self.conv(x.reshape(n * t // self.stride, self.stride * c, h, w))
        return y.view(n, t // self.stride, c, h, w)


class TGrow(nn.Module):
    """1x1 conv to ``stride`` * C channels, unfolded into ``stride`` consecutive frames."""

    def __init__(self, n_f: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n_f, n_f * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c, h, w = x.shape  # [N, T, C, H, W] -> [N, T * s, C, H, W]; channel block j -> frame j
        return self.conv(x.reshape(n * t, c, h, w)).view(n, t * self.stride, c, h, w)


def _apply_sequence(
    layers: nn.Sequential, x: torch.Tensor, memory: Mapping[int, torch.Tensor | None] | None = None
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Run ``layers`` on all frames of x [N, T, C, H, W] at once (TAEHV's "parallel" mode).

    ``memory`` holds, per MemBlock index, the last input frame [N, C, H, W] of the previous
    chunk (absent = zeros, the start of a stream); the memory after this chunk is returned, so
    chunked calls compute exactly what one call over the concatenation computes.
    """
    new_memory: dict[int, torch.Tensor] = {}
    for i, layer in enumerate(layers):
        n, t = x.shape[:2]
        if isinstance(layer, MemBlock):
            prev = None if memory is None else memory.get(i)
            prev = torch.zeros_like(x[:, :1]) if prev is None else prev[:, None]
            past = torch.cat([prev, x[:, :-1]], dim=1)  # [N, T, C, H, W]: frame t sees frame t-1
            new_memory[i] = x[:, -1].clone()  # a copy: a view would pin the whole chunk's activations
            y = layer(x.flatten(0, 1), past.flatten(0, 1))
            x = y.view(n, t, *y.shape[1:])
        elif isinstance(layer, (TPool, TGrow)):
            x = layer(x)
        else:  # per-frame 2D module
            y = layer(x.flatten(0, 1))
            x = y.view(n, t, *y.shape[1:])
    return x, new_memory


@dataclass(frozen=True)
class TAEHVConfig:
    """Defaults are taew2_1 (Wan 2.1 / Wan 2.2-14B / Qwen-Image latents); ``TAEHV_RELEASES`` has taew2_2.

    The official cheap-preview options (temporal or spatial upscaling switched off in the decoder)
    are left out: they break the codec contract of decoding to the encoded size and frame count.
    """

    latent_channels: int = 16
    patch_size: int = 1
    encoder_time_downscale: tuple[bool, bool, bool] = (True, True, False)
    decoder_time_upscale: tuple[bool, bool, bool] = (False, True, True)
    encoder_time_pad: str = "end"
    # which of the three encoder stages halve height and width, each mirrored by the decoder stage that undoes it
    # (encoder stage i <-> decoder stage 2 - i; the official ``decoder_space_upscale``, here applied to both sides
    # so that encode -> decode keeps the frame size):
    # all three = 8x (the releases); (True, True, False) = 4x, a decoder for the embedded world's 4x tiny-ae
    # latents (``stage=tiny_decoder``). No parameter depends on it, so the state-dict layout stays the official one.
    spatial_stages: tuple[bool, bool, bool] = (True, True, True)

    def __post_init__(self) -> None:
        if len(self.spatial_stages) != 3:
            raise ValueError(f"TAEHVConfig.spatial_stages={self.spatial_stages} must name the 3 stages (true/false)")
        if self.encoder_time_pad not in ("end", "front"):
            raise ValueError(f"TAEHVConfig.encoder_time_pad={self.encoder_time_pad!r} must be 'end' or 'front'")
        if sum(self.encoder_time_downscale) != sum(self.decoder_time_upscale):
            raise ValueError(
                f"TAEHVConfig: encoder_time_downscale={self.encoder_time_downscale} and decoder_time_upscale="
                f"{self.decoder_time_upscale} must compress and expand time equally for the 1+4k <-> 1+k codec contract"
            )


# codec name -> (config of the official release, stem of its checkpoint file). build_codec starts from
# the preset and applies the codec options on top; the sizes also name the release of a loaded file.
TAEHV_RELEASES: dict[str, tuple[TAEHVConfig, str]] = {
    "taehv-wan2.1": (TAEHVConfig(latent_channels=16, patch_size=1), "taew2_1"),
    "taehv-wan2.2": (TAEHVConfig(latent_channels=48, patch_size=2), "taew2_2"),
}


def checkpoint_sizes(state_dict: Mapping[str, torch.Tensor]) -> tuple[int, int] | None:
    """(latent channels, pixel patch) of an official-layout TAEHV state dict, None if it has no such layout.

    ``encoder.0.weight`` is [64, 3 p^2, 3, 3] (the first conv sees the unshuffled pixels) and
    ``decoder.1.weight`` is [256, C, 3, 3] (the first conv after the latent Clamp).
    """
    first, latent_in = state_dict.get("encoder.0.weight"), state_dict.get("decoder.1.weight")
    if first is None or latent_in is None or first.ndim != 4 or latent_in.ndim != 4:
        return None
    patch = round((first.shape[1] / 3) ** 0.5)
    if 3 * patch * patch != first.shape[1]:
        return None
    return int(latent_in.shape[1]), patch


@dataclass(frozen=True)
class TAEHVDecodeState:
    """Streaming state: last input frame of every decoder MemBlock, and raw frames still to drop."""

    memory: Mapping[int, torch.Tensor] = field(default_factory=dict)
    frames_to_trim: int = 0


@dataclass(frozen=True)
class TAEHVEncodeState:
    """Streaming encode state: last input frame of every encoder MemBlock, the frames [B, T < 4, C, H, W]
    (TAEHV layout) of the group not yet complete, and whether the stream has started."""

    memory: Mapping[int, torch.Tensor] = field(default_factory=dict)
    pending: torch.Tensor | None = None
    started: bool = False


def _check_release(state: Mapping[str, torch.Tensor], config: TAEHVConfig, path: str) -> None:
    """One-line ValueError when ``state`` is a known TAEHV release that ``config`` is not sized for."""
    if "decoder.0.weight" in state:  # base decoder.0 is the parameter-free Clamp; the super decoder's is a conv
        raise ValueError(
            f"codec.checkpoint={str(path)!r} holds a 'super' TAEHV decoder (e.g. taew2_2_super), which "
            "this codec does not implement; use the base release (taew2_1 / taew2_2)"
        )
    sizes = checkpoint_sizes(state)
    if sizes is None or sizes == (config.latent_channels, config.patch_size):
        return  # not an official layout, or the right sizes: the strict load reports any key mismatch
    for name, (preset, stem) in TAEHV_RELEASES.items():
        if sizes == (preset.latent_channels, preset.patch_size):
            raise ValueError(
                f"codec.checkpoint={str(path)!r} is a {stem} checkpoint ({sizes[0]} latent channels, {sizes[1]}x"
                f"{sizes[1]} pixel patch) but the codec is built for {config.latent_channels} channels, "
                f"{config.patch_size}x{config.patch_size} patch; set codec.name={name}"
            )


class TAEHV(VideoCodec):
    """TAEHV tiny VAE (11.3M parameters for Wan 2.1, 11.4M for Wan 2.2): an order of magnitude faster decode
    than the full VAE."""

    def __init__(self, config: TAEHVConfig | None = None):
        super().__init__()
        self.config = config = config or TAEHVConfig()
        self.latent_channels = config.latent_channels
        self.patch_size = config.patch_size
        self.spatial_factor = 2 ** sum(config.spatial_stages) * config.patch_size
        self.temporal_factor = 2 ** sum(config.decoder_time_upscale)
        channels_in = 3 * config.patch_size**2

        # Index-for-index the official nn.Sequential layout, so checkpoint keys match:
        # encoder 0 conv, 1 ReLU, stages at 2-6 / 7-11 / 12-16, 17 conv; decoder 0 Clamp, 1 conv,
        # 2 ReLU, stages at 3-8 / 9-14 / 15-20, 21 ReLU, 22 conv.
        def enc_stage(pool: bool, space: bool) -> list[nn.Module]:
            return [TPool(64, 2 if pool else 1), _conv(64, 64, stride=2 if space else 1, bias=False)] + [
                MemBlock(64, 64) for _ in range(3)
            ]

        def dec_stage(n_in: int, n_out: int, grow: bool, space: bool) -> list[nn.Module]:
            return [MemBlock(n_in, n_in) for _ in range(3)] + [
                nn.Upsample(scale_factor=2) if space else nn.Identity(),  # parameter-free: same indices
                TGrow(n_in, 2 if grow else 1),
                _conv(n_in, n_out, bias=False),
            ]

        e, d, s = config.encoder_time_downscale, config.decoder_time_upscale, config.spatial_stages
        self.encoder = nn.Sequential(
            _conv(channels_in, 64), nn.ReLU(),
            *enc_stage(e[0], s[0]), *enc_stage(e[1], s[1]), *enc_stage(e[2], s[2]),
            _conv(64, config.latent_channels),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            Clamp(), _conv(config.latent_channels, 256), nn.ReLU(),
            *dec_stage(256, 128, d[0], s[2]), *dec_stage(128, 64, d[1], s[1]), *dec_stage(64, 64, d[2], s[0]),
            nn.ReLU(), _conv(64, channels_in),
        )  # fmt: skip
        self.frames_to_trim = self.temporal_factor - 1

    # ------------------------------------------------------------------ checkpoints

    def patch_tgrow_layers(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Slice checkpoint TGrow weights with more output channels than ours to the last timestep's."""
        state = dict(state_dict)
        for i, layer in enumerate(self.decoder):
            key = f"decoder.{i}.conv.weight"
            if isinstance(layer, TGrow) and key in state:
                want = layer.conv.weight.shape[0]
                if state[key].shape[0] > want:
                    state[key] = state[key][-want:]
        return state

    @classmethod
    def from_checkpoint(cls, path: str, config: TAEHVConfig | None = None) -> "TAEHV":
        """Load an official ``taew2_1`` / ``taew2_2`` ``.pth`` or ``.safetensors`` strictly.

        A file of another release than ``config`` (a taew2_1 file for the 48-channel codec, ...) is
        refused in one line naming the codec that fits it, before the per-key mismatch listing.
        """
        model = cls(config)
        raw = read_state_dict_file(path)
        _check_release(raw, model.config, path)
        load_state_dict_strict(model, model.patch_tgrow_layers(raw), source=str(path))
        return model

    # ------------------------------------------------------------------ layout helpers

    def _to_taehv_frames(self, video: torch.Tensor) -> torch.Tensor:
        x = video.to(self.encoder[0].weight.dtype).add(1).mul(0.5)  # [-1, 1] -> [0, 1]
        x = x.permute(0, 2, 1, 3, 4)  # [B, 3, T, H, W] -> [B, T, 3, H, W]
        if self.patch_size > 1:
            # [B, T, 3, H, W] -> [B, T, 3 p^2, H / p, W / p], channel 4c + 2dy + dx for p = 2, as the
            # official encoder expects (it unshuffles NTCHW frames the same way)
            x = F.pixel_unshuffle(x, self.patch_size)
        return x

    def _from_taehv_frames(self, x: torch.Tensor, *, clamp: bool) -> torch.Tensor:
        if self.patch_size > 1:
            x = F.pixel_shuffle(x, self.patch_size)  # [B, T, 3 p^2, h, w] -> [B, T, 3, p h, p w], inverse order
        if clamp:
            x = x.clamp(0, 1)
        return x.mul(2).sub(1).permute(0, 2, 1, 3, 4)  # [B, T, 3, H, W] in [0, 1] -> [B, 3, T, H, W]

    # ------------------------------------------------------------------ VideoCodec

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        self.check_video(video)
        x = self._to_taehv_frames(video)  # [B, T, 3, H, W], T = 1 + 4k
        pad = self.temporal_factor - 1
        if self.config.encoder_time_pad == "end":
            x = torch.cat([x, x[:, -1:].expand(-1, pad, -1, -1, -1)], dim=1)
        else:
            x = torch.cat([x[:, :1].expand(-1, pad, -1, -1, -1), x], dim=1)
        z, _ = _apply_sequence(self.encoder, x)  # [B, 1 + k, C, h, w]
        return z.permute(0, 2, 1, 3, 4)

    def init_encode_state(self) -> TAEHVEncodeState:
        return TAEHVEncodeState()

    def encode_chunk(self, video: torch.Tensor, state: TAEHVEncodeState) -> tuple[torch.Tensor, TAEHVEncodeState]:
        self.check_encode_chunk(video, started=state.started)
        x = self._to_taehv_frames(video)  # [B, T, 3 p^2, H / p, W / p]
        if not state.started and self.config.encoder_time_pad == "front":
            x = torch.cat([x[:, :1].expand(-1, self.temporal_factor - 1, -1, -1, -1), x], dim=1)
        if state.pending is not None:
            x = torch.cat([state.pending, x], dim=1)
        whole = x.shape[1] - x.shape[1] % self.temporal_factor  # frames of complete groups
        pending = x[:, whole:].clone() if whole < x.shape[1] else None  # a copy: not a view pinning x
        if whole == 0:
            b, _, _, h, w = x.shape
            sf = self.spatial_factor // self.patch_size
            z = x.new_zeros(b, 0, self.latent_channels, h // sf, w // sf)
            return z.permute(0, 2, 1, 3, 4), TAEHVEncodeState(state.memory, pending, True)
        z, memory = _apply_sequence(self.encoder, x[:, :whole], state.memory)  # [B, G, C, h, w]
        return z.permute(0, 2, 1, 3, 4), TAEHVEncodeState(memory, pending, True)

    def decode(self, latents: torch.Tensor, *, clamp: bool = True) -> torch.Tensor:
        """``clamp=False`` keeps gradients outside [-1, 1] (for training the decoder)."""
        self.check_latents(latents)
        x, _ = _apply_sequence(self.decoder, latents.permute(0, 2, 1, 3, 4).to(self.encoder[0].weight.dtype))
        return self._from_taehv_frames(x[:, self.frames_to_trim :], clamp=clamp)

    def init_decode_state(self) -> TAEHVDecodeState:
        return TAEHVDecodeState(memory={}, frames_to_trim=self.frames_to_trim)

    def decode_chunk(
        self, latents: torch.Tensor, state: TAEHVDecodeState, *, clamp: bool = True
    ) -> tuple[torch.Tensor, TAEHVDecodeState]:
        self.check_latents(latents)
        z = latents.permute(0, 2, 1, 3, 4).to(self.encoder[0].weight.dtype)  # [B, F, C, h, w]
        x, memory = _apply_sequence(self.decoder, z, state.memory)  # [B, 4F, 3, H, W]
        drop = min(state.frames_to_trim, x.shape[1])
        frames = self._from_taehv_frames(x[:, drop:], clamp=clamp)
        return frames, TAEHVDecodeState(memory=memory, frames_to_trim=state.frames_to_trim - drop)
