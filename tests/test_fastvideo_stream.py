"""A Track-v0-configured stream in TrackStream equals FastVideo's causal WanTrack inference maths (fp32, CPU, a
shrunk bundle): the per-chunk track map, one block's forward once the cache has rolled, and a stream of blocks
[1] + [3] x 4 (the cache evicts three times) through ``denoise_chunk`` + ``commit_chunk`` on the reference step
and on the static-buffer step, for both RoPE policies.

FastVideo's side is re-stated here from its public code (read, not copied; /work/shared/reference/wantrack.md
§3.6, §4): the self-attention's in-place cache (causal_wanvideo.CausalWanSelfAttention.forward: a K/V buffer of
local_attn_size frames, global and local end indices, eviction by shifting left after the sink, the key window,
relativistic re-indexing of un-roped keys or absolute RoPE with roped keys stored) and the per-block loop of
wantrack_causal_denoising (timesteps warped through FlowMatchEulerDiscreteScheduler(shift=6), x0 = x - sigma v,
re-noising with fresh noise, a commit pass at t = 0 on the clean block at the same start; the track map encoded
over the whole sequence and sliced per block). It reuses our DiT's layers (parity-tested against diffusers
elsewhere) through a self-attention function of its own, never models.causal / stream_buffers / the engine.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from release_helpers import write_wantrack_bundle
from safetensors.torch import load_file
from test_wantrack import their_track_map

from trackstream.models.causal import CausalConfig, stream_step
from trackstream.models.motion_wan import load_wantrack
from trackstream.models.stream_buffers import StepBuffers
from trackstream.models.streaming import StreamConfig
from trackstream.models.wan import apply_rope, grid_positions, rope_cos_sin
from trackstream.stream.chunks import (
    VideoCondition,
    chunk_condition,
    chunk_pixel_frames,
    commit_chunk,
    denoise_chunk,
    start_cache,
    track_features,
)

LOCAL, SINK, BLOCK = 6, 1, 3  # their local_attn_size, sink_size, num_frames_per_block (latent frames)
BLOCKS = [1] + [BLOCK] * 4
B, N, h, w = 1, 5, 4, 6  # latent grid 4 x 6 (patch 2: 2 x 3 tokens a frame)
TOL = 2e-6  # relative to the output's scale (measured <= 4e-7): float32 reduction order only


def their_timesteps(shift=6.0, steps=(1000, 750, 500, 250)):
    """FlowMatchEulerDiscreteScheduler(shift).set_timesteps(1000) (the training grid shifted, the inference grid
    spanning its ends shifted again), warped: cat(timesteps, [0])[1000 - steps]."""

    def sh(s):
        return shift * s / (1 + (shift - 1) * s)

    train = sh(np.linspace(1, 1000, 1000)[::-1] / 1000)
    ts = sh(np.linspace(train[0] * 1000, train[-1] * 1000, 1000) / 1000) * 1000
    return np.append(ts, 0.0)[1000 - np.array(steps)]


class TheirAttention:
    """CausalWanSelfAttention.forward with a kv_cache, for one DiT call at ``current_start`` (tokens)."""

    def __init__(self, caches, current_start, start_frame, grid, head_dim, policy):
        self.caches, self.start, self.policy, self.head_dim = caches, current_start, policy, head_dim
        f, hh, ww = grid
        self.fs = hh * ww  # frame_seqlen
        self.cos, self.sin = rope_cos_sin(grid_positions(grid, start_frame), head_dim)  # the block's own frames
        self.wcos, self.wsin = rope_cos_sin(grid_positions((LOCAL, hh, ww)), head_dim)  # relativistic table

    def __call__(self, layer, q, k, v):
        c, n = self.caches[layer], q.shape[1]
        relativistic = self.policy == "relativistic"
        if not relativistic:
            q = apply_rope(q, self.cos, self.sin)
            k = apply_rope(k, self.cos, self.sin)  # roped keys are stored
        end, sink, budget = self.start + n, SINK * self.fs, LOCAL * self.fs
        size, g, loc = c["k"].shape[1], c["global_end_index"], c["local_end_index"]
        if end > g and n + loc > size:  # evict: shift what follows the sink left
            ev = n + loc - size
            rolled = loc - ev - sink
            for key in ("k", "v"):
                c[key][:, sink : sink + rolled] = c[key][:, sink + ev : sink + ev + rolled].clone()
            loc_new = loc + end - g - ev
        else:
            loc_new = loc + end - g
        c["k"][:, loc_new - n : loc_new] = k
        c["v"][:, loc_new - n : loc_new] = v
        lo = max(0, loc_new - budget)
        if sink > 0 and lo > 0:
            keys = torch.cat([c["k"][:, :sink], c["k"][:, loc_new - (budget - sink) : loc_new]], 1)
            vals = torch.cat([c["v"][:, :sink], c["v"][:, loc_new - (budget - sink) : loc_new]], 1)
        else:
            keys, vals = c["k"][:, lo:loc_new], c["v"][:, lo:loc_new]
        if relativistic:  # the window at positions 0..len-1, the query at its tail
            wl = min(loc_new, budget)
            q = apply_rope(q, self.wcos[wl - n : wl], self.wsin[wl - n : wl])
            keys = apply_rope(keys, self.wcos[:wl], self.wsin[:wl])
        out = F.scaled_dot_product_attention(q.transpose(1, 2), keys.transpose(1, 2), vals.transpose(1, 2))
        c["global_end_index"], c["local_end_index"] = end, loc_new
        return out.transpose(1, 2)


def their_call(dit, caches, x, y, t, start_frame, policy, text, clip):
    """One DiT call with their cache: x [B, 16, f, h, w], y [B, 36, f, h, w], t a float timestep -> v."""
    tokens, grid = dit.patchify(x, y)
    e, e0 = dit.time_embed(torch.full((x.shape[0],), float(t)), x.shape[0], x.shape[2])
    ctx_kv = dit.context_kv(*dit.embed_context(text, clip))
    tpf = grid[1] * grid[2]
    attn = TheirAttention(caches, start_frame * tpf, start_frame, grid, dit.head_dim, policy)
    return dit.unpatchify(dit.head(dit.run_blocks(tokens, e0, ctx_kv, attn, tpf), e, tpf), grid)


def their_stream(dit, eps, image, track_map, timesteps, policy, text, clip, probe=None):
    """Their per-block loop -> the clean latents [B, 16, F, h, w] (and a probe pass's v at block ``probe[0]``)."""
    tpf = (h // 2) * (w // 2)
    shape = (B, LOCAL * tpf, dit.num_heads, dit.head_dim)
    caches = [
        {"k": torch.zeros(shape), "v": torch.zeros(shape), "global_end_index": 0, "local_end_index": 0}
        for _ in range(dit.num_layers)
    ]
    out, start, noise, probed = [], 0, iter(eps), None
    sig = [float(t) / 1000 for t in timesteps]
    for f in BLOCKS:
        y = torch.cat([image[:, :, start : start + f], track_map[:, :, start : start + f]], 1)
        if probe is not None and len(out) == probe[0]:
            probed = their_call(dit, copy.deepcopy(caches), probe[1], y, probe[2], start, policy, text, clip)
        x = next(noise)
        for i, t in enumerate(timesteps):
            v = their_call(dit, caches, x, y, t, start, policy, text, clip)
            x0 = x - sig[i] * v
            x = (1 - sig[i + 1]) * x0 + sig[i + 1] * next(noise) if i < len(timesteps) - 1 else x0
        their_call(dit, caches, x, y, 0.0, start, policy, text, clip)  # commit the clean block
        out.append(x)
        start += f
    return torch.cat(out, 2), probed


def our_stream(net, cfg, cond, eps, tracks, vis, buffers, probe=None):
    """denoise_chunk + commit_chunk over the chunks of ``cfg`` -> clean latents, the chunks' y and a probe's v."""
    cache, noise, out, ys, probed = start_cache(net, cond, cfg.causal), iter(eps), [], [], None
    sigmas = cfg.sigmas().float()
    for i in range(len(BLOCKS)):
        lo, hi = chunk_pixel_frames(cfg.causal, i)
        motion = track_features(cond, tracks[:, lo:hi], vis[:, lo:hi], embed_dim=64, convention="fastvideo")
        y = chunk_condition(net, cond, cfg.causal, i, motion)
        if probe is not None and i == probe[0]:
            probed = stream_step(net.dit, cache, probe[1], torch.full((B,), probe[2]), y=y, buffers=buffers).pred
        x0 = denoise_chunk(net, cache, next(noise), y, sigmas, fresh_noise=lambda: next(noise), buffers=buffers)
        cache = commit_chunk(net, cache, x0, y, buffers=buffers)
        out.append(x0)
        ys.append(y)
    return torch.cat(out, 2), ys, probed, cache


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = write_wantrack_bundle(tmp_path_factory.mktemp("fv") / "student", role="student", bias=True)
    raw = load_file(str(root / "transformer" / "model.safetensors"))
    return load_wantrack(root).eval(), {k.split("track_encoder.")[1]: v for k, v in raw.items() if "track_enc" in k}


def test_their_timesteps_are_the_reference_values():
    np.testing.assert_allclose(their_timesteps(), [1000.0, 947.70, 858.36, 671.05], atol=6e-3)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["relativistic", "absolute"])
def test_track_v0_stream_equals_their_maths(bundle, policy):
    net, convs = bundle
    dit = net.dit
    timesteps = their_timesteps()
    causal = CausalConfig(3, SINK, None, 1, window_frames=LOCAL - SINK - BLOCK, first_chunk_sampled=True, rope=policy)
    cfg = StreamConfig(causal, steps=4, shift=6.0, sigma_list=tuple(float(t) / 1000 for t in timesteps))
    F_lat = sum(BLOCKS)
    H, W, T = 8 * h, 8 * w, 1 + 4 * (F_lat - 1)
    g = torch.Generator().manual_seed(0)
    text, clip = torch.randn(B, 8, dit.text_dim, generator=g), torch.randn(B, 257, 1280, generator=g)
    image = torch.randn(B, 20, F_lat, h, w, generator=g)  # their image_latent: I2V mask 4 | first-frame latent 16
    tracks = torch.rand(B, T, N, 2, generator=g) * torch.tensor([W * 1.2, H * 1.2]) - torch.tensor([W * 0.1, H * 0.1])
    vis = torch.rand(B, T, N, generator=g) > 0.2
    ids = torch.randint(0, 100000, (B, N), generator=g)
    eps = [torch.randn(B, 16, f, h, w, generator=g) for f in BLOCKS for _ in range(4)]  # init + 3 re-noisings
    probe = (3, torch.randn(B, 16, BLOCK, h, w, generator=g), 500.0)  # block 3: the cache has rolled twice

    with torch.no_grad():
        tw, pw = convs["temporal_conv.weight"], convs["proj.weight"]
        tb, pb = convs["temporal_conv.bias"], convs["proj.bias"]
        track_map = their_track_map(tracks / torch.tensor([W, H]), vis.float(), ids, h, w, tw, tb, pw, pb)
        theirs, their_probe = their_stream(dit, eps, image, track_map, timesteps, policy, text, clip, probe)
        cond = VideoCondition(
            context=net.project_text(text, torch.tensor([8])),
            image_latent=image[:, 4:, :1],
            image_cond=image,
            track_ids=ids,
            height=H,
            width=W,
            image_features=clip,
        )
        runs = {}
        for name, bufs in (("reference", None), ("buffers", StepBuffers(dit, causal))):
            runs[name] = our_stream(net, cfg, cond, eps, tracks, vis, bufs, probe)
    # (a) each chunk's y: their 20 image channels and their map of the whole video, sliced
    start = 0
    for f, y in zip(BLOCKS, runs["reference"][1]):
        want = torch.cat([image[:, :, start : start + f], track_map[:, :, start : start + f]], 1)
        torch.testing.assert_close(y, want, rtol=0, atol=1e-4 * track_map.abs().max().item())
        start += f
    scale = theirs.abs().max().item()
    assert scale > 0.1 and runs["reference"][3].frames == LOCAL - BLOCK  # the window stays 6 frames with the block
    for name, (ours, _, probed, _) in runs.items():
        # (b) one block's forward on a rolled cache, (c) the whole stream
        err_b = (probed - their_probe).abs().max().item() / their_probe.abs().max().item()
        err_c = (ours - theirs).abs().max().item() / scale
        assert err_b <= TOL and err_c <= TOL, f"{policy} {name}: probe {err_b:.1e}, stream {err_c:.1e} (relative)"
