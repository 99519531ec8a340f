"""The streaming step built for speed: static K/V buffers written in place, RoPE once per key.

``models.causal.stream_step`` is the reference: every pass concatenates the cached chunks' un-roped
keys with the current chunk's and re-applies RoPE to the whole cache, in every layer, for each of the
K + 1 passes of a chunk. With ``StepBuffers`` the same step instead reads one preallocated buffer per
layer, laid out like the cache::

    k[l], v[l]: [B, L_max, N, D] in the compute dtype
    [ sink chunks | window chunks | current chunk | (unused tail) ]
      <------- prefix: roped once per chunk ------> written in place by every pass

* The prefix is the cache's chunks, each roped at its slot (``load``; under ``rope="absolute"`` at its
  video frames): a slot that already holds the
  same chunk object is not rewritten, so the sink is roped once per stream and each window chunk once
  per chunk it spends in the window (c3s1w1: 3 frames a chunk, shared by the K + 1 passes).
* Each pass ropes only the current chunk (tables cached per layout), writes its K/V into the slot
  after the prefix in place and attends over ``[:, :prefix + current]``: no concatenation, no
  allocation that grows with the cache.
* The cache (``KVCache``, un-roped K/V per chunk) stays the immutable source of truth; the buffers are
  scratch derived from it, so a caller may still keep, replay or branch states: ``load`` compares the
  chunk objects and rewrites what differs.
* There are as many static shapes as chunk layouts (warm-up chunks, then the steady state: 3 for
  c3s1w1), so the whole pass compiles (``compiled=True``: ``torch.compile`` of the pass; on CUDA with
  CUDA graphs, the buffers marked static so the in-place writes are replayed, not copied). Inductor
  fuses the float32 norm / modulation / gate / RoPE chains into single kernels; their arithmetic stays
  float32, as the official model computes it.

The keys are stored in the compute dtype after RoPE, exactly as the reference casts them before its
attention, so a buffered pass equals the reference pass up to the attention kernel's reduction order.
Inference only (no gradient flows through in-place buffers). Legend as in ``models.wan``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from trackstream.models.fp8 import compute_dtype
from trackstream.models.rope import apply_rope, grid_positions, rope_cos_sin
from trackstream.models.wan import WanModel

__all__ = ["StepBuffers", "max_layout_frames"]


def max_layout_frames(config) -> int:
    """Most latent frames one pass attends over (cache + current chunk), over every chunk layout."""
    if not config.bounded:
        raise ValueError(
            f"{config.name}: static step buffers need a finite window (window_chunks or window_frames); the full "
            "causal history grows without bound: use the reference step (fast=False)"
        )
    # from this chunk on the layout repeats (a window of W frames spans at most W chunks)
    w = config.window_chunks if config.window_chunks is not None else config.window_frames
    steady = config.sink_chunks + w + 1
    return max(config.cache_start(i) + config.chunk_len(i) for i in range(steady + 1))


class _BufferedAttention:
    """``SelfAttentionFn`` of one buffered pass: rope the current chunk, write its K/V after the prefix,
    attend over prefix + current. Records the un-roped (k, v) per layer for the cache append."""

    def __init__(self, buffers: "StepBuffers", prefix: int, cos: torch.Tensor, sin: torch.Tensor, recorder=None):
        self.buffers, self.prefix, self.cos, self.sin = buffers, prefix, cos, sin
        self.recorder = recorder
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.kv[layer] = (k, v)
        kb, vb = self.buffers.k[layer], self.buffers.v[layer]
        lo, n = self.prefix, k.shape[1]
        kb[:, lo : lo + n].copy_(apply_rope(k, self.cos, self.sin))  # in place: the cast to kb's dtype included
        vb[:, lo : lo + n].copy_(v)
        k_all, v_all = kb[:, : lo + n], vb[:, : lo + n]  # [B, L_all, N, D] views, no copy
        q = apply_rope(q, self.cos, self.sin).to(vb.dtype).transpose(1, 2)  # [B, N, L_cur, D]
        out = F.scaled_dot_product_attention(q, k_all.transpose(1, 2), v_all.transpose(1, 2)).transpose(1, 2)
        rec = self.recorder
        if rec is not None and layer in rec.layers:
            rec.features[layer] = out
            for name, transform in rec.variants.items():
                kt, vt = transform(layer, k_all, v_all)
                rec.variant_features[(name, layer)] = F.scaled_dot_product_attention(
                    q, kt.transpose(1, 2), vt.transpose(1, 2)
                ).transpose(1, 2)
        return out  # [B, L_cur, N, D]


def _pass(model: WanModel, tokens, e0, e, context_kv, attn, tpf: int, last: Optional[int]):
    """The blocks and the head of one pass (the part ``torch.compile`` sees): tokens [B, L, dim] ->
    head output [B, L, prod(patch) * out_dim] and the un-roped K/V of every layer."""
    x = model.run_blocks(tokens, e0, context_kv, attn, tpf, last=last)
    if last is not None:
        return None, ()
    kv = tuple(attn.kv[i] for i in range(model.num_layers))
    return model.head(x, e, tpf), kv


class StepBuffers:
    """Preallocated per-layer K/V of one stream (see the module docstring). Built lazily at the first
    pass: batch size, token grid, device and dtype come from the model and the chunk.

    ``compiled``: run the pass through ``torch.compile`` (CUDA graphs on CUDA); one compilation per
    chunk layout. ``stream_step(..., buffers=...)`` is the only caller."""

    def __init__(self, model: WanModel, config, *, compiled: bool = False):
        self.config, self.frames = config, max_layout_frames(config)
        self.num_layers, self.heads, self.head_dim = model.num_layers, model.num_heads, model.head_dim
        self.compiled = bool(compiled)
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.key: Optional[tuple] = None  # (batch, tokens per frame, dtype, device) the buffers were made for
        self.slots: list[tuple[object, int]] = []  # (chunk K/V object, token offset) written into the prefix
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._fn = None
        self.loads = 0  # prefix slots written (roped) so far: tests check the sink is roped once

    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.k + self.v)

    def _ensure(self, batch: int, tpf: int, dtype: torch.dtype, device: torch.device) -> None:
        key = (batch, tpf, dtype, device)
        if key == self.key:
            return
        shape = (batch, self.frames * tpf, self.heads, self.head_dim)  # [B, L_max, N, D]
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(self.num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(self.num_layers)]
        if self.compiled and device.type == "cuda":  # fixed addresses: CUDA graphs replay the in-place writes
            for t in self.k + self.v:
                torch._dynamo.mark_static_address(t)
        self.key, self.slots, self._tables = key, [], {}

    def _rope(self, frame: int, grid: tuple[int, int, int], device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [f*h*w, D/2] of a chunk whose first frame sits at ``frame`` (cached: few layouts)."""
        key = (frame, *grid)
        if key not in self._tables:
            if len(self._tables) >= 64:  # absolute RoPE meets a new frame every chunk: keep the dict bounded
                self._tables.clear()
            self._tables[key] = rope_cos_sin(grid_positions(grid, frame, device=device), self.head_dim)
        return self._tables[key]

    def load(self, cache, grid: tuple[int, int, int]) -> int:
        """Write the cache's chunks into the prefix, each roped at its slot (relativistic) or its video frames
        (absolute); returns the prefix length in tokens. Slots already holding the same chunk object at the
        same offset are kept (a chunk cut by a frame window is a new object: rewritten)."""
        _, h, w = grid
        tpf, pos, frame, slots = h * w, 0, 0, []
        absolute = self.config.rope == "absolute"
        for s, chunk in enumerate(cache.chunks):
            n = chunk.frames * tpf
            if not (s < len(self.slots) and self.slots[s][0] is chunk and self.slots[s][1] == pos):
                cos, sin = self._rope(chunk.start if absolute else frame, (chunk.frames, h, w), self.k[0].device)
                for layer, (k, v) in enumerate(chunk.layers):
                    self.k[layer][:, pos : pos + n].copy_(apply_rope(k, cos, sin))
                    self.v[layer][:, pos : pos + n].copy_(v)
                self.loads += 1
            slots.append((chunk, pos))
            pos, frame = pos + n, frame + chunk.frames
        self.slots = slots
        return pos

    def run(self, model: WanModel, cache, tokens, grid, e0, e, recorder=None, last: Optional[int] = None):
        """One pass over the buffers: tokens [B, L_cur, dim] -> (head output or None, per-layer un-roped K/V)."""
        if torch.is_grad_enabled():
            raise ValueError(
                "the buffered streaming step is for inference (no gradient through in-place buffers): "
                "run it under torch.no_grad(), or use the reference step (buffers=None)"
            )
        f, h, w = grid
        if cache.frames + f > self.frames:
            raise ValueError(
                f"chunk {cache.next_chunk} needs {cache.frames + f} frames of K/V; the buffers of "
                f"{self.config.name} hold {self.frames}: a cache of another chunking was passed"
            )
        self._ensure(tokens.shape[0], h * w, compute_dtype(model.blocks[0].self_attn.q), tokens.device)
        prefix = self.load(cache, grid)
        here = cache.config.chunk_start(cache.next_chunk) if self.config.rope == "absolute" else cache.frames
        cos, sin = self._rope(here, grid, tokens.device)
        attn = _BufferedAttention(self, prefix, cos, sin, recorder)
        fn = _pass
        if self.compiled and recorder is None and last is None:  # recorded passes (DragStream) stay eager
            if self._fn is None:
                # every engine compiles the same pass; a server with many sessions (the demo) would pass torch's
                # default of 8 compilations per function and silently fall back to eager: allow one per layout each
                cfg = torch._dynamo.config
                cfg.recompile_limit = max(cfg.recompile_limit, 64)
                mode = "reduce-overhead" if tokens.device.type == "cuda" else None
                self._fn = torch.compile(_pass, dynamic=False, fullgraph=True, mode=mode)
            fn = self._fn
        out, kv = fn(model, tokens, e0, e, cache.context_kv, attn, h * w, last)
        if self.compiled and tokens.device.type == "cuda" and out is not None:
            # CUDA-graph outputs live in the graph's pool and are overwritten by the next replay
            out, kv = out.clone(), tuple((k.clone(), v.clone()) for k, v in kv)
        return out, kv
