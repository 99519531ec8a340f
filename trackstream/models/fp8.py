"""FP8 linear layers for inference: weights quantised once at load, activations quantised per call.

    dit.cast_for_inference(torch.float8_e4m3fn)     # the precision "fp8" of models.precision

What ``fp8`` means: every ``nn.Linear`` inside the DiT's blocks (self-attention q/k/v/o, cross-attention
q/k/v/o and the image branch's k_img/v_img, the two FFN linears) becomes an :class:`FP8Linear`; everything
else runs in bf16 (the patch, text, time and CLIP embeddings, the track encoder, the head), and what Wan keeps
float32 stays float32 (``WanModel.cast_for_inference``'s rule: time embedding, modulation, norms).

Numerics (the same on every device, so a CPU run measures the GPU's quantisation error):

* weights: ``float8_e4m3fn`` with one float32 scale per output row, ``s_w[o] = max|W[o, :]| / 448``,
  quantised once from the weights as loaded (fp32 when the export is fp32) and kept; nothing requantises them;
* activations: ``float8_e4m3fn`` with one scale per token (row), ``s_x[m] = max|x[m, :]| / 448``, per call;
* the product: ``(x_q @ W_q^T) * s_x * s_w`` accumulated in float32, returned in bf16, plus the bias (bf16).

On CUDA the product is ``torch._scaled_mm`` with row-wise scales (both operands row-wise: what its row-wise mode
takes; Hopper / Ada, compute capability 8.9+, which ``models.precision`` checks before anything loads). Elsewhere
it is emulated exactly: the fp8 tensors dequantised to float32 and multiplied in float32 (the inputs rounded as
the GPU rounds them; only the accumulation order differs). ``_scaled_mm`` needs the reduced and output widths
to be multiples of 16, so a network with another width is refused on every device, one line naming the layer.
With gradient enabled (DragStream optimises its latent through the DiT) the backward is the straight-through
one: the incoming gradient times the dequantised weight, in bf16.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = [
    "FP8",
    "FP8_MAX",
    "FP8Linear",
    "fp8_matmul",
    "quantize_linears",
    "quantize_weight",
    "quantize_rows",
    "compute_dtype",
]

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite float8_e4m3fn
_TINY = 1e-12  # floor of a scale: an all-zero row quantises to zeros, not NaN
_ALIGN = 16  # _scaled_mm's multiple for the reduced and output widths


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (x_q [M, K] float8_e4m3fn, scale [M, 1] float32) with x ~= x_q * scale, row by row."""
    xf = x.float()
    scale = (xf.abs().amax(dim=-1, keepdim=True) / FP8_MAX).clamp_min(_TINY)
    return (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear weight [out, in] -> (float8 [out, in], float32 scale [out]): one scale per output row."""
    q, scale = quantize_rows(weight)
    return q, scale.squeeze(1)


def fp8_matmul(x_q, x_scale, w_q, w_scale, out_dtype: torch.dtype) -> torch.Tensor:
    """(x_q * x_scale) @ (w_q * w_scale[:, None])^T in ``out_dtype``: torch's scaled matmul on CUDA, the exact
    float32 emulation elsewhere."""
    if x_q.is_cuda:
        return torch._scaled_mm(x_q, w_q.t(), scale_a=x_scale, scale_b=w_scale[None, :], out_dtype=out_dtype)
    return ((x_q.float() * x_scale) @ (w_q.float() * w_scale[:, None]).t()).to(out_dtype)


class _StraightThrough(torch.autograd.Function):
    """The fp8 product forward; backward: grad_x = grad_y @ dequantised W (the rounding of x passed through)."""

    @staticmethod
    def forward(ctx, x, w_q, w_scale, out_dtype):
        ctx.save_for_backward(w_q, w_scale)
        ctx.in_dtype = x.dtype
        x_q, x_scale = quantize_rows(x)
        return fp8_matmul(x_q, x_scale, w_q, w_scale, out_dtype)

    @staticmethod
    def backward(ctx, grad):
        w_q, w_scale = ctx.saved_tensors
        w = (w_q.float() * w_scale[:, None]).to(grad.dtype)
        return (grad @ w).to(ctx.in_dtype), None, None, None


class FP8Linear(nn.Module):
    """A Linear whose weight is float8_e4m3fn with per-output-row scales (``weight``, ``weight_scale``) and whose
    input is quantised per token on each call; output and bias in ``compute_dtype`` (bf16)."""

    def __init__(self, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None, compute_dtype):
        super().__init__()
        assert weight.dtype == FP8 and weight_scale.shape == weight.shape[:1]
        self.out_features, self.in_features = weight.shape
        self.compute_dtype = compute_dtype
        # a Parameter (not a buffer) so parameter counts and state dicts see the matrix as the Linear's weight
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.register_buffer("weight_scale", weight_scale.float())
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(compute_dtype), requires_grad=False)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, compute_dtype: torch.dtype = torch.bfloat16) -> "FP8Linear":
        q, scale = quantize_weight(linear.weight)
        return cls(q, scale, linear.bias, compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(self.compute_dtype)
        if torch.is_grad_enabled() and x2.requires_grad:
            y = _StraightThrough.apply(x2, self.weight, self.weight_scale, self.compute_dtype)
        else:
            x_q, x_scale = quantize_rows(x2)
            y = fp8_matmul(x_q, x_scale, self.weight, self.weight_scale, self.compute_dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, float8_e4m3fn per-row scales"


def compute_dtype(layer: nn.Module) -> torch.dtype:
    """The dtype a linear layer takes its input in: its weight's, or an FP8Linear's ``compute_dtype``."""
    return layer.compute_dtype if isinstance(layer, FP8Linear) else layer.weight.dtype


@torch.no_grad()
def quantize_linears(root: nn.Module, compute_dtype: torch.dtype = torch.bfloat16) -> int:
    """Replace every ``nn.Linear`` under ``root`` by an :class:`FP8Linear` (quantised once, here); returns how many.
    Layers already in fp8 are kept. A width ``_scaled_mm`` cannot take is refused before anything is replaced."""
    targets = [(name, m) for name, m in root.named_modules() if type(m) is nn.Linear]
    for name, m in targets:
        if m.in_features % _ALIGN or m.out_features % _ALIGN:
            raise ValueError(
                f"dtype=fp8: {name} is {m.in_features} -> {m.out_features}; fp8 linears need widths that are "
                f"multiples of {_ALIGN} (torch._scaled_mm): use dtype=bf16 for this network"
            )
    for name, m in targets:
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, child, FP8Linear.from_linear(m, compute_dtype))
    return len(targets)
