"""The one interface every video codec (VAE) in TrackStream implements.

Frame convention (shared by all codecs, the Wan 2.1 one): a video of T = 1 + 4k pixel frames
maps to 1 + k latent frames. Latent 0 stands for pixel frame 0 alone, latent t >= 1 for pixel
frames 4t-3 .. 4t. Decoding n latents therefore gives 1 + 4(n - 1) frames, and in streaming the
first chunk of n latents yields 1 + 4(n - 1) frames while every later chunk of n latents yields
4n frames, so concatenated chunks line up frame for frame with a full decode.

Tensors: pixels are [B, 3, T, H, W] in [-1, 1]; latents are [B, C, F, H/s, W/s] (s = ``spatial_factor``,
8 for most codecs, 16 for the Wan 2.2 VAE) and are the
*normalised* latents (what the DiT and flow matching work on), i.e. any per-channel mean/std
is applied inside the codec.

Streaming decode is functional: ``decode_chunk(latents, state) -> (frames, new_state)`` never
mutates ``state``, so an engine may keep, replay or branch a state (e.g. DragStream re-decoding
from an earlier point). Streaming encode is its mirror, ``encode_chunk(frames, state) -> (latents,
new_state)``, also functional: the first chunk has 1 + 4k frames, every later one 4k. A causal
encoder (the Wan VAEs, the tiny AE, TAEHV padded in front) returns 1 + k, then k latents, and the
chunks concatenate to ``encode`` of the whole clip for ANY clip length; that is how the I2V
channels of an unbounded stream are built (``models.first_frame_stream``).

Legend: B batch, C channels, T pixel frames, F latent frames, H/W height/width.
"""

from __future__ import annotations

import abc
from typing import Any, Mapping

import torch
import torch.nn as nn

__all__ = ["VideoCodec", "load_state_dict_strict", "read_state_dict_file"]


class VideoCodec(nn.Module, metaclass=abc.ABCMeta):
    """Abstract video codec: pixels in [-1, 1] <-> normalised latents, plus streaming decode."""

    latent_channels: int
    spatial_factor: int = 8
    temporal_factor: int = 4

    # ------------------------------------------------------------------ frame arithmetic

    def num_latent_frames(self, num_frames: int) -> int:
        """Pixel frames T = 1 + 4k -> latent frames 1 + k."""
        if num_frames < 1 or (num_frames - 1) % self.temporal_factor:
            raise ValueError(
                f"num_frames={num_frames} must be 1 + {self.temporal_factor}k (e.g. 1, 5, 9, ..., 81); "
                f"trim or pad the clip to such a length"
            )
        return 1 + (num_frames - 1) // self.temporal_factor

    def num_pixel_frames(self, num_latents: int, *, first_chunk: bool = True) -> int:
        """Frames produced by ``num_latents`` latents (at the start of a stream or later)."""
        if num_latents < 1:
            raise ValueError(f"num_latents={num_latents} must be >= 1")
        if first_chunk:
            return 1 + self.temporal_factor * (num_latents - 1)
        return self.temporal_factor * num_latents

    def check_video(self, video: torch.Tensor) -> None:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be [B, 3, T, H, W], got shape {tuple(video.shape)}")
        self.num_latent_frames(video.shape[2])
        h, w = video.shape[-2:]
        if h % self.spatial_factor or w % self.spatial_factor:
            raise ValueError(
                f"video height/width {h}x{w} must be multiples of the codec's spatial factor "
                f"{self.spatial_factor}; resize or crop the clip"
            )

    def check_encode_chunk(self, video: torch.Tensor, *, started: bool) -> None:
        """A streaming-encode chunk: 1 + 4k frames at the start of a stream, 4k (k >= 1) after."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be [B, 3, T, H, W], got shape {tuple(video.shape)}")
        t, tf = video.shape[2], self.temporal_factor
        if started and (t < tf or t % tf):
            raise ValueError(f"a later streaming-encode chunk has {tf}k frames (k >= 1), got {t}")
        if not started:
            self.num_latent_frames(t)
        h, w = video.shape[-2:]
        if h % self.spatial_factor or w % self.spatial_factor:
            raise ValueError(
                f"video height/width {h}x{w} must be multiples of the codec's spatial factor {self.spatial_factor}"
            )

    def check_latents(self, latents: torch.Tensor) -> None:
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must be [B, {self.latent_channels}, F, h, w], got shape {tuple(latents.shape)}")
        if latents.shape[2] < 1:
            raise ValueError("latents must have at least one latent frame (F >= 1)")

    # ------------------------------------------------------------------ the interface

    @abc.abstractmethod
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, 1+4k, H, W] in [-1, 1] -> normalised latents [B, C, 1+k, H/s, W/s], s = spatial_factor."""

    @abc.abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, C, F, h, w] -> video [B, 3, 1+4(F-1), 8h, 8w] in [-1, 1]."""

    @abc.abstractmethod
    def init_decode_state(self) -> Any:
        """State for the start of a stream (nothing decoded yet)."""

    @abc.abstractmethod
    def decode_chunk(self, latents: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Decode the next latents of a stream: returns (frames [B, 3, T_chunk, H, W], new state)."""

    def init_encode_state(self) -> Any:
        """State for the start of a streaming encode (nothing encoded yet); codecs whose encoder streams
        override it and ``encode_chunk``."""
        raise NotImplementedError(f"{type(self).__name__} has no streaming encoder")

    def encode_chunk(self, video: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Encode the next frames of a stream: returns (the latents they complete [B, C, F_chunk, h, w], new state)."""
        raise NotImplementedError(f"{type(self).__name__} has no streaming encoder")

    def encode_streaming(self, video: torch.Tensor, chunk_latents: list[int]) -> torch.Tensor:
        """Encode ``video`` chunk by chunk (``chunk_latents`` latents per chunk, summing to the clip's) and
        concatenate: for tests and tools. A causal encoder gives ``encode(video)``."""
        F = self.num_latent_frames(video.shape[2])
        if sum(chunk_latents) != F or min(chunk_latents) < 1:
            raise ValueError(f"chunk_latents={chunk_latents} must be positive and sum to the clip's {F} latents")
        state, out, lo, done = self.init_encode_state(), [], 0, 0
        for n in chunk_latents:
            done += n
            hi = 1 + self.temporal_factor * (done - 1)  # latent done - 1 ends at pixel frame 4 (done - 1)
            z, state = self.encode_chunk(video[:, :, lo:hi], state)
            out.append(z)
            lo = hi
        return torch.cat(out, dim=2)

    def decode_streaming(self, latents: torch.Tensor, chunk_sizes: list[int]) -> torch.Tensor:
        """Decode ``latents`` chunk by chunk (sizes must sum to F) and concatenate: for tests and tools."""
        if sum(chunk_sizes) != latents.shape[2] or min(chunk_sizes) < 1:
            raise ValueError(
                f"chunk_sizes={chunk_sizes} must be positive and sum to the {latents.shape[2]} latent frames"
            )
        state = self.init_decode_state()
        frames, start = [], 0
        for n in chunk_sizes:
            out, state = self.decode_chunk(latents[:, :, start : start + n], state)
            frames.append(out)
            start += n
        return torch.cat(frames, dim=2)


# ---------------------------------------------------------------------- checkpoint helpers


def read_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or torch ``.pth``/``.pt``/``.bin`` file (CPU, weights only).

    A torch file holding ``{"state_dict": {...}}`` is unwrapped, as some re-saves do that.
    """
    from trackstream.models.formats.files import read_safetensors, read_torch_file

    fix = "download the codec checkpoint again (the release it came from)"
    if str(path).endswith(".safetensors"):
        return read_safetensors(path, fix=fix)
    obj = read_torch_file(path, fix=fix)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict (mapping of name -> tensor), got {type(obj).__name__}")
    return dict(obj)


def _listing(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def load_state_dict_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str, assign: bool = False
) -> None:
    """``module.load_state_dict(strict=True)`` with one readable error for every kind of mismatch.

    torch's own error stops at the first shape mismatch and is hard to read for 100+ keys; this
    lists missing, unexpected and mis-shaped keys together and names the source file. ``assign``
    is for modules built on the meta device (the tensors of ``state_dict`` become the parameters).
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mis_shaped = sorted(
        f"{k} (checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)})"
        for k in set(own) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or mis_shaped:
        parts = []  # one line (a CLI prints it as its error), each kind of mismatch a part
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if mis_shaped:
            parts.append(f"shape mismatches ({len(mis_shaped)}): {_listing(mis_shaped)}")
        parts.append("check that the file is for this codec (codec.name / --codec-name) and the config matches it")
        raise ValueError(f"checkpoint {source} does not match {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=True, assign=assign)
