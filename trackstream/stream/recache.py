"""KV re-cache: the rolling cache's chunks re-committed under another prompt (LongLive's prompt switch).

A cached chunk's K/V depend on the prompt: every block's cross-attention reads the text before the
self-attention of the next block computes K/V. Switching the prompt only for the chunks still to come
would leave the cache saying the old prompt, and every later chunk attends to it. The re-cache re-runs
the commit (the t = 0 pass of ``stream.chunks.commit_chunk``) of every chunk the cache holds, in cache
order, with the new prompt's cross-attention K/V:

* a sink chunk against the sink chunks before it (re-cached), as it was first committed;
* a window chunk against the sink and the W window chunks before it: those still held are the
  re-cached ones, those already evicted are the K/V they were committed against (``evicted``, kept
  by the engine for this). Re-caching under the SAME prompt then reproduces the cache exactly. With a window
  counted in frames the evicted context is each chunk as it entered the cache (its newest frames), a held
  chunk cut by the window is re-committed whole and cut again to what the cache held of it.

Sink policy (``sink=``): ``"recache"`` re-commits the sink chunks too, so the whole cache speaks the new
prompt and nothing of the old one is left for later chunks to attend to: the choice for a new scene or
subject, or when what the old prompt described should go away. ``"keep"`` leaves the sink's K/V as first
committed: the anchor every later chunk attends to stays exactly as it was, which favours continuity of
the first frame's subject and scene across the switch (the same subject doing something new), and costs
S passes fewer. LongLive offers both (its ``global_sink`` setting); the window is re-cached either way.

What is kept per held chunk is ``HeldChunk`` (its clean latent and its conditioning y), and the evicted
context is at most W chunks of K/V: both bounded by the cache, never growing with the stream.
Legend as in ``stream.chunks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from trackstream.models.causal import ChunkKV, KVCache, roll_window
from trackstream.models.stream_buffers import StepBuffers
from trackstream.stream.chunks import commit_chunk

__all__ = ["HeldChunk", "SINK_POLICIES", "roll_held", "recache"]

SINK_POLICIES = ("recache", "keep")


@dataclass(frozen=True, eq=False)
class HeldChunk:
    """What a re-cache needs of one cached chunk: the inputs of its commit pass."""

    index: int
    x0: torch.Tensor  # [B, C, f, h, w] its clean latent
    y: Optional[torch.Tensor]  # [B, C_y, f, h, w] its conditioning channels (None: t2v without tracks)


def roll_held(
    before: KVCache,
    after: KVCache,
    held: tuple[HeldChunk, ...],
    evicted: tuple[ChunkKV, ...],
    chunk: HeldChunk,
    *,
    keep_evicted: bool,
) -> tuple[tuple[HeldChunk, ...], tuple[ChunkKV, ...]]:
    """(held, evicted) after ``chunk`` was committed onto ``before`` giving ``after``: the held chunks are
    those ``after`` holds; the window chunks ``after`` dropped join ``evicted``, which keeps the last W
    (``keep_evicted``; else it stays empty and a re-cache treats the window as following the sink)."""
    kept = {c.index for c in after.chunks}
    held = tuple(h for h in held + (chunk,) if h.index in kept)
    assert [h.index for h in held] == sorted(kept), "the held chunks must mirror the cache"
    cfg = after.config
    if cfg.window_frames is not None:
        return held, _roll_cut(before, after, evicted) if keep_evicted else ()
    w = after.config.window_chunks
    if not keep_evicted or not w:  # no window, or the whole history kept (None): nothing is ever evicted
        return held, ()
    gone = tuple(c for c in before.window if c.index not in kept)
    return held, (evicted + gone)[-w:]


def _roll_cut(before: KVCache, after: KVCache, evicted: tuple[ChunkKV, ...]) -> tuple[ChunkKV, ...]:
    """A frame window's evicted context: each window chunk as it entered the cache (its newest frames that
    the next chunk was committed against, the most any later chunk saw of it), stored when the window first
    cuts or drops it; kept while some held chunk's commit window reaches into it."""
    cfg, now = after.config, {c.index: c for c in after.window}
    seen = {c.index for c in evicted}
    cut = tuple(c for c in before.window if now.get(c.index) is not c and c.index not in seen)
    first = after.window[0].index if after.window else after.next_chunk  # the oldest held non-sink chunk
    reach = cfg.chunk_start(first) - cfg.window_frames
    return tuple(c for c in evicted + cut if cfg.chunk_start(c.index) + cfg.chunk_len(c.index) > reach)


@torch.no_grad()
def recache(
    network,
    cache: KVCache,
    context_kv: tuple,
    held: tuple[HeldChunk, ...],
    evicted: tuple[ChunkKV, ...],
    *,
    sink: str = "recache",
    buffers: Optional[StepBuffers] = None,
) -> tuple[KVCache, int]:
    """``cache`` with its chunks re-committed under the cross-attention K/V ``context_kv`` (of
    ``models.causal.new_cache`` for the new prompt) -> (new cache, passes run). ``sink="keep"`` leaves the
    sink chunks' K/V as they were (no pass for them); the window is re-cached either way."""
    if sink not in SINK_POLICIES:
        raise ValueError(f"sink={sink!r}: choose one of {SINK_POLICIES}")
    if [h.index for h in held] != [c.index for c in cache.chunks]:
        raise ValueError(
            f"the state holds the inputs of chunks {[h.index for h in held]} but its cache holds "
            f"{[c.index for c in cache.chunks]}: re-cache a state the engine built (start / step / finish)"
        )
    cfg, w = cache.config, cache.config.window_chunks
    new_sink: list[ChunkKV] = []
    new_window: list[ChunkKV] = []
    passes = 0
    for h, old in zip(held, cache.chunks):
        is_sink = h.index < cfg.sink_chunks
        if is_sink and sink == "keep":
            new_sink.append(old)
            continue
        if is_sink:
            window: tuple[ChunkKV, ...] = ()
        elif cfg.window_frames is not None:  # the newest window_frames frames before it, as committed then
            first = cache.window[0].index  # evicted copies of held chunks give way to their re-cached ones
            pool = tuple(c for c in evicted if c.index < first) + tuple(new_window)
            window = roll_window(cfg, tuple(c for c in pool if c.index < h.index))
        else:  # the window this chunk was committed against: evicted K/V, then the chunks re-cached so far
            lo = cfg.sink_chunks if w is None else h.index - w
            window = tuple(c for c in evicted + tuple(new_window) if lo <= c.index < h.index)
        before = KVCache(cfg, context_kv, sink=tuple(new_sink), window=window, next_chunk=h.index, detach=cache.detach)
        after = commit_chunk(network, before, h.x0, h.y, buffers=buffers)
        passes += 1
        (new_sink if is_sink else new_window).append(after.chunks[-1])
    if cfg.window_frames is not None:  # each held chunk as much as the cache held of it
        old_window = cache.window
        new_window = [c.last_frames(o.frames) for c, o in zip(new_window, old_window)]
    out = KVCache(
        cfg,
        context_kv,
        sink=tuple(new_sink),
        window=tuple(new_window),
        next_chunk=cache.next_chunk,
        detach=cache.detach,
    )
    return out, passes
