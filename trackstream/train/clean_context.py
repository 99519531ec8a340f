"""The clean-context walk over an encoded training clip: what teacher forcing trains the causal student through
(``train.teacher_forcing``) and causal consistency distils through (``train.consistency``). A clip's chunks are
visited in order, each seen by the network through a rolling cache that holds the clean chunks before it, as it
streams at inference. Legend: B batch, C channels, f chunk latent frames, h/w latent size, T pixel frames."""

from __future__ import annotations

from typing import Iterator, Optional

import torch

from trackstream.models.causal import KVCache
from trackstream.models.streaming import CausalConfig, first_chunk_given
from trackstream.stream.chunks import VideoCondition, chunk_condition, chunk_pixel_frames, commit_chunk

__all__ = ["encoded_clips", "clip_condition", "clean_context_chunks"]


def encoded_clips(batch: dict, conditioner, device: torch.device) -> dict:
    """A batch of training clips on ``device``, encoded by the frozen ``conditioner`` where it still holds raw
    videos and captions (``Conditioner.encode``); the latents replace the videos."""
    if conditioner is not None:
        batch = conditioner.encode(batch)
    batch = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    batch.pop("video", None)
    return batch


def clip_condition(network, batch: dict, track_ids: torch.Tensor, *, height: int, width: int) -> VideoCondition:
    """The per-video constants of an encoded training clip (``models.conditioner.Conditioner.encode``): its text
    (projected under the caller's grad mode), its frame-0 latent (a causal codec's = the first frame's alone),
    its layout channels and CLIP tokens."""
    return VideoCondition(
        context=network.project_text(batch["text_emb"], batch["text_len"]),
        image_latent=batch["latents"][:, :, :1],
        image_cond=batch.get("image"),
        track_ids=track_ids,
        height=height,
        width=width,
        image_features=batch.get("image_features"),
    )


def clean_context_chunks(
    network, cache: KVCache, cond: VideoCondition, causal: CausalConfig, motion: torch.Tensor, x0: torch.Tensor
) -> Iterator[tuple[int, KVCache, Optional[torch.Tensor], torch.Tensor]]:
    """Teacher forcing's walk over a clip: yields (chunk index, the cache holding the clean chunks before it,
    the chunk's conditioning y, its clean latents x0_i [B, C, f, h, w]) for every chunk to predict, then commits
    x0_i to the cache (a given chunk 0 is committed without being yielded). ``motion``: c_m [B, D, T, h, w]."""
    n = causal.num_chunks(x0.shape[2])
    for i in range(n):
        lo, hi = chunk_pixel_frames(causal, i)
        y = chunk_condition(network, cond, causal, i, motion[:, :, lo:hi])
        s, f = causal.chunk_start(i), causal.chunk_len(i)
        x0_i = x0[:, :, s : s + f]
        if not (i == 0 and first_chunk_given(causal)):
            yield i, cache, y, x0_i
        cache = commit_chunk(network, cache, x0_i, y)
