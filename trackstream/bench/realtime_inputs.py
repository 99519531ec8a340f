"""What the realtime benchmark feeds a stream: live track points produced on the host chunk by chunk, and a
request's first frame, prompt encoding and CLIP tokens as random tensors of their real shapes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch

from trackstream.bench.realtime_setups import Setup
from trackstream.models.tracks import DEFAULT_ID_RANGE, sample_track_ids
from trackstream.models.wan import CLIP_DIM, CLIP_TOKENS

__all__ = ["LiveTracks", "Inputs", "make_inputs", "TimedSource"]


class LiveTracks:
    """A ``stream.chunk_io.TrackSource``: ``n`` points drifting with a slow wobble, reflected at the frame's
    edges, computed on the host for each chunk's pixel frames as they are asked for (as a user's drag or a
    live tracker delivers them)."""

    def __init__(self, n: int, *, height: int, width: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.size = torch.tensor([width - 1.0, height - 1.0])
        self.start = torch.rand(n, 2, generator=g) * self.size  # [N, 2] pixel (x, y)
        self.velocity = (torch.rand(n, 2, generator=g) - 0.5) * 4.0  # pixels per frame
        self.wobble = torch.rand(n, 2, generator=g) * 3.0
        self.phase = torch.rand(n, 2, generator=g) * 6.283
        self.n = n

    def __call__(self, index: int, span: tuple[int, int]):
        lo, hi = span
        t = torch.arange(lo, hi, dtype=torch.float32)[:, None, None]  # [T, 1, 1]
        xy = self.start + self.velocity * t + self.wobble * torch.sin(0.2 * t + self.phase)  # [T, N, 2]
        xy = self.size - (xy.remainder(2 * self.size) - self.size).abs()  # reflect into [0, size]
        return xy[None], torch.ones(1, hi - lo, self.n, dtype=torch.bool)  # [1, T, N, 2], [1, T, N]


@dataclass
class Inputs:
    image: torch.Tensor  # [1, 3, H, W] in [-1, 1]
    text: torch.Tensor  # [1, L, text_dim]: the frozen text encoder's output (random)
    lengths: torch.Tensor  # [1]
    features: Optional[torch.Tensor]  # [1, 257, 1280] CLIP tokens for DiTs with the image branch
    track_ids: torch.Tensor  # [1, N]


def make_inputs(net, setup: Setup, *, tracks: int, seed: int) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    L = net.dit.text_len
    id_range = net.track_encoder.id_range if net.track_encoder is not None else DEFAULT_ID_RANGE  # its ID convention
    return Inputs(
        image=torch.rand(1, 3, setup.height, setup.width, generator=g) * 2 - 1,
        text=torch.randn(1, L, setup.text_dim, generator=g),
        lengths=torch.tensor([L]),
        features=torch.randn(1, CLIP_TOKENS, CLIP_DIM, generator=g) if net.needs_image_features else None,
        track_ids=sample_track_ids(1, tracks, id_range=id_range, generator=g),
    )


class TimedSource:
    """A track source that adds up the host seconds spent in it (the engine's chunk time starts after it)."""

    def __init__(self, source):
        self.source, self.seconds = source, 0.0

    def __call__(self, index: int, span: tuple[int, int]):
        t0 = time.perf_counter()
        got = self.source(index, span)
        self.seconds += time.perf_counter() - t0
        return got
