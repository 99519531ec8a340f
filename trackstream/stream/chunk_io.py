"""What goes into a stream and comes out of it, chunk by chunk: track sources in, ``ChunkOutput`` out.

Used by ``stream.engine`` and every caller of the engine. Legend as in
``stream.chunks``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import torch

__all__ = ["TrackSource", "ChunkOutput", "tracks_from_array", "collect"]

# A track source is called with (chunk index, [start, stop) pixel frames) when that chunk is
# about to be generated and returns (tracks [B, T, N, 2], visibility [B, T, N]) for exactly those
# frames, or None for "no tracks" (the empty motion condition) - e.g. a user who let go.
TrackSource = Callable[[int, tuple[int, int]], Optional[tuple[torch.Tensor, torch.Tensor]]]


@dataclass
class ChunkOutput:
    index: int
    frames: torch.Tensor  # [B, 3, T_chunk, H, W] in [-1, 1]
    latents: torch.Tensor  # [B, C, f, h, w]
    pixel_range: tuple[int, int]  # [start, stop) pixel frames of the whole video
    nfe: int  # network evaluations spent on this chunk
    seconds: float  # wall time of this chunk (DiT + decode), measured in ``step``
    # with ``timings=True``: synchronised seconds of condition / dit (K passes + commit) / decode / host
    timings: Optional[dict] = None
    ready: Any = field(default=None, repr=False)  # CUDA event of the decode on the side stream (overlap_decode)
    # when the chunk's frames were done, if known when decoded (no side stream): with overlap_decode the chunk
    # is handed out after the next one is sampled, and that sampling is not this chunk's latency
    done: Optional[float] = field(default=None, repr=False)


def tracks_from_array(tracks: torch.Tensor, visibility: torch.Tensor, *, hold_last: bool = False) -> TrackSource:
    """A ``TrackSource`` over pre-recorded tracks [B, T, N, 2] / visibility [B, T, N] (offline
    motion transfer, tests, the held-out evaluation). Past the end: None (no tracks), or the last
    frame held still with ``hold_last``."""
    T = tracks.shape[1]

    def source(index: int, span: tuple[int, int]):
        lo, hi = span
        if lo >= T and not hold_last:
            return None
        idx = torch.arange(lo, hi).clamp(max=T - 1)
        return tracks.index_select(1, idx), visibility.index_select(1, idx)

    return source


def collect(chunks: Iterable[ChunkOutput]) -> tuple[torch.Tensor, torch.Tensor, list[ChunkOutput]]:
    """Concatenate streamed chunks -> (frames [B, 3, T, H, W], latents [B, C, F, h, w], outputs)."""
    outs = list(chunks)
    return torch.cat([o.frames for o in outs], 2), torch.cat([o.latents for o in outs], 2), outs
