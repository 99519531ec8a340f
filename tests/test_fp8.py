"""The fp8 precision (``models.fp8``, ``--dtype fp8``) on the CPU, where its product is the exact float32 emulation
of the GPU's scaled matmul (the same fp8 rounding of weights and activations): its error against float32 and bf16 on
a shrunk DiT, weights quantised once, which layers it takes, the engine streaming with it, and its refusals."""

import argparse
import copy

import pytest
import torch

from trackstream.models import fp8
from trackstream.models.codecs import build_codec
from trackstream.models.fp8 import FP8, FP8Linear, quantize_linears, quantize_rows
from trackstream.models.precision import precision_name, resolve_dtype, working_dtype
from trackstream.models.streaming import CausalConfig, StreamConfig
from trackstream.models.tracks import sample_track_ids
from trackstream.stream.chunk_io import collect, tracks_from_array
from trackstream.stream.chunks import chunk_pixel_frames
from trackstream.stream.engine import StreamingGenerator
from trackstream.stream.options import add_precision_args, parsed_precision

# Relative L2 error of the DiT output against float32 on the shrunk network below (2 blocks, dim 128, the blocks'
# modulation drawn N(0, 1) so that they, not the fp32 residual path, make the output: without them it moves by
# 102 %). Measured on the CPU (torch 2.13): bf16 0.43 %, fp8 4.1 % (fp8 vs bf16 4.0 %). The bounds hold fp8
# within three times its measured error and above a floor that bf16 alone (a skipped quantisation) stays under.
# The engine test's latents (3 chunks, the official modulation): fp8 vs bf16 0.44 %.
FP8_REL_MAX = 0.12
FP8_REL_MIN = 0.02
BF16_REL_MAX = 0.015


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.fixture(scope="module")
def dit(tiny_network):
    d = tiny_network(0).dit.eval().requires_grad_(False)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for blk in d.blocks:
            blk.modulation.normal_(generator=g)
    return d


def _inputs(d):
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(1, d.in_dim, 3, 8, 8, generator=g),
        torch.tensor([700.0]),
        torch.randn(1, 5, d.text_dim, generator=g),
    )


@torch.no_grad()
def test_dit_output_error_fp8_against_bf16_and_fp32(dit):
    x, t, ctx = _inputs(dit)
    y32 = dit(x, t, ctx)
    y16 = copy.deepcopy(dit).cast_for_inference(torch.bfloat16)(x, t, ctx)
    y8 = copy.deepcopy(dit).cast_for_inference(FP8)(x, t, ctx)
    bf16, fp8_err = _rel(y16, y32), _rel(y8, y32)
    assert bf16 < BF16_REL_MAX, bf16
    assert FP8_REL_MIN < fp8_err < FP8_REL_MAX, fp8_err  # quantised (above bf16's floor), and not worse than stated
    assert _rel(y8, y16) < FP8_REL_MAX


def test_per_row_scales_keep_small_rows():
    """A weight whose rows differ by 10^6 in size: each row keeps fp8's relative precision (3 mantissa bits:
    rounding within 2^-4) only with its own scale; one scale for the tensor flushes the small rows to zero."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 64, generator=g) * torch.logspace(-3, 3, 32)[:, None]
    q, scale = fp8.quantize_weight(w)
    assert q.dtype == FP8 and scale.shape == (32,)
    back = q.float() * scale[:, None]
    normal = w.abs() >= scale[:, None] * 2**-6  # fp8 e4m3's normal range, per row
    assert ((back - w).abs() <= 2**-4 * w.abs() + 1e-30)[normal].all()
    for r in range(32):
        assert _rel(back[r], w[r]) < 0.05


@torch.no_grad()
def test_fp8_linear_matches_the_dequantised_product():
    """The emulated product is exactly the float32 product of the dequantised operands (what the GPU computes,
    up to its accumulation order), and within fp8's error of the float product."""
    g = torch.Generator().manual_seed(2)
    lin = torch.nn.Linear(64, 48)
    x = torch.randn(2, 7, 64, generator=g)
    layer = FP8Linear.from_linear(lin)
    y = layer(x)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 7, 48)
    x_q, x_s = quantize_rows(x.reshape(-1, 64).to(torch.bfloat16))
    exact = (x_q.float() * x_s) @ (layer.weight.float() * layer.weight_scale[:, None]).t()
    torch.testing.assert_close(y.float(), (exact.bfloat16() + lin.bias.bfloat16()).float().view(2, 7, 48))
    assert 0.005 < _rel(y, lin(x)) < 0.08


def test_weights_quantised_once_and_which_layers(dit, monkeypatch):
    d = copy.deepcopy(dit).cast_for_inference(FP8)
    calls = []
    monkeypatch.setattr(fp8, "quantize_weight", lambda *a: calls.append(a) or pytest.fail("requantised"))
    before = {n: p.data_ptr() for n, p in d.named_parameters() if p.dtype == FP8}
    with torch.no_grad():
        d(*_inputs(d))
        d(*_inputs(d))
    assert not calls and before == {n: p.data_ptr() for n, p in d.named_parameters() if p.dtype == FP8}
    # every Linear of the blocks is fp8: q/k/v/o of self- and of cross-attention, the FFN's two
    per_block = [m for m in d.blocks[0].modules() if isinstance(m, torch.nn.Linear | FP8Linear)]
    assert per_block and all(isinstance(m, FP8Linear) for m in per_block) and len(per_block) == 10
    assert len(before) == 10 * len(d.blocks)
    # not the embeddings or the head; Wan's fp32 parts stay fp32, the other matmul weights are bf16
    assert d.text_embedding[0].weight.dtype == torch.bfloat16 and d.head.head.weight.dtype == torch.bfloat16
    assert d.patch_embedding.weight.dtype == torch.bfloat16
    assert d.blocks[0].modulation.dtype == torch.float32 and d.time_embedding[0].weight.dtype == torch.float32
    assert d.blocks[0].norm3.weight.dtype == torch.float32
    assert quantize_linears(d.blocks) == 0  # a second cast keeps what is fp8


def test_widths_scaled_mm_cannot_take_are_refused():
    with pytest.raises(ValueError, match=r"^dtype=fp8: 0 is 24 -> 64; .* use dtype=bf16"):
        quantize_linears(torch.nn.Sequential(torch.nn.Linear(24, 64)))


def test_precision_names_and_refusals(monkeypatch):
    assert precision_name("fp8") == "fp8" and precision_name(torch.float8_e4m3fn) == "fp8"
    assert resolve_dtype("fp8", "cpu") == FP8 and working_dtype(FP8) == torch.bfloat16
    assert working_dtype(torch.float32) == torch.float32
    with pytest.raises(ValueError, match="training has no fp16 or fp8"):
        precision_name("fp8", field="trainer.precision", training=True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA A100")
    with pytest.raises(ValueError, match=r"^--dtype=fp8 needs .* 8\.9\+ .* NVIDIA A100 is 8\.0: use --dtype=bf16$"):
        resolve_dtype("fp8", "cuda", field="--dtype")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    assert resolve_dtype("fp8", "cuda") == FP8
    ap = argparse.ArgumentParser()
    add_precision_args(ap)
    assert parsed_precision(ap, ap.parse_args(["--device", "cpu", "--dtype", "fp8"])) == (torch.device("cpu"), FP8)


@torch.no_grad()
def test_engine_streams_in_fp8(tiny_network):
    """The streaming engine end to end (fast step, 3 chunks of c3s1w1) with fp8 linears: its latents stay close
    to bf16's from the same seed."""
    causal = CausalConfig(3, 1, 1, first_chunk_frames=1)
    cfg = StreamConfig(causal=causal, steps=2, shift=5.0)
    codec = build_codec("tiny-ae", width=16).eval().to(torch.bfloat16)
    g = torch.Generator().manual_seed(1)
    frames = chunk_pixel_frames(causal, 2)[1]
    image, text = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1, torch.randn(1, 5, 24, generator=g)
    ids = sample_track_ids(1, 5, generator=g)
    tracks, vis = torch.rand(1, frames, 5, 2, generator=g) * 31, torch.ones(1, frames, 5, dtype=torch.bool)
    out = {}
    for dtype in (torch.bfloat16, FP8):
        net = tiny_network(0).eval().requires_grad_(False)
        net.dit.cast_for_inference(dtype)
        engine = StreamingGenerator(net, codec, config=cfg)
        state = engine.start(image, text, torch.tensor([5]), track_ids=ids, seed=3)
        out[dtype] = collect(engine.stream(state, tracks_from_array(tracks, vis), num_chunks=3))
    (f16, l16, _), (f8, l8, o8) = out[torch.bfloat16], out[FP8]
    assert len(o8) == 3 and torch.isfinite(l8).all() and f8.shape == f16.shape
    assert engine.buffers.k[0].dtype == torch.bfloat16
    assert _rel(l8, l16) < FP8_REL_MAX
