"""One codec's encoder with another's decoder of the same latent space (MotionStream's streaming: the first frame
encoded by the Wan VAE, every chunk decoded by its tiny decoder)."""

from __future__ import annotations

from typing import Any

import torch

from .base import VideoCodec

__all__ = ["SplitCodec"]


class SplitCodec(VideoCodec):
    """Encodes with ``encoder`` (the full codec: the first frame's latent is the one the network was trained on)
    and decodes with ``decoder`` (a tiny decoder trained on that codec's latents, ``stage=tiny_decoder``), whole
    clips and streams alike."""

    def __init__(self, encoder: VideoCodec, decoder: VideoCodec):
        super().__init__()
        for attr in ("latent_channels", "spatial_factor", "temporal_factor"):
            if getattr(encoder, attr) != getattr(decoder, attr):
                raise ValueError(
                    f"--decoder does not decode the codec's latents: its {attr} is {getattr(decoder, attr)}, the "
                    f"codec's {getattr(encoder, attr)} (a decoder trained on another codec?)"
                )
        self.full, self.tiny = encoder, decoder
        self.latent_channels = encoder.latent_channels
        self.spatial_factor, self.temporal_factor = encoder.spatial_factor, encoder.temporal_factor

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return self.full.encode(video)

    def init_encode_state(self) -> Any:
        return self.full.init_encode_state()

    def encode_chunk(self, video: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return self.full.encode_chunk(video, state)

    def decode(self, latents: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.tiny.decode(latents, **kwargs)

    def init_decode_state(self) -> Any:
        return self.tiny.init_decode_state()

    def decode_chunk(self, latents: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return self.tiny.decode_chunk(latents, state)
