"""Tracks: ID embeddings, rasterisation (eq. 1), track head, zero-init patch expansion, masking."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from trackstream.models.channel_layouts import compose_condition, expand_patch_embedding
from trackstream.models.flavors import build_wan
from trackstream.models.tracks import (
    TrackEncoder,
    TrackHead,
    mask_mid_frames,
    rasterize_tracks,
    sample_track_ids,
    track_id_embedding,
)


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Official init zeroes the output head (output == 0); give every weight a random value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


# ----------------------------------------------------------------------------- IDs / embeddings


def test_track_ids_distinct_resampled_and_deterministic():
    ids = sample_track_ids(3, 500, id_range=1000, generator=torch.Generator().manual_seed(1))
    assert ids.shape == (3, 500) and ids.dtype == torch.long
    assert all(len(set(row.tolist())) == 500 for row in ids)  # distinct within a sample
    assert not torch.equal(ids[0], ids[1])  # resampled per sample
    again = sample_track_ids(3, 500, id_range=1000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ids, again)
    assert ids.min() >= 0 and ids.max() < 1000
    with pytest.raises(ValueError, match="id_range"):
        sample_track_ids(1, 11, id_range=10)


def test_track_id_embedding_is_sinusoidal_and_separates_ids():
    ids = torch.arange(4096)
    emb = track_id_embedding(ids, 64)
    assert emb.shape == (4096, 64) and emb.dtype == torch.float32
    # [sin | cos] pairs: every embedding has norm sqrt(32)
    torch.testing.assert_close(emb.norm(dim=1), torch.full((4096,), 32**0.5))
    assert torch.allclose(emb[0, :32], torch.zeros(32)) and torch.allclose(emb[0, 32:], torch.ones(32))
    # distinct IDs give clearly distinct vectors (min pairwise distance over a sample of pairs)
    d = torch.cdist(emb[:512], emb[:512]) + torch.eye(512) * 1e3
    assert d.min() > 0.5


# ----------------------------------------------------------------------------- rasterisation


def test_rasterize_hand_placed_tracks_land_on_expected_cells():
    # 32x32 pixels -> 4x4 latent cells of 8 px; 5 frames; one-hot "embeddings" name each track.
    T, N, D = 5, 5, 8
    tracks = torch.zeros(1, T, N, 2)
    vis = torch.ones(1, T, N, dtype=torch.bool)
    tracks[0, :, 0] = torch.tensor([3.5, 10.0])  # static: cell (row 1, col 0)
    for t in range(T):
        tracks[0, t, 1] = torch.tensor([8.0 * t + 1.0, 31.9])  # moves right along the bottom row
    tracks[0, :, 2] = torch.tensor([20.0, 20.0])  # cell (2, 2), hidden at frame 2
    vis[0, 2, 2] = False
    tracks[0, :, 3] = torch.tensor([-0.5, 5.0])  # left of the frame at every step
    tracks[0, :, 4] = torch.tensor([7.9, 15.9])  # same cell as track 0 -> collision (sum)
    emb = torch.eye(N, D)  # track n writes a 1 in channel n
    out = rasterize_tracks(tracks, vis, emb, height=32, width=32)
    assert out.shape == (1, D, T, 4, 4)

    expected = torch.zeros(1, D, T, 4, 4)
    expected[0, 0, :, 1, 0] = 1
    expected[0, 4, :, 1, 0] = 1
    for t in range(4):  # x = 33 at t = 4 is outside the 32-px frame
        expected[0, 1, t, 3, t] = 1
    expected[0, 2, :, 2, 2] = 1
    expected[0, 2, 2, 2, 2] = 0
    assert torch.equal(out, expected)

    # collisions sum the embeddings of the tracks sharing a cell
    phi = track_id_embedding(torch.tensor([[7, 900, 1, 2, 3]]))
    out = rasterize_tracks(tracks, vis, phi, height=32, width=32)
    torch.testing.assert_close(out[0, :, 0, 1, 0], phi[0, 0] + phi[0, 4])
    torch.testing.assert_close(out[0, :, 3, 3, 3], phi[0, 1])
    assert out[0, :, 4].abs().sum(dim=0)[3].sum() == 0  # track 1 left the frame; nothing on row 3


def test_rasterize_boundaries_nan_batch_and_errors():
    tracks = torch.tensor([[[[31.999, 0.0], [32.0, 0.0], [0.0, -0.001], [float("nan"), 4.0], [0.0, 0.0]]]])
    vis = torch.ones(1, 1, 5, dtype=torch.bool)
    out = rasterize_tracks(tracks, vis, torch.eye(5), height=32, width=32)
    written = out[0, :, 0].sum(dim=(1, 2))
    assert written.tolist() == [1, 0, 0, 0, 1]
    assert out[0, 0, 0, 0, 3] == 1 and out[0, 4, 0, 0, 0] == 1
    # batch entries are independent: the second sample's points do not leak into the first
    tr2 = torch.cat([tracks, tracks + 8.0])
    out2 = rasterize_tracks(tr2, vis.expand(2, -1, -1), torch.eye(5), height=32, width=32)
    assert torch.equal(out2[:1], out)
    assert not torch.equal(out2[1], out[0])
    with pytest.raises(ValueError, match="multiples"):
        rasterize_tracks(tracks, vis, torch.eye(5), height=30, width=32)
    with pytest.raises(ValueError, match="visibility"):
        rasterize_tracks(tracks, vis[:, :, :3], torch.eye(5), height=32, width=32)


# ----------------------------------------------------------------------------- track head


def test_track_head_groups_frames_like_the_codec():
    torch.manual_seed(0)
    head = TrackHead(8, 3)
    feats = torch.randn(2, 8, 9, 4, 6)  # T = 9 -> 1 + 2 latents
    out = head(feats)
    assert out.shape == (2, 3, 3, 4, 6)
    # explicit reference: latent 0 = frame 0 in all 4 slots, latent j = frames 4j-3..4j
    w = head.proj.weight[:, :, 0, 0, 0].view(3, 8, 4)  # [C, D, slot] (channel = d*4 + slot)
    groups = [feats[:, :, [0, 0, 0, 0]], feats[:, :, 1:5], feats[:, :, 5:9]]
    ref = torch.stack([torch.einsum("bdshw,cds->bchw", g, w) for g in groups], dim=2)
    torch.testing.assert_close(out, ref)
    # causal and chunk-wise: changing frame 7 only changes latent 2
    feats2 = feats.clone()
    feats2[:, :, 7] += 1.0
    out2 = head(feats2)
    assert torch.equal(out2[:, :, :2], out[:, :, :2]) and not torch.equal(out2[:, :, 2], out[:, :, 2])
    # no bias: no tracks -> exactly zero features
    assert torch.equal(head(torch.zeros(1, 8, 5, 2, 2)), torch.zeros(1, 3, 2, 2, 2))
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        head(torch.zeros(1, 8, 6, 2, 2))
    # streaming: first chunk (1 + 4 frames) then a chunk of 4 frames == the whole sequence
    chunked = torch.cat([head(feats[:, :, :5]), head(feats[:, :, 5:], has_first_frame=False)], dim=2)
    torch.testing.assert_close(chunked, out, rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiple of 4"):
        head(feats[:, :, 5:8], has_first_frame=False)


def test_track_encoder_shapes_determinism_and_id_reuse():
    torch.manual_seed(0)
    enc = TrackEncoder(16)
    g = torch.Generator().manual_seed(3)
    tracks = torch.rand(2, 17, 300, 2) * torch.tensor([64.0, 48.0])
    vis = torch.rand(2, 17, 300) > 0.2
    out = enc(tracks, vis, height=48, width=64, generator=g)
    assert out.shape == (2, 16, 5, 6, 8)
    out_b = enc(tracks, vis, height=48, width=64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, out_b)
    ids = sample_track_ids(2, 300, generator=torch.Generator().manual_seed(9))
    assert torch.equal(enc(tracks, vis, height=48, width=64, ids=ids), enc(tracks, vis, height=48, width=64, ids=ids))
    # no tracks at all
    empty = enc(torch.zeros(2, 17, 0, 2), torch.zeros(2, 17, 0, dtype=torch.bool), height=48, width=64)
    assert torch.equal(empty, torch.zeros(2, 16, 5, 6, 8))


# ----------------------------------------------------------------------------- zero-init identity


@pytest.mark.slow
@pytest.mark.parametrize("flavor", ["tiny", "tiny-i2v"])
def test_zero_track_identity_with_base_weights(flavor, tmp_path):
    """A base checkpoint loaded into a track-conditioned model gives EXACTLY the base output."""
    base = _randomise(build_wan(flavor))
    ckpt = tmp_path / "base.pt"
    torch.save(base.state_dict(), ckpt)

    g = torch.Generator().manual_seed(0)
    B, T, H, W = 1, 9, 64, 64
    x = torch.randn(B, 16, 3, H // 8, W // 8, generator=g)
    t = torch.tensor([700])
    ctx = torch.randn(B, 7, 64, generator=g)
    clip, first = None, None
    if flavor == "tiny-i2v":
        clip = torch.randn(B, 257, 1280, generator=g)
        first = torch.randn(B, 20, 3, H // 8, W // 8, generator=g)
    layout = "wan_i2v" if first is not None else "t2v"
    with torch.no_grad():
        ref = base(x, t, ctx, clip, compose_condition(layout, first_frame=first))

    # a fresh model of the base flavor loads the checkpoint strictly, then grows its input
    model = build_wan(flavor)
    model.load_state_dict(torch.load(ckpt, weights_only=True), strict=True)
    expand_patch_embedding(model, 16)
    model.eval()
    assert model.in_dim == base.in_dim + 16
    enc = TrackEncoder(16)
    tracks = torch.rand(B, T, 200, 2, generator=g) * H
    vis = torch.ones(B, T, 200, dtype=torch.bool)
    with torch.no_grad():
        no_tracks = enc(tracks, torch.zeros_like(vis), height=H, width=W)
        with_tracks = enc(tracks, vis, height=H, width=W, generator=g)
        assert with_tracks.abs().sum() > 0
        for feats in (no_tracks, with_tracks, torch.zeros_like(with_tracks)):
            out = model(x, t, ctx, clip, compose_condition(layout, first_frame=first, track=feats))
            assert torch.equal(out, ref)
        # the new channels are live: once their weights move, tracks change the output ...
        model.patch_embedding.weight[:, -16:].normal_(0, 0.05)
        moved = model(x, t, ctx, clip, compose_condition(layout, first_frame=first, track=with_tracks))
        assert not torch.allclose(moved, ref)
        # ... but "no tracks" (zero features, bias-free head) still reproduces the base model
        out = model(x, t, ctx, clip, compose_condition(layout, first_frame=first, track=no_tracks))
        assert torch.equal(out, ref)


def test_expand_patch_embedding_position_grad_and_errors():
    model = _randomise(build_wan("tiny"))
    w0 = model.patch_embedding.weight.detach().clone()
    expand_patch_embedding(model, 3, position=4)
    w = model.patch_embedding.weight
    assert w.shape[1] == 19 and model.in_dim == 19
    assert torch.equal(w[:, :4], w0[:, :4]) and torch.equal(w[:, 7:], w0[:, 4:])
    assert torch.equal(w[:, 4:7], torch.zeros_like(w[:, 4:7]))
    assert w.requires_grad
    # gradients reach the zero-initialised weights (so they can learn)
    x = torch.randn(1, 19, 1, 4, 4)
    model.patch_embedding(x).sum().backward()
    assert w.grad[:, 4:7].abs().sum() > 0
    with pytest.raises(ValueError, match="position"):
        expand_patch_embedding(model, 2, position=99)
    # meta-device models (real flavors) expand without allocating
    big = build_wan("wan2.1-t2v-1.3b")
    expand_patch_embedding(big, 16)
    assert big.patch_embedding.weight.is_meta and big.patch_embedding.weight.shape == (1536, 32, 1, 2, 2)


# ----------------------------------------------------------------------------- mid-frame masking


def _hidden_frames(vis_before: torch.Tensor, vis_after: torch.Tensor) -> list[int]:
    return [t for t in range(vis_before.shape[0]) if not torch.equal(vis_before[t], vis_after[t])]


def test_mask_mid_frames_zeroes_whole_middle_groups():
    T, N = 17, 50  # 5 groups: {0}, 1-4, 5-8, 9-12, 13-16
    tracks = torch.rand(T, N, 2) * 32
    vis = torch.ones(T, N, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    chunks = set()
    for _ in range(300):
        tr, v = mask_mid_frames(tracks, vis, p=1.0, generator=g)
        assert tr is tracks and v.shape == vis.shape
        hidden = _hidden_frames(vis, v)
        assert hidden, "p=1 must always mask"
        assert not v[hidden].any()  # all tracks hidden on the chunk
        assert hidden == list(range(hidden[0], hidden[-1] + 1))  # one contiguous chunk
        assert (hidden[0] - 1) % 4 == 0 and hidden[-1] % 4 == 0  # whole latent groups
        assert hidden[0] >= 1 and hidden[-1] <= 12  # first frame and last group kept
        chunks.add((hidden[0], hidden[-1]))
    # every run of middle groups is reachable: (1..4), (1..8), (1..12), (5..8), (5..12), (9..12)
    assert chunks == {(1, 4), (1, 8), (1, 12), (5, 8), (5, 12), (9, 12)}

    # the encoded track signal is exactly zero on the masked latent frames, untouched elsewhere
    enc = TrackEncoder(8)
    ids = sample_track_ids(1, N, generator=torch.Generator().manual_seed(1))
    _, v = mask_mid_frames(tracks, vis, p=1.0, generator=torch.Generator().manual_seed(5))
    hidden = _hidden_frames(vis, v)
    lat = sorted({1 + (t - 1) // 4 for t in hidden})
    full = enc(tracks[None], vis[None], height=32, width=32, ids=ids)
    masked = enc(tracks[None], v[None], height=32, width=32, ids=ids)
    keep = [f for f in range(5) if f not in lat]
    assert torch.equal(masked[:, :, lat], torch.zeros_like(masked[:, :, lat]))
    assert torch.equal(masked[:, :, keep], full[:, :, keep])


def test_mask_mid_frames_probability_batch_unit_and_short_clips():
    T, N = 17, 4
    tracks = torch.zeros(400, T, N, 2)
    vis = torch.ones(400, T, N, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    _, v = mask_mid_frames(tracks, vis, p=0.2, generator=g)
    frac = (~v).flatten(1).any(dim=1).float().mean().item()
    assert 0.14 < frac < 0.26  # Binomial(400, 0.2): 3 sigma ~ 0.06
    _, v0 = mask_mid_frames(tracks, vis, p=0.0, generator=g)
    assert torch.equal(v0, vis)
    # unit=1: single middle frames, first and last frame never hidden
    _, v1 = mask_mid_frames(tracks[:50], vis[:50], p=1.0, unit=1, generator=g)
    assert v1[:, 0].all() and v1[:, -1].all() and not v1[:, 1:-1].all()
    # 5 frames = 2 groups: no middle group, nothing to mask
    _, v5 = mask_mid_frames(tracks[:3, :5], vis[:3, :5], p=1.0, generator=g)
    assert v5.all()
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        mask_mid_frames(tracks[:, :6], vis[:, :6], p=1.0)
    with pytest.raises(ValueError, match="p="):
        mask_mid_frames(tracks, vis, p=1.5)


def test_region_dropout_hides_the_tracks_that_start_in_one_box():
    from trackstream.models.tracks import drop_region

    g = torch.Generator().manual_seed(0)
    B, T, N = 64, 5, 400
    tracks = torch.rand(B, T, N, 2, generator=g) * 64
    vis = torch.ones(B, T, N, dtype=torch.bool)
    vis[:, 0, :10] = False  # these start at frame 1: their box test uses frame 1's position
    out = drop_region(tracks, vis, p=0.5, size=(0.3, 0.6), height=64, width=64, generator=g)
    hidden = ~out.any(dim=1) & vis.any(dim=1)  # [B, N] tracks hidden for the whole clip
    dropped = hidden.any(dim=1)
    assert 16 < int(dropped.sum()) < 48  # about half the samples
    for b in torch.nonzero(dropped).flatten().tolist():
        first = torch.where(vis[b, 0], 0, 1)  # [N]
        start = tracks[b, first, torch.arange(N)]  # [N, 2]
        x, y = start[hidden[b], 0], start[hidden[b], 1]
        box = (x.min(), x.max(), y.min(), y.max())
        inside = (start[:, 0] >= box[0]) & (start[:, 0] <= box[1]) & (start[:, 1] >= box[2]) & (start[:, 1] <= box[3])
        assert torch.equal(inside, hidden[b])  # exactly the tracks starting in one axis-aligned box
        assert 0.25 * 64 < float(box[1] - box[0]) < 0.6 * 64  # about the drawn side (points are random)
    assert torch.equal(out[~dropped], vis[~dropped])  # other samples untouched


def test_bilinear_splat_keeps_each_points_mass_and_says_where_it_is_inside_a_cell():
    emb = torch.eye(2)  # point 0 writes [1, 0], point 1 writes [0, 1]
    vis = torch.ones(1, 1, 2, dtype=torch.bool)
    kw = dict(height=16, width=16, spatial_factor=4)
    # cell i's centre is pixel 4 i + 1.5: a point there writes like the nearest cell
    at_centre = torch.tensor([[[[5.5, 9.5], [13.5, 1.5]]]])
    torch.testing.assert_close(
        rasterize_tracks(at_centre, vis, emb, splat="bilinear", **kw), rasterize_tracks(at_centre, vis, emb, **kw)
    )
    # half-way between the centres of cells 1 and 2 (x = 7.5): half in each; a quarter past (x = 6.5): 3/4, 1/4
    half = rasterize_tracks(torch.tensor([[[[7.5, 5.5], [6.5, 5.5]]]]), vis, emb, splat="bilinear", **kw)
    assert half[0, 0, 0, 1, 1] == 0.5 and half[0, 0, 0, 1, 2] == 0.5
    assert half[0, 1, 0, 1, 1] == 0.75 and half[0, 1, 0, 1, 2] == 0.25
    assert torch.allclose(half.sum(dim=(2, 3, 4)), torch.ones(1, 2))  # each point's mass is 1
    # at the border (x = 0.2 lies before cell 0's centre) the outer weight stays on the border cell
    edge = rasterize_tracks(torch.tensor([[[[0.2, 0.2], [15.9, 15.9]]]]), vis, emb, splat="bilinear", **kw)
    assert edge[0, 0, 0, 0, 0] == 1 and edge[0, 1, 0, 3, 3] == 1
    # a move of 1 px inside a cell: nearest cells do not see it, bilinear weights do
    a, b = torch.tensor([[[[4.5, 5.5]]]]), torch.tensor([[[[5.5, 5.5]]]])
    one, e1 = vis[:, :, :1], emb[:1]
    assert torch.equal(rasterize_tracks(a, one, e1, **kw), rasterize_tracks(b, one, e1, **kw))
    assert not torch.equal(
        rasterize_tracks(a, one, e1, splat="bilinear", **kw), rasterize_tracks(b, one, e1, splat="bilinear", **kw)
    )
    # invisible points write nothing either way
    assert rasterize_tracks(at_centre, ~vis, emb, splat="bilinear", **kw).abs().sum() == 0
    with pytest.raises(ValueError, match="splat"):
        rasterize_tracks(at_centre, vis, emb, splat="gauss", **kw)


def test_the_splat_travels_with_the_network(tmp_path):
    from trackstream.models.motion_wan import ModelConfig, build_motion_wan, load_network, save_network

    with pytest.raises(ValueError, match="model.track_splat"):
        ModelConfig(track_splat="area")
    net = build_motion_wan(ModelConfig(track_splat="bilinear"), text_encoder_dim=384)
    assert net.track_splat == "bilinear" and net.track_encoder.splat == "bilinear"
    save_network(
        net.state_dict(),
        tmp_path / "net",
        model_cfg=dataclasses.asdict(ModelConfig(track_splat="bilinear")),
        text_encoder_dim=384,
        ema=False,
    )
    assert load_network(tmp_path / "net").track_splat == "bilinear"
