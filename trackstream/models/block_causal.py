"""The training path of the causal mode (``models.causal``): one block-causal forward over a whole clip,
bidirectional within a chunk, causal across chunks, only the sink and window visible, RoPE by cache position
(the position rule is in ``models.causal``'s docstring); equal to streaming the clip through the rolling
cache chunk by chunk (tests/test_causal.py). Backends: FlexAttention (compiled on CUDA; on CPU unfused and
forward-only) or SDPA with a boolean [L, L] mask. Under sequence parallelism (``for_shard``) the mask is taken
in the all-to-all's rank-major token order (``models.sequence_parallel``).

    v = block_causal_forward(model, CausalConfig(), x, t, context)   # [B, C, F, H, W]
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from trackstream.models.causal import check_temporal_patch
from trackstream.models.rope import apply_rope, grid_positions, rope_cos_sin
from trackstream.models.sequence_parallel import heads_to_seq, seq_to_heads
from trackstream.models.streaming import CausalConfig
from trackstream.models.wan import WanModel

if TYPE_CHECKING:
    from trackstream.models.sequence_parallel import SequenceShard

try:  # FlexAttention: fused block-sparse kernel on CUDA (compiled), unfused and forward-only on CPU
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    HAS_FLEX = True
except ImportError:  # pragma: no cover - old torch
    HAS_FLEX = False

__all__ = ["BlockCausalAttention", "block_causal_forward", "HAS_FLEX", "BACKENDS"]
BACKENDS = ("auto", "flex", "sdpa")

_compiled_flex = None


def _flex(q, k, v, block_mask, scale):
    """FlexAttention on [B, N, L, E]: compiled on CUDA (fused), eager elsewhere (materialises scores)."""
    global _compiled_flex
    if q.device.type == "cuda":
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        return _compiled_flex(q, k, v, block_mask=block_mask, scale=scale)
    with warnings.catch_warnings():  # "called without torch.compile": expected off-GPU
        warnings.simplefilter("ignore", UserWarning)
        return flex_attention(q, k, v, block_mask=block_mask, scale=scale)


def _block_mask(cfg: CausalConfig, tok: torch.Tensor, frame: torch.Tensor):
    """FlexAttention block mask of ``cfg.frame_visible`` over tokens with chunk ids ``tok`` and frames ``frame``."""

    def mask_mod(b, hh, q_idx, kv_idx):
        return cfg.frame_visible(tok[q_idx], tok[kv_idx], frame[kv_idx])

    L = tok.numel()
    return create_block_mask(mask_mod, None, None, L, L, device=tok.device)


class BlockCausalAttention:
    """``SelfAttentionFn`` for a whole clip: bidirectional within a chunk, causal across chunks,
    only sink + window visible, RoPE by cache position (see the module docstring).

    grid: the token grid (F, H', W') of the clip; ``backend``: "flex", "sdpa" (boolean mask) or
    "auto" (flex on CUDA, SDPA elsewhere: CPU flex is unfused and has no backward).
    """

    def __init__(
        self,
        config: CausalConfig,
        grid: tuple[int, int, int],
        head_dim: int,
        *,
        device: torch.device | str | None = None,
        backend: str = "auto",
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}; expected one of {BACKENDS}")
        device = torch.device(device or "cpu")
        if backend == "auto":
            backend = "flex" if HAS_FLEX and device.type == "cuda" else "sdpa"
        if backend == "flex" and not HAS_FLEX:
            raise ValueError("backend='flex' needs torch.nn.attention.flex_attention; use backend='sdpa'")
        self.backend, self.head_dim, self.grid, self.config = backend, head_dim, tuple(grid), config
        self.group = None  # a sequence-parallel slice's group (``for_shard``)
        cfg, (nf, h, w) = config, grid
        n = cfg.num_chunks(nf)
        frame_chunk = torch.cat([torch.full((cfg.chunk_len(i),), i) for i in range(n)])  # [F]
        self.tok_chunk = frame_chunk.repeat_interleave(h * w).to(device)  # [L] chunk id per token
        # [L] latent frame per token: a frame window's mask reads the key's frame
        self.tok_frame = torch.arange(nf).repeat_interleave(h * w).to(device)
        pos = grid_positions(grid, device=device)  # [L, 3] absolute (frame, row, col)
        self.cos, self.sin = rope_cos_sin(pos, head_dim)
        # Frame shift from absolute to cache position per chunk; non-zero once eviction starts. The absolute
        # policy ropes every key at its video frame: plain RoPE, no shift.
        shift = torch.tensor([cfg.chunk_start(i) - cfg.rope_start(i) for i in range(n)], device=device)
        self.dual = cfg.sink_chunks > 0 and bool(shift.any())
        if self.dual:
            cpos = pos.clone()
            cpos[:, 0] -= shift[self.tok_chunk]
            self.cos_c, self.sin_c = rope_cos_sin(cpos, head_dim)
            self.sink = (self.tok_chunk < cfg.sink_chunks)[None, :, None, None]  # [1, L, 1, 1]
        if backend == "sdpa":
            self.mask = cfg.frame_visible(self.tok_chunk[:, None], self.tok_chunk[None, :], self.tok_frame[None, :])
        else:
            self.block_mask = _block_mask(cfg, self.tok_chunk, self.tok_frame)

    def for_shard(self, shard: "SequenceShard", grid: tuple[int, int, int]) -> "BlockCausalAttention":
        """This attention for one sequence-parallel slice (``models.sequence_parallel``): the RoPE tables and
        sink flags of the slice's tokens; the mask over the whole sequence in the all-to-all's rank-major
        order, where each query meets the keys it sees in grid order (chunk ids travel with the tokens)."""
        assert tuple(grid) == self.grid, (grid, self.grid)
        out = copy.copy(self)
        out.group = shard.group

        def split(t: torch.Tensor) -> torch.Tensor:  # per-token rows [L, ...] -> the slice's [L/K, ...]
            return shard.split(t.reshape(1, t.shape[0], -1), grid).reshape(-1, *t.shape[1:])

        out.cos, out.sin = split(self.cos), split(self.sin)
        if self.dual:
            out.cos_c, out.sin_c = split(self.cos_c), split(self.sin_c)
            out.sink = split(self.sink[0])[None]  # [1, L/K, 1, 1]
        order = shard.order(grid, device=self.tok_chunk.device)
        out.tok_chunk, out.tok_frame = self.tok_chunk[order], self.tok_frame[order]
        if self.backend == "sdpa":
            out.mask = self.mask[order][:, order]
        else:
            out.block_mask = _block_mask(self.config, out.tok_chunk, out.tok_frame)
        return out

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        qa = apply_rope(q, self.cos, self.sin)
        ka = apply_rope(k, self.cos, self.sin)
        if self.dual:  # sink keys meet q at its cache position, all others q at its absolute one
            qc = apply_rope(q, self.cos_c, self.sin_c)
            qa = torch.cat([qa, qc], dim=-1)  # [B, L, N, 2D]
            ka = torch.cat([ka.masked_fill(self.sink, 0.0), ka.masked_fill(~self.sink, 0.0)], dim=-1)
        qa, ka = qa.to(v.dtype), ka.to(v.dtype)
        if self.group is not None:  # a slice [B, L/K, N, E] -> the whole sequence on N/K heads [B, L, N/K, E]
            qa, ka, v = (seq_to_heads(a, self.group) for a in (qa, ka, v))
        q_, k_, v_ = (a.transpose(1, 2) for a in (qa, ka, v))  # [B, N, L, E]
        scale = 1.0 / math.sqrt(self.head_dim)
        if self.backend == "sdpa":
            out = F.scaled_dot_product_attention(q_, k_, v_, attn_mask=self.mask, scale=scale)
        else:
            if q.device.type != "cuda" and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
                raise ValueError("backend='flex' has no backward on CPU; use backend='sdpa' (or 'auto')")
            out = _flex(q_, k_, v_, self.block_mask, scale)
        out = out.transpose(1, 2)  # [B, L, N, D] (under SP: [B, L, N/K, D])
        return out if self.group is None else heads_to_seq(out, self.group)


def block_causal_forward(
    model: WanModel,
    config: CausalConfig,
    x: torch.Tensor,
    t: torch.Tensor,
    context: torch.Tensor,
    clip_fea: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    *,
    context_lens: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Causal prediction for a whole clip in one forward (ODE init, teacher forcing).

    Same arguments as ``WanModel.forward``; t may be per frame [B, F] (diffusion forcing).
    Returns [B, out_dim, F, H, W] float32.
    """
    check_temporal_patch(model)
    _, ph, pw = model.patch_size
    grid = (x.shape[2], x.shape[3] // ph, x.shape[4] // pw)
    attn = BlockCausalAttention(config, grid, model.head_dim, device=x.device, backend=backend)
    return model(x, t, context, clip_fea, y, context_lens=context_lens, attention=attn)
