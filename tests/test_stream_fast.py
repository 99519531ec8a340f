"""The fast streaming step (static K/V buffers, RoPE once per key, compiled) equals the reference step:
chunk for chunk through the engine, pass for pass against the block-causal mask, with DragStream's
recorder, across replayed / branched states, in bf16 and through torch.compile (inductor on CPU)."""

import pytest
import torch

from trackstream.models.block_causal import BlockCausalAttention
from trackstream.models.causal import FeatureRecorder, new_cache, stream_step
from trackstream.models.codecs import build_codec
from trackstream.models.motion_wan import ModelConfig, build_motion_wan
from trackstream.models.stream_buffers import StepBuffers, max_layout_frames
from trackstream.models.streaming import CausalConfig, StreamConfig
from trackstream.models.tracks import sample_track_ids
from trackstream.stream.chunk_io import collect, tracks_from_array
from trackstream.stream.chunks import chunk_pixel_frames
from trackstream.stream.engine import StreamingGenerator

H = W = 32
B, N = 1, 5
GIVEN = CausalConfig(3, 1, 1, first_chunk_frames=1)  # the 5B layout: chunk 0 = the image latent
SAMPLED = CausalConfig(3, 1, 1, first_chunk_frames=None)  # the 1.3B layout: chunk 0 sampled like the others


@pytest.fixture(scope="module")
def parts(tiny_network):
    net = tiny_network(0).eval()
    return net, build_codec("tiny-ae", width=16).eval()


def _inputs(frames, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(B, 3, H, W, generator=g) * 2 - 1,
        torch.randn(B, 5, 24, generator=g),
        torch.tensor([5]),
        sample_track_ids(B, N, generator=g),
        torch.rand(B, frames, N, 2, generator=g) * (W - 1),
        torch.rand(B, frames, N, generator=g) > 0.2,
    )


def _run(net, codec, causal, n, **kw):
    cfg = StreamConfig(causal=causal, steps=3, shift=5.0)
    image, text, lens, ids, tracks, vis = _inputs(chunk_pixel_frames(causal, n - 1)[1])
    engine = StreamingGenerator(net, codec, config=cfg, **kw)
    state = engine.start(image, text, lens, track_ids=ids, seed=3)
    frames, latents, outs = collect(engine.stream(state, tracks_from_array(tracks, vis), num_chunks=n))
    return engine, frames, latents, outs


@pytest.mark.slow
@pytest.mark.parametrize("causal", [GIVEN, SAMPLED], ids=["given", "sampled"])
def test_fast_engine_equals_reference(parts, causal):
    """6 chunks: the warm-up layouts and the steady state (the window evicts three times)."""
    net, codec = parts
    fast, f_frames, f_lat, _ = _run(net, codec, causal, 6, fast=True)
    ref, r_frames, r_lat, _ = _run(net, codec, causal, 6, fast=False)
    assert fast.buffers is not None and ref.buffers is None
    torch.testing.assert_close(f_lat, r_lat, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(f_frames, r_frames, atol=2e-5, rtol=1e-4)
    # the prefix is roped once per chunk (the sink once per stream), not once per pass and layer
    assert fast.buffers.loads == 6 - 1  # chunk 0 has no cache; chunks 1..5 each rope one new slot
    assert (
        fast.buffers.nbytes()
        == 2 * net.dit.num_layers * B * max_layout_frames(causal) * (H // 8 // 2) ** 2 * net.dit.dim * 4
    )  # [B, L_max, N, D] fp32 K and V per layer, L_max = 9 frames (c3s1w1)


TRACK_V0 = CausalConfig(3, 1, None, 1, window_frames=2, first_chunk_sampled=True)  # FastVideo's [1] + [3] x k
FRAMES_ABSOLUTE = CausalConfig(3, 1, None, 1, window_frames=4, rope="absolute")  # a whole and a part chunk


@pytest.mark.slow
@pytest.mark.parametrize("causal", [TRACK_V0, FRAMES_ABSOLUTE], ids=lambda c: c.name)
def test_fast_engine_equals_reference_frame_windows(parts, causal):
    """Frame windows (chunks cut to their newest frames, rewritten into the prefix) and absolute RoPE."""
    net, codec = parts
    fast, f_frames, f_lat, _ = _run(net, codec, causal, 6, fast=True)
    ref, r_frames, r_lat, _ = _run(net, codec, causal, 6, fast=False)
    assert fast.buffers is not None
    torch.testing.assert_close(f_lat, r_lat, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(f_frames, r_frames, atol=2e-5, rtol=1e-4)
    assert fast.buffers.frames == max_layout_frames(causal) == causal.cache_start(5) + 3


def test_fast_bf16_close_to_reference(parts):
    net, codec = parts
    net = build_motion_wan(ModelConfig(), text_encoder_dim=24).eval()
    net.load_state_dict(parts[0].state_dict())
    net.dit.cast_for_inference(torch.bfloat16)
    _, _, f_lat, _ = _run(net, codec, GIVEN, 4, fast=True)
    _, _, r_lat, _ = _run(net, codec, GIVEN, 4, fast=False)
    # the buffers store the roped keys in bf16, as the reference casts them: the same numbers
    assert (f_lat - r_lat).abs().max() < 2e-2


def test_buffered_step_equals_block_causal_mask(parts):
    """streamed = masked with the buffers: each chunk's prediction equals the whole clip's causal forward."""
    net, _ = parts
    dit, causal = net.dit, CausalConfig(2, 1, 1, first_chunk_frames=None)
    n, tpf = 5, (H // 8 // 2) ** 2
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, dit.in_dim, causal.chunk_start(n), H // 8, W // 8, generator=g)
    text = net.project_text(torch.randn(B, 5, 24, generator=g), torch.tensor([5]))
    with torch.no_grad():
        grid = (x.shape[2], H // 16, W // 16)
        attn = BlockCausalAttention(causal, grid, dit.head_dim, backend="sdpa")
        masked = dit(x, torch.zeros(B), text, attention=attn)
        cache, bufs = new_cache(dit, causal, text), StepBuffers(dit, causal)
        for i in range(n):
            lo, f = causal.chunk_start(i), causal.chunk_len(i)
            out = stream_step(dit, cache, x[:, :, lo : lo + f], torch.zeros(B), buffers=bufs)
            torch.testing.assert_close(out.pred, masked[:, :, lo : lo + f], atol=2e-5, rtol=1e-4)
            cache = cache.append(out.kv)
    assert bufs.frames == 6 and tpf == 4


def test_recorder_and_branching_through_buffers(parts):
    """DragStream's recorded features are the same through the buffers, and stepping an older cache
    after a newer one (a replayed or branched state) rewrites the slots that differ."""
    net, _ = parts
    dit, causal = net.dit, GIVEN
    g = torch.Generator().manual_seed(2)
    text = net.project_text(torch.randn(B, 5, 24, generator=g), torch.tensor([5]))
    chunks = [torch.randn(B, dit.in_dim, causal.chunk_len(i), H // 8, W // 8, generator=g) for i in range(5)]
    caches, bufs = [new_cache(dit, causal, text)], StepBuffers(dit, causal)
    with torch.no_grad():
        for x in chunks[:4]:
            caches.append(caches[-1].append(stream_step(dit, caches[-1], x, torch.zeros(B), buffers=bufs).kv))
        for back in (caches[2], caches[4], caches[3]):  # out of order: every slot check matters
            i = back.next_chunk
            x = torch.randn(B, dit.in_dim, causal.chunk_len(i), H // 8, W // 8, generator=g)
            rec_f, rec_r = FeatureRecorder([0, 1]), FeatureRecorder([0, 1])
            fast = stream_step(dit, back, x, torch.full((B,), 500.0), buffers=bufs, recorder=rec_f)
            ref = stream_step(dit, back, x, torch.full((B,), 500.0), recorder=rec_r)
            torch.testing.assert_close(fast.pred, ref.pred, atol=2e-5, rtol=1e-4)
            for layer in (0, 1):
                torch.testing.assert_close(rec_f.features[layer], rec_r.features[layer], atol=2e-5, rtol=1e-4)
            for (kf, vf), (kr, vr) in zip(fast.kv.layers, ref.kv.layers):
                assert torch.equal(kf, kr) and torch.equal(vf, vr)


def test_buffers_refuse_gradients_and_unbounded_windows(parts):
    net, codec = parts
    dit = net.dit
    bufs = StepBuffers(dit, GIVEN)
    cache = new_cache(dit, GIVEN, torch.zeros(B, 3, dit.text_dim))
    with pytest.raises(ValueError, match="inference"):
        stream_step(dit, cache, torch.zeros(B, dit.in_dim, 1, 4, 4), torch.zeros(B), buffers=bufs)
    with pytest.raises(ValueError, match="finite window"):
        StepBuffers(dit, CausalConfig(3, 1, None, first_chunk_frames=None))
    full = StreamConfig(causal=CausalConfig(3, 1, None, first_chunk_frames=1))
    assert StreamingGenerator(net, codec, config=full).buffers is None  # the reference serves wfull
    with pytest.raises(ValueError, match="finite window"):
        StreamingGenerator(net, codec, config=full, compile=True)
    with pytest.raises(ValueError, match="fast=True"):
        StreamingGenerator(net, codec, config=StreamConfig(), fast=False, compile=True)


def test_overlap_and_timings(parts):
    """overlap_decode asks the track source one chunk ahead and yields the same chunks; timings break
    each chunk's wall time into condition / dit / decode / host."""
    net, codec = parts
    _, frames, latents, outs = _run(net, codec, GIVEN, 4, overlap_decode=True, timings=True)
    _, r_frames, r_lat, _ = _run(net, codec, GIVEN, 4)
    torch.testing.assert_close(latents, r_lat, atol=0, rtol=0)
    torch.testing.assert_close(frames, r_frames, atol=0, rtol=0)
    for o in outs:
        assert set(o.timings) == {"condition", "dit", "decode", "host"} and o.timings["dit"] > 0
        assert abs(sum(o.timings.values()) - o.seconds) < 1e-3 + 0.05 * o.seconds
    asked, seen = [], []
    cfg = StreamConfig(causal=GIVEN)
    engine = StreamingGenerator(net, codec, config=cfg, overlap_decode=True)
    image, text, lens, ids, _, _ = _inputs(1)
    for out in engine.stream(engine.start(image, text, lens, seed=0), lambda i, span: asked.append(i), num_chunks=3):
        seen.append((out.index, list(asked)))
    assert seen == [(0, [0, 1]), (1, [0, 1, 2]), (2, [0, 1, 2])]


@pytest.mark.slow
def test_compiled_step_equals_eager(parts, monkeypatch):
    """torch.compile of the whole pass: the same chunks, one graph per chunk layout (chunk 0, chunk 1, the steady
    state, each traced whole: fullgraph) and no recompiles after that. Compiled here with AOT autograd's eager
    backend: what the engine owns is that the pass traces as one graph per layout, never recompiles and computes
    the same; inductor's code generation is torch's (its C++ build on a CPU takes minutes, and the CUDA graphs
    users get are measured on a GPU: lab/gpu_fp8.sh)."""
    real = torch.compile

    def aot_eager(fn, *, mode=None, **kw):  # the engine's own call, with another backend
        return real(fn, backend="aot_eager", **kw)

    monkeypatch.setattr(torch, "compile", aot_eager)
    net, codec = parts
    torch.compiler.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    _, _, c_lat, _ = _run(net, codec, SAMPLED, 5, compile=True)
    _, _, e_lat, _ = _run(net, codec, SAMPLED, 5, compile=False)
    torch.testing.assert_close(c_lat, e_lat, atol=1e-4, rtol=1e-3)
    assert 1 <= counters["stats"]["unique_graphs"] <= 3, dict(counters["stats"])


def test_overlapped_chunk_latencies_are_their_own_work(parts):
    """Without a second CUDA stream overlap_decode hands chunk i out after chunk i + 1 is sampled; its
    printed latency must not include that sampling: the chunks' seconds add up to no more than the wall."""
    import time

    net, codec = parts
    t0 = time.perf_counter()
    _, _, _, outs = _run(net, codec, GIVEN, 5, overlap_decode=True)
    wall = time.perf_counter() - t0
    assert sum(o.seconds for o in outs) <= wall, ([o.seconds for o in outs], wall)
