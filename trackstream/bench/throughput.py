"""What the streaming DiT should achieve: analytic FLOPs of its passes and the device's plain matmul rate.

A streaming pass (``models.causal.stream_step``) runs the current chunk's n tokens through every block
against a key set of the cached chunks plus itself (kv tokens) and a fixed context (text_len text
tokens, plus 257 CLIP tokens for DiTs with the image branch). Forward FLOPs:

    2 n P_video                      every weight applied to the chunk's tokens: self-attention q/k/v/o,
                                     cross-attention q/o, FFN, patch embedding, head
  + layers x 4 n kv dim              QK^T and AV of self-attention (2 FLOPs per multiply-add, 2 products)
  + layers x 4 n context dim         the same for cross-attention
The cross-attention K/V of the context are computed once per prompt (``new_cache``), not per pass, so
their weights are left out; the time embedding runs per frame (negligible). Legend: n chunk tokens,
kv key tokens, P parameters, dim model width.

``matmul_tflops`` times one square matmul in the run's dtype: the rate the passes are compared with
(a pass's efficiency is its achieved rate over this one, both measured in the same run).
"""

from __future__ import annotations

import statistics
import time

import torch

from trackstream.models.fp8 import FP8, fp8_matmul, quantize_rows, quantize_weight
from trackstream.models.precision import synchronize
from trackstream.models.streaming import CausalConfig
from trackstream.models.wan import CLIP_TOKENS

__all__ = ["pass_flops", "chunk_flops", "matmul_tflops"]

# cross-attention projections of the context: run once per prompt, not per pass
_CONTEXT_WEIGHTS = (".cross_attn.k.", ".cross_attn.v.", ".cross_attn.k_img.", ".cross_attn.v_img.")


def _video_params(dit) -> int:
    """Weights applied to every chunk token: the blocks' matrices except the context K/V, plus the
    patch embedding and the output head."""
    blocks = sum(
        p.numel()
        for n, p in dit.blocks.named_parameters()
        if p.ndim == 2 and not any(k in "." + n for k in _CONTEXT_WEIGHTS)
    )
    return blocks + dit.patch_embedding.weight.numel() + dit.head.head.weight.numel()


def pass_flops(dit, *, tokens: int, kv_tokens: int) -> float:
    """Forward FLOPs of one streaming pass of ``tokens`` chunk tokens over ``kv_tokens`` keys (batch 1)."""
    context = dit.text_len + (CLIP_TOKENS if hasattr(dit, "img_emb") else 0)
    dense = 2.0 * _video_params(dit) * tokens
    attention = dit.num_layers * 4.0 * tokens * (kv_tokens + context) * dit.dim
    return dense + attention


def chunk_flops(dit, causal: CausalConfig, index: int, *, tokens_per_frame: int, passes: int) -> float:
    """FLOPs of chunk ``index``: ``passes`` streaming passes (K noisy + the clean commit) at its cache layout."""
    frames = causal.chunk_len(index)
    kv_frames = causal.cache_start(index) + frames  # sink + window + the chunk itself
    return passes * pass_flops(dit, tokens=frames * tokens_per_frame, kv_tokens=kv_frames * tokens_per_frame)


@torch.no_grad()
def matmul_tflops(device: torch.device, dtype: torch.dtype, *, size: int, repeats: int = 10) -> dict:
    """Median TFLOP/s of a [size, size] @ [size, size] matmul in ``dtype`` (after two warm-up calls).
    ``torch.float8_e4m3fn``: the product of the fp8 linears (``models.fp8``: row-wise scaled float8 operands,
    quantised beforehand, bf16 out; torch's scaled matmul on CUDA, its float32 emulation elsewhere)."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=g, device=device)
    b = torch.randn(size, size, generator=g, device=device)
    if dtype == FP8:
        (a_q, a_s), (b_q, b_s) = quantize_rows(a), quantize_weight(b)

        def product():
            return fp8_matmul(a_q, a_s, b_q, b_s, torch.bfloat16)
    else:
        a, b = a.to(dtype), b.to(dtype)

        def product():
            return a @ b

    times = []
    for r in range(2 + repeats):
        synchronize(device)
        t0 = time.perf_counter()
        product()
        synchronize(device)
        if r >= 2:
            times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    return {
        "size": size,
        "dtype": str(dtype).removeprefix("torch."),
        "seconds": seconds,
        "tflops": 2.0 * size**3 / seconds / 1e12,
    }
