"""Causal Wan: block-masked training forward == chunk-by-chunk streaming through the rolling
KV cache (fp32, <= 1e-5), functional cache semantics, unbounded rollouts, detach switch."""

import pytest
import torch

from trackstream.models.attention import sdpa
from trackstream.models.block_causal import HAS_FLEX, BlockCausalAttention, block_causal_forward
from trackstream.models.causal import KVCache, new_cache, stream_step
from trackstream.models.flavors import build_wan
from trackstream.models.rope import apply_rope, grid_positions, rope_cos_sin
from trackstream.models.streaming import CausalConfig

TOL = 1e-5


def _model(name="tiny"):
    model = build_wan(name).eval()
    for p in model.head.head.parameters():  # the official init zeroes the output head
        torch.nn.init.normal_(p, std=0.1)
    return model


def _chunk_timesteps(cfg, n, batch, per_frame=False):
    """[B, F] timesteps: one random value per chunk (the student's rollout), or per frame."""
    if per_frame:
        return torch.rand(batch, cfg.chunk_start(n)) * 1000
    return torch.cat([(torch.rand(batch, 1) * 1000).expand(batch, cfg.chunk_len(i)) for i in range(n)], 1)


def _stream(model, cfg, x, t, ctx, n, clip_fea=None, y=None):
    cache, preds = new_cache(model, cfg, ctx, clip_fea), []
    for i in range(n):
        s, f = cfg.chunk_start(i), cfg.chunk_len(i)
        pred, kv = stream_step(
            model, cache, x[:, :, s : s + f], t[:, s : s + f], y=None if y is None else y[:, :, s : s + f]
        )
        cache = cache.append(kv)
        preds.append(pred)
    return torch.cat(preds, 2), cache


class _AbsoluteRoPEMasked:
    """The naive alternative (absolute RoPE, block mask): what the reference code does."""

    def __init__(self, cfg, grid, head_dim):
        tok = torch.cat([torch.full((cfg.chunk_len(i),), i) for i in range(cfg.num_chunks(grid[0]))])
        tok = tok.repeat_interleave(grid[1] * grid[2])
        self.mask = cfg.visible(tok[:, None], tok[None, :])
        self.cos, self.sin = rope_cos_sin(grid_positions(grid), head_dim)

    def __call__(self, layer, q, k, v):
        return sdpa(apply_rope(q, self.cos, self.sin), apply_rope(k, self.cos, self.sin), v, self.mask)


# (C, S, W, chunks): enough chunks that the window rolls (evicts) several times.
CASES = [(3, 1, 1, 6), (3, 0, 2, 6), (1, 1, 2, 8), (3, 1, None, 5)]


@pytest.mark.parametrize("C,S,W,n", CASES)
def test_streaming_equals_block_masked_forward(C, S, W, n):
    model, cfg = _model(), CausalConfig(chunk_frames=C, sink_chunks=S, window_chunks=W, first_chunk_frames=None)
    B = 2
    x, ctx = torch.randn(B, 16, cfg.chunk_start(n), 4, 6), torch.randn(B, 7, 64)
    t = _chunk_timesteps(cfg, n, B)
    with torch.no_grad():
        full = block_causal_forward(model, cfg, x, t, ctx, backend="sdpa")
        streamed, cache = _stream(model, cfg, x, t, ctx, n)
        bidir = model(x, t, ctx)
    assert full.abs().max() > 1.0  # non-trivial outputs
    err = (full - streamed).abs().max().item()
    assert err <= TOL, f"{cfg.name}: streaming vs block-masked max abs {err:.2e}"
    assert (full - bidir).abs().max() > 1e-2  # the mask really restricts attention
    if W is not None:
        evictions = n - S - W  # chunks appended past a full window
        assert evictions >= 3 and len(cache.window) == W and cache.next_chunk == n


@pytest.mark.parametrize("C,S,W,n", [(3, 1, 1, 6), (1, 1, 2, 8)])
def test_cache_positions_matter(C, S, W, n):
    """With a sink and eviction, absolute RoPE (the reference code) gives a different answer."""
    model, cfg = _model(), CausalConfig(chunk_frames=C, sink_chunks=S, window_chunks=W, first_chunk_frames=None)
    x, ctx = torch.randn(1, 16, cfg.chunk_start(n), 4, 4), torch.randn(1, 5, 64)
    t = _chunk_timesteps(cfg, n, 1)
    with torch.no_grad():
        ours = block_causal_forward(model, cfg, x, t, ctx, backend="sdpa")
        naive = model(x, t, ctx, attention=_AbsoluteRoPEMasked(cfg, (x.shape[2], 2, 2), model.head_dim))
    first_evicting = cfg.chunk_start(S + W + 1)  # first chunk whose sink offset differs
    assert torch.allclose(ours[:, :, :first_evicting], naive[:, :, :first_evicting], atol=TOL)
    assert (ours[:, :, first_evicting:] - naive[:, :, first_evicting:]).abs().max() > 1e-3


def test_per_frame_timesteps_and_window_effect():
    model = _model()
    n, cfg = 6, CausalConfig(3, 1, 1, first_chunk_frames=None)
    x, ctx = torch.randn(1, 16, 18, 4, 4), torch.randn(1, 5, 64)
    t = _chunk_timesteps(cfg, n, 1, per_frame=True)
    with torch.no_grad():
        full = block_causal_forward(model, cfg, x, t, ctx)
        streamed, _ = _stream(model, cfg, x, t, ctx, n)
        unbounded = block_causal_forward(model, CausalConfig(3, 1, None, first_chunk_frames=None), x, t, ctx)
    assert (full - streamed).abs().max() <= TOL
    assert torch.allclose(full[:, :, :9], unbounded[:, :, :9], atol=TOL)  # same context up to chunk 2
    assert (full[:, :, 9:] - unbounded[:, :, 9:]).abs().max() > 1e-3  # chunk 3 no longer sees chunk 1


def test_i2v_first_frame_chunk_equivalence():
    """tiny-i2v with y channels and clip_fea; the image latent is its own 1-frame sink chunk."""
    model, cfg = _model("tiny-i2v"), CausalConfig(3, 1, 1, first_chunk_frames=1)
    n, B = 6, 2
    nf = cfg.chunk_start(n)
    assert nf == 16 and cfg.name == "c3s1w1f1"
    x, y = torch.randn(B, 16, nf, 4, 4), torch.randn(B, 20, nf, 4, 4)
    ctx, clip = torch.randn(B, 6, 64), torch.randn(B, 257, 1280)
    t = _chunk_timesteps(cfg, n, B)
    with torch.no_grad():
        full = block_causal_forward(model, cfg, x, t, ctx, clip, y)
        streamed, cache = _stream(model, cfg, x, t, ctx, n, clip_fea=clip, y=y)
    assert (full - streamed).abs().max() <= TOL
    assert cache.frames == 1 + 3  # image sink + one window chunk


@pytest.mark.slow
@pytest.mark.skipif(not HAS_FLEX, reason="torch without FlexAttention")
@pytest.mark.parametrize("C,S,W,n", CASES[:2] + CASES[3:])
def test_flex_and_sdpa_backends_agree(C, S, W, n):
    model, cfg = _model(), CausalConfig(C, S, W, first_chunk_frames=None)
    x, ctx = torch.randn(1, 16, cfg.chunk_start(n), 4, 6), torch.randn(1, 5, 64)
    t = _chunk_timesteps(cfg, n, 1)
    with torch.no_grad():
        a = block_causal_forward(model, cfg, x, t, ctx, backend="flex")
        b = block_causal_forward(model, cfg, x, t, ctx, backend="sdpa")
    assert (a - b).abs().max() <= TOL


def test_predict_does_not_write_and_clean_rerun_is_what_is_cached():
    """Noisy passes leave the cache untouched; the chunk's clean re-run at the same position is
    what later chunks see (Self-Forcing's context pass)."""
    model, cfg = _model(), CausalConfig(3, 1, 1, first_chunk_frames=None)
    n = 5
    clean, ctx = torch.randn(1, 16, 15, 4, 4), torch.randn(1, 5, 64)
    noisy = torch.randn_like(clean)
    t_noisy = torch.full((1, 3), 750.0)
    cache = new_cache(model, cfg, ctx)
    with torch.no_grad():
        preds = []
        for i in range(n):
            sl = slice(3 * i, 3 * i + 3)
            before = [kv for c in cache.chunks for kv in c.layers]
            pred, _ = stream_step(model, cache, noisy[:, :, sl], t_noisy)  # discarded K/V
            pred2, _ = stream_step(model, cache, noisy[:, :, sl], t_noisy)
            assert torch.equal(pred, pred2)  # re-running at the same position is idempotent
            assert all(a is b for a, b in zip(before, [kv for c in cache.chunks for kv in c.layers]))
            preds.append(pred)
            _, kv = stream_step(model, cache, clean[:, :, sl], torch.zeros(1, 3))
            cache = cache.append(kv)
        # reference for chunk i: history clean at t=0, chunk i noisy, in one masked forward
        for i in range(n):
            x = torch.cat([clean[:, :, : 3 * i], noisy[:, :, 3 * i : 3 * i + 3]], 2)
            t = torch.cat([torch.zeros(1, 3 * i), t_noisy], 1)
            ref = block_causal_forward(model, cfg, x, t, ctx)[:, :, 3 * i :]
            assert (ref - preds[i]).abs().max() <= TOL


def test_append_validates_order_and_shape():
    model, cfg = _model(), CausalConfig(3, 1, 1, first_chunk_frames=None)
    cache = new_cache(model, cfg, torch.randn(1, 5, 64))
    with torch.no_grad():
        _, kv = stream_step(model, cache, torch.randn(1, 16, 3, 4, 4), torch.tensor([10.0]))
        cache1 = cache.append(kv)
        with pytest.raises(ValueError, match="expecting chunk 1"):
            cache1.append(kv)  # the same chunk twice
        with pytest.raises(ValueError, match="latent frames"):
            stream_step(model, cache1, torch.randn(1, 16, 2, 4, 4), torch.tensor([10.0]))
        with pytest.raises(ValueError, match="tokens per frame"):
            stream_step(model, cache1, torch.randn(1, 16, 3, 6, 6), torch.tensor([10.0]))
    assert cache.next_chunk == 0 and cache.chunks == ()  # the old cache is intact


@pytest.mark.slow
def test_thousand_frame_rollout_constant_cache():
    model, cfg = _model(), CausalConfig(3, 1, 1, first_chunk_frames=None)
    cache = new_cache(model, cfg, torch.randn(1, 5, 64))
    sizes, frames, chunks = set(), set(), 334  # 1002 latent frames
    with torch.no_grad():
        for i in range(chunks):
            pred, kv = stream_step(model, cache, torch.randn(1, 16, 3, 4, 4), torch.tensor([500.0]))
            cache = cache.append(kv)
            if i >= 2:  # sink + window full from here on
                sizes.add(cache.nbytes())
                frames.add(cache.frames)
    assert torch.isfinite(pred).all() and pred.abs().max() > 0.1
    assert cache.next_chunk * 3 >= 1000
    assert len(sizes) == 1 and frames == {6}  # constant memory and bounded RoPE positions
    assert len(cache.sink) == 1 and cache.sink[0].index == 0 and [c.index for c in cache.window] == [chunks - 1]


@pytest.mark.parametrize("detach", [True, False])
def test_detach_switch_controls_gradient_into_history(detach):
    model, cfg = _model(), CausalConfig(3, 1, 1, first_chunk_frames=None)
    model.train()
    cache = new_cache(model, cfg, torch.randn(1, 5, 64), detach=detach)
    x0 = torch.randn(1, 16, 3, 4, 4, requires_grad=True)
    _, kv = stream_step(model, cache, x0, torch.zeros(1))
    cache = cache.append(kv)
    x1 = torch.randn(1, 16, 3, 4, 4, requires_grad=True)
    pred, _ = stream_step(model, cache, x1, torch.tensor([700.0]))
    pred.square().mean().backward()
    assert x1.grad is not None and x1.grad.abs().sum() > 0  # the current chunk always gets gradient
    assert model.blocks[0].self_attn.q.weight.grad.abs().sum() > 0
    if detach:
        assert x0.grad is None
    else:
        assert x0.grad is not None and x0.grad.abs().sum() > 0


def test_gradient_checkpointing_streaming_and_block_masked():
    """Same gradients with activation checkpointing (the recording attention is re-run safely)."""
    model, cfg = _model(), CausalConfig(3, 1, 1, first_chunk_frames=None)
    x, ctx = torch.randn(1, 16, 12, 4, 4), torch.randn(1, 5, 64)
    t = _chunk_timesteps(cfg, 4, 1)

    def grads(checkpointing):
        model.zero_grad()
        model.gradient_checkpointing = checkpointing
        cache = new_cache(model, cfg, ctx, detach=False)
        loss = block_causal_forward(model, cfg, x, t, ctx).square().mean()
        for i in range(4):
            pred, kv = stream_step(model, cache, x[:, :, 3 * i : 3 * i + 3], t[:, 3 * i : 3 * i + 3])
            cache = cache.append(kv)
            loss = loss + pred.square().mean()
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    a, b = grads(False), grads(True)
    model.gradient_checkpointing = False
    assert len(a) == len(b) > 0
    assert max((ga - gb).abs().max().item() for ga, gb in zip(a, b)) <= 1e-6


def test_config_validation_and_layout():
    for field, bad in [
        ("chunk_frames", 0),
        ("sink_chunks", -1),
        ("window_chunks", -2),
        ("first_chunk_frames", 0),
        ("chunk_frames", 2.5),
        ("sink_chunks", True),
    ]:
        with pytest.raises(ValueError, match=field):
            CausalConfig(**{field: bad})
    cfg = CausalConfig(3, 1, 1, first_chunk_frames=None)
    assert cfg.name == "c3s1w1" and CausalConfig(3, 1, None, first_chunk_frames=None).name == "c3s1wfull"
    assert cfg.cache_chunks(5) == ((0,), (4,)) and cfg.cache_start(5) == 6 and cfg.chunk_start(5) == 15
    assert CausalConfig(3, 0, 2, first_chunk_frames=None).cache_chunks(5) == ((), (3, 4))
    assert CausalConfig(3, 2, None, first_chunk_frames=None).cache_chunks(5) == ((0, 1), (2, 3, 4))
    assert CausalConfig(3, 2, 1, first_chunk_frames=None).cache_chunks(1) == ((0,), ())  # chunk 1 is itself a sink
    with pytest.raises(ValueError, match="do not split"):
        cfg.num_chunks(10)
    with pytest.raises(ValueError, match="backend"):
        BlockCausalAttention(cfg, (3, 2, 2), 32, backend="flash")
    assert isinstance(new_cache(_model(), cfg, torch.randn(1, 5, 64)), KVCache)


def test_meta_build_then_init_weights_is_fully_initialised():
    """The benchmark's real-flavor path (meta -> to_empty -> init_weights) leaves no garbage."""
    model = build_wan("tiny-i2v", device="meta").to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    model.init_weights()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.equal(model.blocks[0].self_attn.norm_q.weight, torch.ones(model.dim))
    assert torch.equal(model.blocks[0].norm3.bias, torch.zeros(model.dim))


# frame windows (the oldest chunk partly visible) and the absolute RoPE policy: (config kwargs, chunks)
NEW_CASES = [
    (dict(window_chunks=None, window_frames=2, first_chunk_frames=1, first_chunk_sampled=True), 5),  # Track-v0
    (dict(window_chunks=None, window_frames=4, first_chunk_frames=None), 5),  # one whole + one partial chunk
    (dict(window_chunks=1, first_chunk_frames=1, rope="absolute"), 5),
    (dict(window_chunks=None, window_frames=2, first_chunk_frames=1, rope="absolute"), 5),
    (dict(sink_chunks=0, window_chunks=None, window_frames=5, first_chunk_frames=None), 5),
]


@pytest.mark.slow
@pytest.mark.parametrize("kw,n", NEW_CASES, ids=lambda v: CausalConfig(**v).name if isinstance(v, dict) else str(v))
def test_frame_windows_and_absolute_rope_stream_as_trained(kw, n):
    model, cfg = _model(), CausalConfig(**kw)
    B = 2
    x, ctx = torch.randn(B, 16, cfg.chunk_start(n), 4, 6), torch.randn(B, 7, 64)
    t = _chunk_timesteps(cfg, n, B)
    with torch.no_grad():
        full = block_causal_forward(model, cfg, x, t, ctx, backend="sdpa")
        streamed, cache = _stream(model, cfg, x, t, ctx, n)
    err = (full - streamed).abs().max().item()
    assert full.abs().max() > 1.0 and err <= TOL, f"{cfg.name}: streaming vs block-masked max abs {err:.2e}"
    assert cache.frames == cfg.cache_start(n)
    if cfg.window_frames is not None:  # the window holds exactly window_frames frames, the oldest chunk cut
        assert sum(c.frames for c in cache.window) == cfg.window_frames
        assert [c.start for c in cache.window] == sorted(c.start for c in cache.window)
        assert cache.window[-1].start + cache.window[-1].frames == cfg.chunk_start(n)
    if HAS_FLEX:
        with torch.no_grad():
            flex = block_causal_forward(model, cfg, x, t, ctx, backend="flex")
        assert (flex - full).abs().max() <= TOL


def test_frame_window_layout_and_policies_differ():
    tv = CausalConfig(3, 1, None, 1, window_frames=2, first_chunk_sampled=True)
    assert tv.name == "c3s1w2frf1s" and tv.bounded and not CausalConfig(3, 1, None).bounded
    # FastVideo's [1] + [3] x k with local_attn_size 6: keys [sink][2 frames][current]
    assert [tv.cache_start(i) for i in range(5)] == [0, 1, 3, 3, 3]
    assert [tv.cache_chunks(i) for i in range(4)] == [((), ()), ((0,), ()), ((0,), (1,)), ((0,), (2,))]
    assert tv.visible(3, 2) and not tv.visible(3, 1) and tv.frame_visible(3, 2, 5) and not tv.frame_visible(3, 2, 4)
    # chunk windows: the per-frame rule is the chunk rule
    c = CausalConfig()
    i, j = torch.arange(6)[:, None], torch.arange(6)[None, :]
    assert torch.equal(c.frame_visible(i, j, j * 3), c.visible(i, j))
    # the two RoPE policies agree until the cache first drops frames, then differ
    model, n = _model(), 4
    x, ctx = torch.randn(1, 16, tv.chunk_start(n), 4, 4), torch.randn(1, 5, 64)
    t = _chunk_timesteps(tv, n, 1)
    ab = CausalConfig(3, 1, None, 1, window_frames=2, first_chunk_sampled=True, rope="absolute")
    with torch.no_grad():
        rel = block_causal_forward(model, tv, x, t, ctx, backend="sdpa")
        absl = block_causal_forward(model, ab, x, t, ctx, backend="sdpa")
    assert torch.allclose(rel[:, :, :4], absl[:, :, :4], atol=TOL)
    assert (rel[:, :, 4:] - absl[:, :, 4:]).abs().max() > 1e-3
