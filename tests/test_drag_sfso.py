"""DragStream's pieces on the streaming DiT: features recorded through the attention extension point
without touching the cache, the Butterworth low-pass of the context on each frame's token grid, and
the spatial Gaussian gradient map."""

import numpy as np
import pytest
import torch

from trackstream.models.causal import FeatureRecorder, new_cache, stream_step
from trackstream.models.flavors import build_wan
from trackstream.models.streaming import CausalConfig
from trackstream.stream.drag.sfso import butterworth_lowpass, context_filter, gaussian_map, lowpass_tokens


def _setup():
    torch.manual_seed(0)
    model = build_wan("tiny").eval()
    torch.nn.init.normal_(model.head.head.weight, std=0.05)
    cfg = CausalConfig(3, 1, 1, first_chunk_frames=1)
    cache = new_cache(model, cfg, torch.randn(1, 8, model.text_dim))
    first = stream_step(model, cache, torch.randn(1, 16, 1, 8, 8), torch.zeros(1))
    return model, cache.append(first.kv)


def test_recorded_features_leave_the_prediction_and_the_cache_unchanged():
    model, cache = _setup()
    x = torch.randn(1, 16, 3, 8, 8, requires_grad=True)
    t = torch.full((1,), 500.0)
    plain = stream_step(model, cache, x, t)
    rec = FeatureRecorder(layers=[1])
    out = stream_step(model, cache, x, t, recorder=rec)
    assert torch.equal(out.pred, plain.pred)
    assert rec.features[1].shape == (1, 3 * 4 * 4, model.num_heads, model.head_dim)  # [B, L_cur, N, D]
    rec.features[1].square().mean().backward()  # the features carry gradients to the latent
    assert x.grad is not None and x.grad.abs().sum() > 0
    # a filtered context is a recorded variant: it changes the variant's features, not the pass's own
    # features, its prediction or the K/V the step would write to the cache
    filt = FeatureRecorder(layers=[1], variants={0.2: context_filter((4, 4), 0.2), "same": lambda i, k, v: (k, v)})
    out2 = stream_step(model, cache, x.detach(), t, recorder=filt)
    assert torch.equal(out2.pred, plain.pred.detach()) and torch.equal(filt.features[1], rec.features[1].detach())
    assert torch.equal(filt.variant_features[("same", 1)], filt.features[1])
    assert not torch.allclose(filt.variant_features[(0.2, 1)], filt.features[1])
    for (k1, v1), (k2, v2) in zip(out2.kv.layers, plain.kv.layers):
        assert torch.equal(k1, k2.detach()) and torch.equal(v1, v2.detach())


def test_butterworth_lowpass_keeps_dc_and_damps_high_frequencies():
    h = butterworth_lowpass(8, 8, 0.2)
    assert h[0, 0] == 1.0 and h[4, 4] < 1e-3  # DC passes; the corner (0.5, 0.5) cycles/token is cut
    assert h[0, 1] == pytest.approx(1 / (1 + (0.125 / 0.2) ** 8))  # the formula at f = 1/8
    x = torch.zeros(1, 2 * 16, 1, 1)  # two frames of a 4x4 grid: a constant and a checkerboard
    x[0, :16, 0, 0] = 3.0
    x[0, 16:, 0, 0] = torch.tensor([(-1.0) ** (i + j) for i in range(4) for j in range(4)])
    y = lowpass_tokens(x, (4, 4), 0.2)
    assert torch.allclose(y[0, :16], x[0, :16])  # each frame filtered on its own grid
    assert y[0, 16:].abs().max() < 1e-2
    assert torch.equal(lowpass_tokens(x, (4, 4), None), x)


def test_gaussian_map_peaks_on_the_target_box_and_ors_objects():
    a = np.zeros((40, 40), bool)
    a[10:14, 10:14] = True
    g = gaussian_map([a], (40, 40))
    assert g.max() == pytest.approx(1.0, abs=1e-3) and g[11, 11] > 0.99 and g[39, 39] < g[20, 20] < g[12, 12]
    b = np.zeros((40, 40), bool)
    b[30:34, 30:34] = True
    gb = gaussian_map([b], (40, 40))
    both = gaussian_map([a, b], (40, 40))
    np.testing.assert_allclose(both, 1 - (1 - g) * (1 - gb))
    assert gaussian_map([np.zeros((40, 40), bool)], (40, 40)).max() == 0
