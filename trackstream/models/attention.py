"""Self-attention strategies of the Wan DiT and the SDPA helper they share.

A strategy is any ``SelfAttentionFn``; ``WanModel`` picks ``FullRoPEAttention`` (or its
sequence-parallel ``UlyssesRoPEAttention``) unless the caller passes its own.

Legend: B batch, L tokens, N heads, D head dim.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from trackstream.models.rope import apply_rope
from trackstream.models.sequence_parallel import ulysses

__all__ = ["SelfAttentionFn", "sdpa", "FullRoPEAttention", "UlyssesRoPEAttention"]

# A self-attention strategy gets the block index and the projected (normed, un-roped)
# q, k, v [B, L, N, D] of the current tokens and returns the attention output [B, L, N, D].
# The default is full bidirectional attention with RoPE on the token grid; the causal
# student supplies block-masked or KV-cached strategies without touching the blocks.
SelfAttentionFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None):
    """[B, Lq, N, D] x [B, Lk, N, D] -> [B, Lq, N, D] through PyTorch SDPA."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


class FullRoPEAttention:
    """Bidirectional attention over all tokens, RoPE at the given positions."""

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor):
        self.cos, self.sin = cos, sin

    def __call__(self, layer: int, q, k, v):
        q = apply_rope(q, self.cos, self.sin).to(v.dtype)
        k = apply_rope(k, self.cos, self.sin).to(v.dtype)
        return sdpa(q, k, v)


class UlyssesRoPEAttention(FullRoPEAttention):
    """Bidirectional attention of a sequence-parallel slice (``models.sequence_parallel``): RoPE at the
    slice's global positions (cos/sin [L/K, D/2]), then attention over the whole sequence on N/K heads."""

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor, group):
        super().__init__(cos, sin)
        self.group = group

    def __call__(self, layer: int, q, k, v):
        q = apply_rope(q, self.cos, self.sin).to(v.dtype)
        k = apply_rope(k, self.cos, self.sin).to(v.dtype)
        return ulysses(sdpa, q, k, v, self.group)
