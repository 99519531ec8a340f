"""Streaming engine: chunk-wise sampling through the rolling KV cache equals the same sampler run
on the whole clip with the block-causal mask; chunks are yielded as soon as they are ready with
tracks read one chunk at a time; memory is constant; streaming decode equals a full decode."""

import pytest
import torch

from trackstream.diffusion.schedule import add_noise, x0_from_velocity
from trackstream.models.block_causal import BlockCausalAttention
from trackstream.models.channel_layouts import i2v_condition
from trackstream.models.codecs import build_codec
from trackstream.models.streaming import CausalConfig, StreamConfig
from trackstream.models.tracks import sample_track_ids
from trackstream.stream.chunk_io import collect, tracks_from_array
from trackstream.stream.chunks import chunk_condition, chunk_pixel_frames, track_features
from trackstream.stream.engine import StreamingGenerator, state_nbytes

H = W = 32
B, N = 2, 6


def _inputs(num_frames, seed=1):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(B, 3, H, W, generator=g) * 2 - 1
    text = torch.randn(B, 5, 24, generator=g)
    lens = torch.tensor([5, 3])
    ids = sample_track_ids(B, N, generator=g)
    tracks = torch.rand(B, num_frames, N, 2, generator=g) * (W - 1)
    vis = torch.rand(B, num_frames, N, generator=g) > 0.2
    return image, text, lens, ids, tracks, vis


@pytest.fixture(scope="module")
def parts(tiny_network):
    codec = build_codec("tiny-ae", width=16).eval()
    return tiny_network(0).eval(), codec


def test_stream_equals_block_causal_reference(parts):
    """Chunk-by-chunk through the cache == re-running the growing clip with the block mask."""
    net, codec = parts
    cfg = StreamConfig(causal=CausalConfig(3, 1, 1, first_chunk_frames=1), steps=3, shift=5.0)
    n_chunks = 5  # 1 + 4*3 = 13 latents: the window rolls (evicts) twice
    causal = cfg.causal
    F = causal.chunk_start(n_chunks)
    T = chunk_pixel_frames(causal, n_chunks - 1)[1]
    image, text, lens, ids, tracks, vis = _inputs(T)
    engine = StreamingGenerator(net, codec, config=cfg)
    state = engine.start(image, text, lens, track_ids=ids, seed=7)
    _, latents, outs = collect(engine.stream(state, tracks_from_array(tracks, vis), num_chunks=n_chunks))
    assert latents.shape[2] == F and [o.nfe for o in outs] == [1] + [4] * (n_chunks - 1)

    # reference: whole-clip forwards with the block-causal mask, same noise draws in the same order
    with torch.no_grad():
        image_cond = i2v_condition(codec, image, num_frames=T)
        motion = track_features(state.cond, tracks, vis, embed_dim=net.track_embed_dim)
        sig = cfg.sigmas()
        gen = torch.Generator().manual_seed(7)
        clean = [codec.encode(image[:, :, None])]
        for i in range(1, n_chunks):
            s, f = causal.chunk_start(i), causal.chunk_len(i)
            lo, hi = chunk_pixel_frames(causal, i)
            x = torch.randn(B, 16, f, H // 8, W // 8, generator=gen)
            for k in range(cfg.steps):
                full = torch.cat(clean + [x], 2)
                t = torch.cat([torch.zeros(B, s), torch.full((B, f), float(sig[k]) * 1000)], 1)
                attn = BlockCausalAttention(causal, (s + f, H // 16, W // 16), net.dit.head_dim, backend="sdpa")
                v = net(
                    full,
                    t,
                    text=text,
                    text_lengths=lens,
                    image=image_cond[:, :, : s + f],
                    motion=motion[:, :, :hi],
                    attention=attn,
                )[:, :, s:]
                sigma = sig[k].float().expand(B)
                x0 = x0_from_velocity(x, v, sigma)
                if k < cfg.steps - 1:
                    x = add_noise(x0, torch.randn(x.shape, generator=gen), sig[k + 1].float().expand(B))
            clean.append(x0)
        ref = torch.cat(clean, 2)
    torch.testing.assert_close(latents, ref, atol=2e-4, rtol=1e-4)


def test_chunks_are_yielded_before_later_tracks_are_read(parts):
    net, codec = parts
    engine = StreamingGenerator(net, codec, config=StreamConfig())
    image, text, lens, ids, tracks, vis = _inputs(49)
    asked = []

    def source(i, span):
        asked.append(i)
        lo, hi = span
        return tracks[:, lo:hi], vis[:, lo:hi]

    state = engine.start(image, text, lens, track_ids=ids)
    sizes = []
    for out in engine.stream(state, source, num_chunks=5):
        assert asked == list(range(out.index + 1)), "the engine read tracks of a chunk not yet generated"
        sizes.append(out.frames.shape[2])
        assert out.frames.shape[-2:] == (H, W) and out.frames.abs().max() <= 1
    assert sizes == [1, 12, 12, 12, 12]


def test_later_tracks_only_change_later_chunks(parts):
    """Causality: editing the tracks of chunk 3 leaves chunks 0-2 bit-identical and changes chunk 3."""
    net, codec = parts
    engine = StreamingGenerator(net, codec, config=StreamConfig())
    image, text, lens, ids, tracks, vis = _inputs(49)
    edited = tracks.clone()
    lo, hi = engine.pixel_range(3)
    edited[:, lo:hi] = (edited[:, lo:hi] + 9.0) % W
    runs = []
    for tr in (tracks, edited):
        state = engine.start(image, text, lens, track_ids=ids, seed=3)
        runs.append(collect(engine.stream(state, tracks_from_array(tr, vis), num_chunks=5))[1])
    s3 = engine.causal.chunk_start(3)
    assert torch.equal(runs[0][:, :, :s3], runs[1][:, :, :s3])
    assert (runs[0][:, :, s3:] - runs[1][:, :, s3:]).abs().max() > 1e-4


@pytest.mark.slow
def test_memory_is_constant_and_decode_matches_full_decode(parts):
    net, codec = parts
    engine = StreamingGenerator(net, codec, config=StreamConfig())
    image, text, lens, ids, tracks, vis = _inputs(1)
    state = engine.start(image, text, lens, track_ids=ids)
    source = tracks_from_array(tracks, vis, hold_last=True)  # one frame of tracks, held still forever
    sizes, frames, latents, kept = [], [], [], {}
    for i in range(25):  # 1 + 24 * 12 = 289 frames
        kept[i] = state
        out, state = engine.step(state, *source(i, engine.pixel_range(i)))
        frames.append(out.frames)
        latents.append(out.latents)
        sizes.append((state_nbytes(state), state.cache.frames))
    assert state.chunk == 25 and state.frames_out == 289 and state.nfe == 1 + 24 * 4
    # sink (1 frame) + window (3 frames) once the window is full, from chunk 2 on: flat forever
    assert {s for s, _ in sizes[2:]} == {sizes[2][0]} and {f for _, f in sizes[2:]} == {4}
    video = torch.cat(frames, 2)
    assert video.shape[2] == 289
    torch.testing.assert_close(video, codec.decode(torch.cat(latents, 2)), atol=1e-5, rtol=1e-5)
    # states are immutable values: replaying a kept state reproduces its chunk exactly
    again, _ = engine.step(kept[20], *source(20, engine.pixel_range(20)))
    assert torch.equal(again.latents, latents[20]) and torch.equal(again.frames, frames[20])


def test_chunkwise_condition_equals_full_video_condition(parts):
    """Track head per chunk and streamed first-frame channels == the teacher's full-clip inputs."""
    net, codec = parts
    cfg = StreamConfig().causal
    n = 4
    T = chunk_pixel_frames(cfg, n - 1)[1]
    image, text, lens, ids, tracks, vis = _inputs(T)
    engine = StreamingGenerator(net, codec, config=StreamConfig())
    cond = engine.start(image, text, lens, track_ids=ids).cond
    assert cond.image_cond.done == 0  # no reference span: the channels are encoded as the chunks ask them
    with torch.no_grad():
        motion = track_features(cond, tracks, vis, embed_dim=net.track_embed_dim)
        parts_y = []
        for i in range(n):
            lo, hi = chunk_pixel_frames(cfg, i)
            parts_y.append(chunk_condition(net, cond, cfg, i, motion[:, :, lo:hi]))
        full_y = torch.cat([i2v_condition(codec, image, num_frames=T), net.motion_channels(motion, None)], 1)
    torch.testing.assert_close(torch.cat(parts_y, 2), full_y, atol=1e-5, rtol=1e-5)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="steps"):
        StreamConfig(steps=0)
    with pytest.raises(ValueError, match="sink_chunks"):
        StreamConfig(causal=CausalConfig(sink_chunks=-1))
    with pytest.raises(ValueError, match="first_chunk_frames"):
        StreamConfig(causal=CausalConfig(3, 1, 1, first_chunk_frames=2))  # chunk 0: the image latent or a chunk
    assert (
        StreamConfig(causal=CausalConfig(3, 1, 1, first_chunk_frames=None)).nfe_per_chunk(0) == 4
    )  # a sampled chunk 0 (image in y)
    assert StreamConfig(causal=CausalConfig(3, 1, 1, first_chunk_frames=1)).nfe_per_chunk(0) == 1
