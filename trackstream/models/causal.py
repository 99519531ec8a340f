"""Causal (chunk-autoregressive) mode of the Wan DiT: block-causal training attention and a
functional rolling KV cache with attention sinks (MotionStream "c3s1w1").

The same ``WanModel`` serves both paths through its pluggable self-attention; nothing here
copies the architecture.

Chunks. A clip of F latent frames is split into chunks of ``chunk_frames`` (C) frames; with
``first_chunk_frames`` set, chunk 0 has that many frames instead (e.g. 1: the I2V image latent
as its own chunk, so the sink is exactly the given frame). Chunk i attends to itself
(bidirectionally), to the sink chunks j < S and to the W chunks before it:
``visible(i, j) = j <= i and (j < S or j >= i - W)``; W=None is the full causal history. A window may
instead be counted in frames (``window_frames``, FastVideo's local_attn_size less the sink and the block):
the newest window_frames non-sink frames before chunk i stay visible, the oldest held chunk in part
(``frame_visible``; the cache keeps a chunk cut to its newest frames, ``ChunkKV.last_frames``).

Cache layout (streaming, per layer). At chunk i the keys are laid out as
``[sink chunks][window chunks][current chunk]``: sink = chunks j < min(S, i), never evicted;
window = the newest min(W, i - S) non-sink chunks (appending beyond W evicts the oldest).
Keys are stored BEFORE RoPE. RoPE frame positions are the slots in that layout, contiguous from
0 (sink at 0.., then the window, then the current chunk), so positions stay bounded (below
S*C + (W+1)*C frames; 9 for c3s1w1) and there is no length limit. Height/width positions are
the token grid as usual. Once the window is full the cache holds a constant S + W chunks. This is
``rope="relativistic"`` (the default); ``rope="absolute"`` ropes every query and key at its latent frame in
the video instead (``ChunkKV.start`` keeps a cut chunk's true frames; keys are still cached un-roped).

Position rule in the training path (identical by construction). For query chunk i, the keys
of chunk j get their slot in i's cache layout. Window and current chunks are contiguous in both
layouts, so their offset to i equals the absolute offset and ordinary absolute RoPE is exact for
them; only sink keys see a different offset once eviction starts. One masked attention call
realises both: q is roped twice (absolute position, cache position) and concatenated on the head
dim, sink keys are zero-padded into the second half and all others into the first, and the
softmax scale is set to 1/sqrt(D); under absolute RoPE plain RoPE is exact for every key. Equivalence with
streaming is tested to 1e-5 in fp32.
(MotionStream stores the sink roped; the same here, as sink slots never move.) Backends:
FlexAttention (compiled on CUDA; on CPU it is unfused and forward-only) or SDPA with a boolean
[L, L] mask; "auto" picks flex on CUDA.

API::

    cfg = CausalConfig()  # c3s1w1, chunk 0 = the image latent; CausalConfig(3, 1, None) = full history
    # training (models.block_causal): one forward over a clip, per-frame timesteps t [B, F]
    v = block_causal_forward(model, cfg, x, t, context)           # [B, C, F, H, W]
    # streaming: predict a chunk (does not touch the cache), then write it explicitly
    cache = new_cache(model, cfg, context)                        # text K/V computed once
    for x_i, t_i in chunks:
        pred, kv = stream_step(model, cache, x_i, t_i)            # noisy pass(es)
        ...                                                       # denoise, get clean x0_i
        _, kv = stream_step(model, cache, x0_i, torch.zeros(B))   # clean re-run, same position
        cache = cache.append(kv)                                  # new cache; old one intact

By default ``append`` detaches the K/V, so gradients flow through the current chunk only (the
Self-Forcing memory trick); ``new_cache(..., detach=False)`` keeps the graph into the history.
Legend as in models.wan.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F

from trackstream.models.rope import apply_rope, grid_positions, rope_cos_sin
from trackstream.models.sequence_parallel import heads_to_seq, seq_to_heads
from trackstream.models.streaming import CausalConfig
from trackstream.models.wan import WanModel

if TYPE_CHECKING:  # for the annotations only: the buffered step is optional
    from trackstream.models.sequence_parallel import SequenceShard
    from trackstream.models.stream_buffers import StepBuffers


__all__ = [
    "ChunkKV",
    "KVCache",
    "roll_window",
    "StreamOutput",
    "new_cache",
    "stream_step",
    "FeatureRecorder",
    "check_temporal_patch",
]


def check_temporal_patch(model: WanModel) -> None:
    if model.patch_size[0] != 1:
        raise ValueError(f"causal mode needs a temporal patch size of 1, got patch_size={model.patch_size}")


# ----------------------------------------------------------------------------- streaming path


@dataclass(frozen=True, eq=False)  # identity semantics: fields are tensors
class ChunkKV:
    """Un-roped self-attention K/V of one chunk at every layer: layers[l] = (k, v), [B, L, N, D]."""

    index: int
    frames: int
    tokens_per_frame: int
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    start: int = 0  # latent frame of the video its first held frame is (RoPE of the absolute policy)

    def detach(self) -> "ChunkKV":
        return dataclasses.replace(self, layers=tuple((k.detach(), v.detach()) for k, v in self.layers))

    def last_frames(self, n: int) -> "ChunkKV":
        """The chunk's newest ``n`` frames (a frame window evicting its oldest ones); keeps their true
        video frames in ``start``. Tokens are frame-major, so the frames are a slice."""
        assert 0 < n <= self.frames, (n, self.frames)
        if n == self.frames:
            return self
        cut = (self.frames - n) * self.tokens_per_frame
        layers = tuple((k[:, cut:], v[:, cut:]) for k, v in self.layers)
        return dataclasses.replace(self, frames=n, layers=layers, start=self.start + self.frames - n)


@dataclass(frozen=True, eq=False)
class KVCache:
    """Immutable streaming state: sink and window chunks (un-roped K/V per layer) and the per-layer
    cross-attention K/V of the prompt. Build with ``new_cache``; ``append`` returns a new cache."""

    config: CausalConfig
    context_kv: tuple[tuple[torch.Tensor, ...], ...]
    sink: tuple[ChunkKV, ...] = ()
    window: tuple[ChunkKV, ...] = ()
    next_chunk: int = 0  # index of the chunk the next ``stream_step`` predicts
    detach: bool = True  # detach K/V on append (no gradient into the history)

    @property
    def chunks(self) -> tuple[ChunkKV, ...]:
        return self.sink + self.window  # cache layout order

    @property
    def frames(self) -> int:
        """Cached frames = RoPE frame position of the next chunk (bounded when W is finite)."""
        return sum(c.frames for c in self.chunks)

    @property
    def batch_size(self) -> int:
        return self.context_kv[0][0].shape[0]

    def nbytes(self) -> int:
        """Bytes held by the self-attention K/V (the part that grows without a window)."""
        return sum(k.nbytes + v.nbytes for c in self.chunks for k, v in c.layers)

    def append(self, kv: ChunkKV) -> "KVCache":
        """Write chunk ``kv`` (from ``stream_step`` on this cache) and roll: a new cache."""
        if kv.index != self.next_chunk:
            raise ValueError(
                f"chunk {kv.index} appended to a cache expecting chunk {self.next_chunk}: "
                "append the K/V of a stream_step run on this cache, in order"
            )
        if len(kv.layers) != len(self.context_kv):
            raise ValueError(f"chunk K/V has {len(kv.layers)} layers; the cache has {len(self.context_kv)}")
        if self.chunks and kv.tokens_per_frame != self.chunks[0].tokens_per_frame:
            raise ValueError(
                f"chunk has {kv.tokens_per_frame} tokens per frame; the cache holds {self.chunks[0].tokens_per_frame}"
            )
        assert kv.frames == self.config.chunk_len(kv.index), "ChunkKV frames disagree with the config"
        assert kv.start == self.config.chunk_start(kv.index), "ChunkKV start disagrees with the config"
        if self.detach:
            kv = kv.detach()
        if kv.index < self.config.sink_chunks:
            return dataclasses.replace(self, sink=self.sink + (kv,), next_chunk=kv.index + 1)
        window = roll_window(self.config, self.window + (kv,))
        return dataclasses.replace(self, window=window, next_chunk=kv.index + 1)


def roll_window(config: CausalConfig, window: tuple[ChunkKV, ...]) -> tuple[ChunkKV, ...]:
    """Non-sink chunks in order -> those the cache keeps: the newest ``window_chunks`` chunks, or the newest
    ``window_frames`` frames (the oldest kept chunk cut to its newest frames), or all (no window)."""
    if config.window_frames is not None:
        kept, room = [], config.window_frames
        for c in reversed(window):
            if room <= 0:
                break
            kept.append(c.last_frames(min(room, c.frames)))
            room -= kept[-1].frames
        return tuple(reversed(kept))
    w = config.window_chunks
    if w is not None:
        window = window[len(window) - w :] if w > 0 else ()  # evict the oldest
    return window


class StreamOutput(NamedTuple):
    pred: torch.Tensor | None  # [B, out_dim, F_chunk, H, W] float32 (None for a features-only pass)
    kv: ChunkKV | None  # this pass's K/V, to ``cache.append`` if this is the pass to keep


def new_cache(
    model: WanModel,
    config: CausalConfig,
    context: torch.Tensor,
    clip_fea: torch.Tensor | None = None,
    *,
    context_lens: torch.Tensor | None = None,
    detach: bool = True,
) -> KVCache:
    """Empty cache for one prompt; cross-attention K/V are computed here, once.

    Built under the caller's grad mode: with grad, every chunk's loss shares this subgraph
    (backward once over the rollout, or rebuild the cache per backward).
    """
    check_temporal_patch(model)
    ctx, n_img = model.embed_context(context, clip_fea, context_lens)
    return KVCache(config, tuple(tuple(kv) for kv in model.context_kv(ctx, n_img)), detach=detach)


class FeatureRecorder:
    """Records the self-attention output (before the output projection, [B, L_cur, N, D]) of chosen
    blocks during one streaming step, and optionally variants of it: for each named transform of
    those blocks' window keys (with RoPE) and values ([B, L_all, N, D]), the attention of the same
    queries over the transformed K/V, recorded only (the pass itself continues with the plain output)
    — the extension point DragStream's features and its frequency-filtered context use. Nothing is
    copied into the cache: the step's prediction and K/V are unchanged."""

    def __init__(self, layers, variants: dict | None = None):
        self.layers = frozenset(int(i) for i in layers)
        self.variants = dict(variants or {})  # name -> (layer, k_all, v_all) -> (k_all, v_all)
        self.features: dict[int, torch.Tensor] = {}
        self.variant_features: dict[tuple, torch.Tensor] = {}  # (name, layer) -> [B, L_cur, N, D]


class _CachedAttention:
    """``SelfAttentionFn`` of one streaming step: [cache][current] keys, RoPE by slot, no mask.
    Records the current chunk's un-roped (k, v) per layer (and features for a ``FeatureRecorder``)."""

    def __init__(
        self,
        cache: KVCache,
        grid: tuple[int, int, int],
        head_dim: int,
        device,
        recorder: FeatureRecorder | None = None,
        shard: "SequenceShard | None" = None,
    ):
        f, h, w = grid
        self.chunks, self.cur_tokens = cache.chunks, f * h * w
        cfg = cache.config
        if shard is None and cfg.rope == "relativistic":
            pos = grid_positions((cache.frames + f, h, w), device=device)  # [L_cache + L_cur, 3]
        else:  # per chunk: at its slot or its video frame; under SP in the all-to-all's rank-major order
            absolute = cfg.rope == "absolute"
            spans = [(c.frames, c.start) for c in self.chunks] + [(f, cfg.chunk_start(cache.next_chunk))]
            parts, slot = [], 0
            for n, frame in spans:
                p = grid_positions((n, h, w), frame if absolute else slot, device=device)
                parts.append(p if shard is None else p[shard.order((n, h, w), device=device)])
                slot += n
            pos = torch.cat(parts)
        self.cos, self.sin = rope_cos_sin(pos, head_dim)
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.recorder, self.group = recorder, (shard.group if shard is not None else None)

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.group is not None:  # the chunk's slice [B, L_cur/K, N, D] -> [B, L_cur, N/K, D]: cached this way
            q, k, v = (seq_to_heads(a, self.group) for a in (q, k, v))
        self.kv[layer] = (k, v)  # a checkpoint recompute overwrites it with equal tensors: harmless
        ks = [c.layers[layer][0] for c in self.chunks] + [k]
        vs = [c.layers[layer][1] for c in self.chunks] + [v]
        k_all = apply_rope(torch.cat(ks, dim=1), self.cos, self.sin).to(v.dtype)  # [B, L_all, N, D]
        v_all = torch.cat(vs, dim=1)
        rec = self.recorder if self.recorder is not None and layer in self.recorder.layers else None
        n = self.cur_tokens
        q = apply_rope(q, self.cos[-n:], self.sin[-n:]).to(v.dtype).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k_all.transpose(1, 2), v_all.transpose(1, 2))
        out = out.transpose(1, 2)  # [B, L_cur, N, D]
        if rec is not None:
            rec.features[layer] = out
            for name, transform in rec.variants.items():
                kt, vt = transform(layer, k_all, v_all)
                rec.variant_features[(name, layer)] = F.scaled_dot_product_attention(
                    q, kt.transpose(1, 2), vt.transpose(1, 2)
                ).transpose(1, 2)
        return out if self.group is None else heads_to_seq(out, self.group)  # [B, L_cur/K, N, D]


def stream_step(
    model: WanModel,
    cache: KVCache,
    x: torch.Tensor,
    t: torch.Tensor,
    *,
    y: torch.Tensor | None = None,
    recorder: FeatureRecorder | None = None,
    until: int | None = None,
    buffers: "StepBuffers | None" = None,
) -> StreamOutput:
    """Predict chunk ``cache.next_chunk`` given the cache; the cache is not modified.

    x: [B, C_noise, F_chunk, H, W]; t: [B] or [B, F_chunk]; y: this chunk's conditioning
    channels (i2v). Returns the prediction and this pass's ChunkKV (for ``cache.append``).
    ``recorder``: fills ``recorder.features[layer]`` for its layers (see ``FeatureRecorder``).
    ``until``: run the blocks up to that one only and return no prediction and no K/V (a pass that
    only needs the recorder's features, e.g. DragStream's latent-constancy iterations).
    ``buffers``: a ``models.stream_buffers.StepBuffers`` of this stream: the same step over static
    in-place K/V buffers, RoPE once per key (inference only; equal to this reference path).
    """
    cfg, i = cache.config, cache.next_chunk
    B, nf = x.shape[0], x.shape[2]
    if nf != cfg.chunk_len(i):
        raise ValueError(f"chunk {i} of {cfg.name} has {cfg.chunk_len(i)} latent frames; x has {nf}")
    if B != cache.batch_size:
        raise ValueError(f"x has batch {B}; the cache was built for batch {cache.batch_size}")
    if len(cache.context_kv) != model.num_layers:
        raise ValueError(f"cache has {len(cache.context_kv)} layers; the model has {model.num_layers}")
    tokens, grid = model.patchify(x, y)  # [B, L, dim]
    tpf = grid[1] * grid[2]
    if cache.chunks and cache.chunks[0].tokens_per_frame != tpf:
        raise ValueError(f"x has {tpf} tokens per frame; the cached chunks have {cache.chunks[0].tokens_per_frame}")
    e, e0 = model.time_embed(t, B, nf)
    shard = model.sequence_shard
    if shard is not None:  # this rank's token slice; the K/V it caches are its N/K heads of the whole chunk
        if cfg.window_frames is not None:
            raise ValueError(
                f"causal.window_frames={cfg.window_frames} streams with sequence_parallel=1 only: a chunk's K/V are "
                "cached in the all-to-all's token order, so a frame window cannot cut them; use window_chunks"
            )
        if buffers is not None or recorder is not None or until is not None:
            raise ValueError(
                "parallel.sequence_parallel > 1 streams for training only: the buffered step, feature recorder "
                "and partial passes (inference, DragStream) run with sequence_parallel=1"
            )
        shard.check(model.num_heads, grid)
        tokens, tpf_here = shard.split(tokens, grid), tpf // shard.size  # [B, L/K, dim]
    else:
        tpf_here = tpf
    if buffers is not None:
        head, layers = buffers.run(model, cache, tokens, grid, e0, e, recorder=recorder, last=until)
        if until is not None:
            return StreamOutput(None, None)
    else:
        attn = _CachedAttention(cache, grid, model.head_dim, tokens.device, recorder, shard)
        tokens = model.run_blocks(tokens, e0, cache.context_kv, attn, tpf_here, last=until)
        if until is not None:
            return StreamOutput(None, None)
        head = model.head(tokens, e, tpf_here)
        if shard is not None:
            head = shard.gather(head, grid)  # [B, L, ...] on every rank of the group
        layers = tuple(attn.kv[layer] for layer in range(model.num_layers))
    pred = model.unpatchify(head, grid)
    return StreamOutput(
        pred, ChunkKV(index=i, frames=nf, tokens_per_frame=tpf, layers=layers, start=cfg.chunk_start(i))
    )
