"""The layers of a Wan block: norms, self- and cross-attention, the block itself and the output head.

Numerics follow the official code: modulations, the non-affine LayerNorms, the head and the
residual stream run in float32; linear layers run in the parameter dtype. Class and attribute
names are the official ones, so checkpoint keys match.

Legend: B batch, F latent frames, L tokens, N heads, D head dim, S tokens per latent frame.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from trackstream.models.attention import SelfAttentionFn, sdpa
from trackstream.models.fp8 import compute_dtype

__all__ = ["RMSNorm", "FP32LayerNorm", "WanSelfAttention", "WanCrossAttention", "WanBlock", "WanHead"]


class RMSNorm(nn.Module):
    """Wan's RMSNorm: normalise in float32, cast back, then scale (over the full width)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        # Cast back before the scale (official order), then return in the input dtype.
        return ((xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)).type_as(x) * self.weight).to(
            x.dtype
        )


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input/parameter dtype; returns float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)


def _linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a Linear in its compute dtype (so bf16 weights get bf16 inputs; an FP8Linear takes bf16)."""
    return layer(x.to(compute_dtype(layer)))


class WanSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def project(self, x: torch.Tensor):
        """x [B, L, dim] -> q, k, v [B, L, N, D]; q and k RMS-normed across heads, not roped."""
        shape = (*x.shape[:2], self.num_heads, self.head_dim)
        q = self.norm_q(_linear(self.q, x)).view(shape)
        k = self.norm_k(_linear(self.k, x)).view(shape)
        v = _linear(self.v, x).view(shape)
        return q, k, v

    def forward(self, x: torch.Tensor, layer: int, attention: SelfAttentionFn) -> torch.Tensor:
        q, k, v = self.project(x)
        out = attention(layer, q, k, v)  # [B, L, N, D]
        return _linear(self.o, out.flatten(2))


class WanCrossAttention(nn.Module):
    """Text cross-attention; with ``image=True`` also the I2V image branch (k_img/v_img)."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float, image: bool):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.image = image
        if image:
            self.k_img, self.v_img = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.norm_k_img = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(*t.shape[:2], self.num_heads, self.head_dim)

    def context_kv(self, context: torch.Tensor, num_image_tokens: int) -> tuple[torch.Tensor, ...]:
        """Keys/values of the (embedded) context; constant over denoising steps, so cacheable.

        context: [B, num_image_tokens + text_len, dim], image tokens first (official layout).
        """
        img, txt = context[:, :num_image_tokens], context[:, num_image_tokens:]
        kv = (self._heads(self.norm_k(_linear(self.k, txt))), self._heads(_linear(self.v, txt)))
        if self.image:
            if num_image_tokens == 0:
                raise ValueError("an i2v/flf2v model needs CLIP image tokens (clip_fea)")
            kv += (self._heads(self.norm_k_img(_linear(self.k_img, img))), self._heads(_linear(self.v_img, img)))
        return kv

    def forward(self, x: torch.Tensor, kv: Sequence[torch.Tensor]) -> torch.Tensor:
        q = self._heads(self.norm_q(_linear(self.q, x)))
        out = sdpa(q, kv[0], kv[1])  # no mask: padded text rows are attended, as in Wan
        if self.image:
            # The image branch shares q and is summed before the output projection.
            out = out + sdpa(q, kv[2], kv[3])
        return _linear(self.o, out.flatten(2))


def _modulation_init(rows: int, dim: int) -> torch.Tensor:
    """The official modulation table, N(0, 1) / sqrt(dim) [1, rows, dim]; on ``meta`` only its shape: a meta
    randn or division runs torch's Python decompositions, whose first use imports dynamo (a second per process)."""
    x = torch.empty(1, rows, dim)
    return x if x.is_meta else torch.randn(1, rows, dim) / dim**0.5


class WanBlock(nn.Module):
    def __init__(self, dim, ffn_dim, num_heads, qk_norm, cross_attn_norm, eps, image):
        super().__init__()
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = WanSelfAttention(dim, num_heads, qk_norm, eps)
        self.norm3 = FP32LayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        self.cross_attn = WanCrossAttention(dim, num_heads, qk_norm, eps, image)
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(_modulation_init(6, dim))

    def forward(self, x, e0, context_kv, layer: int, attention: SelfAttentionFn, tokens_per_frame: int):
        """x: [B, L, dim] float32 residual stream; e0: [B, F, 6, dim] per-frame modulation."""
        cdtype = compute_dtype(self.self_attn.q)
        B, L, dim = x.shape
        mod = (self.modulation.float()[:, None] + e0.float()).unsqueeze(3)  # [B, F, 6, 1, dim]
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = mod.unbind(2)  # [B, F, 1, dim]

        def modulate(h, shift, scale):  # tokens grouped per latent frame: [B, F, S, dim]
            h = h.view(B, -1, tokens_per_frame, dim)
            return (h * (1 + scale) + shift).view(B, L, dim)

        def gated(y, gate):
            return (y.float().view(B, -1, tokens_per_frame, dim) * gate).view(B, L, dim)

        y = self.self_attn(modulate(self.norm1(x), shift_sa, scale_sa).to(cdtype), layer, attention)
        x = x + gated(y, gate_sa)
        x = x + self.cross_attn(self.norm3(x).to(cdtype), context_kv).float()
        y = self.ffn(modulate(self.norm2(x), shift_ff, scale_ff).to(compute_dtype(self.ffn[0])))
        return x + gated(y, gate_ff)


class WanHead(nn.Module):
    def __init__(self, dim: int, out_dim: int, patch_size: Sequence[int], eps: float):
        super().__init__()
        self.norm = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.head = nn.Linear(dim, out_dim * math.prod(patch_size))
        self.modulation = nn.Parameter(_modulation_init(2, dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
        """x: [B, L, dim]; e: [B, F, dim] (the time embedding, not e0). Runs in float32."""
        B, L, dim = x.shape
        mod = self.modulation.float()[:, None] + e.float()[:, :, None]  # [B, F, 2, dim]
        shift, scale = mod[:, :, 0:1], mod[:, :, 1:2]  # [B, F, 1, dim]
        h = self.norm(x).view(B, -1, tokens_per_frame, dim) * (1 + scale) + shift
        return F.linear(h.view(B, L, dim), self.head.weight.float(), self.head.bias.float())
