"""Schedule (eq. A1-A2), joint-guidance samplers (eq. 2), the teacher objective and network."""

import dataclasses

import pytest
import torch

from trackstream.diffusion.samplers import (
    Condition,
    GuidanceConfig,
    SamplerConfig,
    guided_velocity,
    mix_text,
    nfe_per_step,
    sample,
)
from trackstream.diffusion.schedule import (
    add_noise,
    loss_weight,
    sample_training_sigmas,
    sampling_sigmas,
    shift_sigma,
    unshift_sigma,
    velocity_target,
    x0_from_velocity,
)
from trackstream.models.conditioner import encode_motion
from trackstream.models.motion_wan import Conventions, ModelConfig, build_motion_wan, load_network
from trackstream.train.teacher.objective import FlowMatchingObjective, TeacherConfig
from trackstream.trainer.weights import export_network, initialise

# ----------------------------------------------------------------------------- schedule


def test_shift_fixes_endpoints_is_monotone_and_invertible():
    s = torch.linspace(0, 1, 101, dtype=torch.float64)
    for k in (1.0, 3.0, 6.0):
        sig = shift_sigma(s, k)
        assert sig[0] == 0 and sig[-1] == 1 and torch.all(sig[1:] > sig[:-1])
        torch.testing.assert_close(unshift_sigma(sig, k), s)
    assert torch.all(shift_sigma(s[1:-1], 6.0) > s[1:-1])  # k > 1 moves mass to high noise


def test_sampling_grid_reproduces_wans_timesteps():
    # Wan 2.1's official grid (FlowUniPCMultistepScheduler, set_timesteps(N, shift)): N = 50, shift 5, s = linspace(0.999, 0, N+1)[:N]; t = int(1000 sigma)
    t = (sampling_sigmas(50, shift=5.0, sigma_max=0.999)[:-1] * 1000).long().tolist()
    assert t[:6] == [999, 995, 991, 987, 982, 978] and t[-6:] == [405, 356, 302, 241, 172, 92]
    grid = sampling_sigmas(4, shift=1.0)
    assert grid.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_training_sigmas_follow_the_shifted_distribution():
    g = torch.Generator().manual_seed(0)
    sig = sample_training_sigmas(200_000, shift=3.0, generator=g)
    # P(sigma <= shift(u)) = u
    for u in (0.1, 0.5, 0.9):
        assert abs((sig <= shift_sigma(u, 3.0)).double().mean().item() - u) < 0.005
    assert sample_training_sigmas(4, shift=3.0, generator=g, num_frames=5).shape == (4, 5)


@pytest.mark.parametrize("shift", [1.0, 5.0])
def test_bell_weighting_has_mean_one_and_peaks_mid_noise(shift):
    g = torch.Generator().manual_seed(1)
    sig = sample_training_sigmas(400_000, shift=shift, generator=g).double()
    w = loss_weight(sig, weighting="bell", shift=shift)
    assert abs(w.mean().item() - 1) < 0.01
    grid = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    wg = loss_weight(grid, weighting="bell", shift=shift)
    assert wg[2] == wg.max() and wg[0] == 0 and wg[-1] == 0
    assert torch.equal(loss_weight(grid, weighting="uniform", shift=shift), torch.ones(5))


def test_noise_velocity_and_x0_are_consistent():
    x0, eps = torch.randn(2, 16, 3, 4, 4), torch.randn(2, 16, 3, 4, 4)
    sigma = torch.tensor([0.3, 0.9])
    x = add_noise(x0, eps, sigma)
    torch.testing.assert_close(x0_from_velocity(x, velocity_target(x0, eps), sigma), x0)
    per_frame = torch.tensor([[0.0, 0.5, 1.0]] * 2)
    xf = add_noise(x0, eps, per_frame)
    torch.testing.assert_close(xf[:, :, 0], x0[:, :, 0]) and torch.testing.assert_close(xf[:, :, 2], eps[:, :, 2])


# ----------------------------------------------------------------------------- guidance / samplers


class Affine(torch.nn.Module):
    """v = a*x + text_term + motion_term: lets the test read which conditions each term saw."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, t, *, text, text_lengths, image=None, motion=None):
        self.calls += 1
        tt = text.sum(dim=(1, 2)).view(-1, 1, 1, 1, 1)
        mm = motion.sum(dim=(1, 2, 3, 4)).view(-1, 1, 1, 1, 1) if motion is not None else 0.0
        return 0.5 * x + tt + 10 * mm


def _cond(B=2):
    return Condition(
        text=torch.ones(B, 3, 2),
        text_lengths=torch.full((B,), 3),
        null_text=torch.zeros(1, 1, 2),
        null_text_lengths=torch.ones(1, dtype=torch.long),
        motion=torch.ones(B, 4, 5, 2, 2) / 80,
    )


def test_joint_guidance_matches_equation_2_in_one_forward():
    model, x, cond = Affine(), torch.zeros(2, 16, 2, 2, 2), _cond()
    wt, wm = 3.0, 1.5
    v = guided_velocity(model, x, torch.full((2,), 0.5), cond, GuidanceConfig("joint", wt, wm))
    assert model.calls == 1  # all three terms batched
    v_c, v_t0, v_m0 = 6.0 + 10.0, 0.0 + 10.0, 6.0 + 0.0  # v(ct,cm), v(0,cm), v(ct,0)
    a = wt / (wt + wm)
    expected = a * v_t0 + (1 - a) * v_m0 + wt * (v_c - v_t0) + wm * (v_c - v_m0)
    torch.testing.assert_close(v, torch.full_like(v, expected))


def test_guidance_without_motion_runs_each_distinct_term_once():
    # no tracks: v(ct,cm) = v(ct,0), so joint guidance needs 2 distinct terms, with the same result
    # as evaluating all three (equation 2 with v(ct,0) in both places)
    x, s = torch.randn(2, 16, 2, 2, 2), torch.full((2,), 0.5)
    cond = dataclasses.replace(_cond(), motion=None)
    batches = []

    class Counting(Affine):
        def forward(self, x, t, **kw):
            batches.append(x.shape[0])
            return super().forward(x, t, **kw)

    wt, wm = 3.0, 1.5
    v = guided_velocity(Counting(), x, s, cond, GuidanceConfig("joint", wt, wm))
    assert batches == [4]  # 2 distinct terms x B = 2
    v_c, v_t0 = 0.5 * x + 6.0, 0.5 * x  # v(ct,.) and v(0,.)
    a = wt / (wt + wm)
    torch.testing.assert_close(v, a * v_t0 + (1 - a) * v_c + wt * (v_c - v_t0) + wm * (v_c - v_c))


def test_guidance_variants_and_degenerate_weights():
    x, cond, s = torch.zeros(1, 16, 2, 2, 2), _cond(1), torch.full((1,), 0.5)
    v_c, v_t0, v_m0, v_00 = 16.0, 10.0, 6.0, 0.0
    for mode, w, ref in [
        ("text", 2.0, v_t0 + 2 * (v_c - v_t0)),
        ("motion", 2.0, v_m0 + 2 * (v_c - v_m0)),
        ("both", 2.0, v_00 + 2 * (v_c - v_00)),
        ("none", 7.0, v_c),
    ]:
        v = guided_velocity(Affine(), x, s, cond, GuidanceConfig(mode, w, w))
        assert v.flatten()[0].item() == pytest.approx(ref), mode
    # joint with w_m = 0 is plain text CFG; w = 1 everywhere is no guidance in spirit (v_c + ...)
    v = guided_velocity(Affine(), x, s, cond, GuidanceConfig("joint", 2.0, 0.0))
    assert v.flatten()[0].item() == pytest.approx(v_t0 + 2 * (v_c - v_t0))
    assert [nfe_per_step(m) for m in ("joint", "text", "motion", "both", "none")] == [3, 2, 2, 2, 1]


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_samplers_integrate_a_straight_flow_exactly(solver):
    # a model that knows x0: v = (x - x0) / sigma is the exact rectified-flow velocity
    x0 = torch.randn(1, 16, 2, 2, 2)

    class Oracle(torch.nn.Module):
        def forward(self, x, t, **kw):
            s = (t / 1000).view(-1, 1, 1, 1, 1)
            return (x - x0) / s

    noise = torch.randn_like(x0)
    out = sample(
        Oracle(), noise, _cond(1), cfg=SamplerConfig(steps=7, solver=solver, guidance=GuidanceConfig("none")), shift=3.0
    )
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- objective / network


def test_mix_text_replaces_only_dropped_rows():
    text, lens = torch.ones(3, 4, 2), torch.tensor([4, 2, 3])
    null, null_len = torch.full((1, 2, 2), 7.0), torch.tensor([2])
    out, out_len = mix_text(text, lens, null, null_len, torch.tensor([False, True, False]))
    assert out.shape == (3, 4, 2) and torch.equal(out_len, torch.tensor([4, 2, 3]))
    assert torch.all(out[1, :2] == 7) and torch.all(out[1, 2:] == 0) and torch.all(out[0] == 1)


def _objective(net, **cfg):
    return FlowMatchingObjective(
        net,
        cfg=TeacherConfig(**cfg),
        shift=3.0,
        null_text=torch.zeros(1, 2, 384),
        null_lengths=torch.tensor([2]),
        embed_dim=64,
        height=32,
        width=32,
        seed=0,
        device=torch.device("cpu"),
    )


def _batch(B=4, T=9, N=6):
    g = torch.Generator().manual_seed(0)
    return {
        "latents": torch.randn(B, 16, 3, 4, 4, generator=g),
        "image": torch.randn(B, 20, 3, 4, 4, generator=g),
        "text_emb": torch.randn(B, 5, 384, generator=g),
        "text_len": torch.full((B,), 5),
        "tracks": torch.rand(B, T, N, 2, generator=g) * 31,
        "visibility": torch.ones(B, T, N, dtype=torch.bool),
    }


def test_dropout_is_independent_and_reaches_all_four_condition_pairs(monkeypatch):
    torch.manual_seed(0)
    net = build_motion_wan(ModelConfig(), text_encoder_dim=384)
    seen = []
    orig = net.forward

    def spy(x, t, *, text, text_lengths, image=None, motion=None, **kw):
        has_text = text.abs().sum(dim=(1, 2)) > 0
        has_motion = motion.abs().sum(dim=(1, 2, 3, 4)) > 0
        seen.extend(zip(has_text.tolist(), has_motion.tolist()))
        return orig(x, t, text=text, text_lengths=text_lengths, image=image, motion=motion, **kw)

    monkeypatch.setattr(net, "forward", spy)
    obj = _objective(net, p_drop_text=0.5, p_drop_tracks=0.5)
    for step in range(16):
        loss, extra = obj.loss("dit", obj.prepare_batch(_batch()), step=step)
        assert loss.ndim == 0 and torch.isfinite(loss) and "fm/mse" in extra
    counts = {k: seen.count(k) for k in [(True, True), (True, False), (False, True), (False, False)]}
    assert all(c >= 5 for c in counts.values()), counts  # 64 draws, each pair p = 1/4


def test_objective_state_round_trip_replays_the_same_draws():
    torch.manual_seed(0)
    net = build_motion_wan(ModelConfig(), text_encoder_dim=384)
    a = _objective(net, mid_frame_mask_prob=0.5)
    b = _objective(net, mid_frame_mask_prob=0.5)
    a.loss("dit", _batch(), step=0)
    b.load_state_dict(a.state_dict())
    assert a.loss("dit", _batch(), step=1)[0].item() == b.loss("dit", _batch(), step=1)[0].item()


def test_empty_motion_is_zero_track_channels():
    torch.manual_seed(0)
    net = build_motion_wan(ModelConfig(), text_encoder_dim=384)
    x = torch.randn(1, 16, 3, 4, 4)
    motion = encode_motion(
        torch.full((1, 9, 2, 2), 40.0),
        torch.ones(1, 9, 2, dtype=torch.bool),
        torch.tensor([[3, 9]]),
        embed_dim=64,
        height=32,
        width=32,
    )  # all points outside the 32x32 frame
    assert torch.count_nonzero(motion) == 0
    assert torch.equal(net.motion_channels(motion, x), net.motion_channels(None, x))


def test_export_and_load_round_trip(tmp_path):
    from trackstream.trainer.dist import Runtime

    torch.manual_seed(0)
    cfg = ModelConfig()
    net = build_motion_wan(cfg, text_encoder_dim=384)

    class T:  # a TrainedNetwork stand-in: what export_network reads
        raw, ema = net, None

    rt = Runtime(
        accelerator=None,
        strategy="single",
        device=torch.device("cpu"),
        rank=0,
        world_size=1,
        local_rank=0,
        precision="fp32",
    )
    from dataclasses import asdict

    export_network(T, tmp_path / "teacher", model_cfg=asdict(cfg), runtime=rt, text_encoder_dim=384)
    back = load_network(tmp_path / "teacher")
    for (k, v), (k2, v2) in zip(net.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    # and a fresh network starts from the export (the fine-tune stage's model.init_from)
    fresh = build_motion_wan(cfg, text_encoder_dim=384)
    initialise(fresh, init_from=str(tmp_path / "teacher"))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values()))


def test_init_from_a_narrower_wan_checkpoint_grows_zero_channels(tmp_path):
    from trackstream.models.flavors import build_wan
    from trackstream.models.wan_io import save_wan

    torch.manual_seed(0)
    base = build_wan("tiny", in_dim=36, model_type="t2v")  # an I2V-style base without track channels
    save_wan(base, tmp_path / "base")
    net = build_motion_wan(ModelConfig(), text_encoder_dim=384)  # needs 16 + 20 + 16 = 52
    initialise(net, init_from=str(tmp_path / "base"))
    w = net.dit.patch_embedding.weight
    assert w.shape[1] == 52 and torch.count_nonzero(w[:, 36:]) == 0
    assert torch.equal(w[:, :36], base.patch_embedding.weight)


def test_clean_first_frame_pins_frame_zero_in_training_and_sampling():
    torch.manual_seed(0)
    net = build_motion_wan(ModelConfig(), text_encoder_dim=384)
    seen = {}
    orig = net.forward

    def spy(x, t, **kw):
        seen["t"], seen["x0"] = t, x[:, :, 0].clone()
        return orig(x, t, **kw)

    net.forward = spy
    obj = _objective(net, clean_first_frame=True)
    batch = _batch()
    loss, _ = obj.loss("dit", batch, step=0)
    assert seen["t"].shape == (4, 3) and torch.all(seen["t"][:, 0] == 0) and torch.all(seen["t"][:, 1:] > 0)
    torch.testing.assert_close(seen["x0"], batch["latents"][:, :, 0])  # frame 0 enters clean
    # the loss ignores whatever the network predicts for frame 0
    net.forward = lambda x, t, **kw: torch.cat([torch.full_like(x[:, :, :1], 1e6), orig(x, t, **kw)[:, :, 1:]], 2)
    obj2 = _objective(net, clean_first_frame=True)
    assert obj2.loss("dit", batch, step=0)[0].item() < 1e3
    # sampling keeps frame 0 at the given latent and integrates the rest
    first = torch.randn(1, 16, 1, 4, 4)
    cond = Condition(
        text=torch.zeros(1, 2, 384),
        text_lengths=torch.tensor([2]),
        null_text=torch.zeros(1, 2, 384),
        null_text_lengths=torch.tensor([2]),
        image=torch.zeros(1, 20, 3, 4, 4),
        first_latent=first,
    )
    out = sample(
        build_motion_wan(ModelConfig(), text_encoder_dim=384),
        torch.randn(1, 16, 3, 4, 4),
        cond,
        cfg=SamplerConfig(steps=3, guidance=GuidanceConfig("text")),
        shift=3.0,
    )
    assert torch.equal(out[:, :, :1], first)


def test_correspondence_targets_follow_the_tracks_and_the_probe_matches_plain_attention():
    from trackstream.trainer.correspondence import CorrespondenceProbe, correspondence_loss, correspondence_targets

    # 4x4 tokens of 16 px; every track moves right by exactly one token per latent frame
    T, grid = 9, (3, 4, 4)
    ys, xs = torch.meshgrid(torch.arange(4) * 16 + 8.0, torch.arange(3) * 16 + 8.0, indexing="ij")
    start = torch.stack([xs.flatten(), ys.flatten()], -1)  # 12 tracks in columns 0..2
    shift = torch.tensor([16.0 * (1 + (t - 1) // 4) if t > 0 else 0.0 for t in range(T)])
    tracks = (start[None] + torch.stack([shift, torch.zeros(T)], -1)[:, None])[None]  # [1, T, 12, 2]
    target = correspondence_targets(tracks, torch.ones(1, T, 12, dtype=torch.bool), grid=grid, token_px=(16, 16))
    assert target.shape == (1, 2 * 16, 16)
    for f in (1, 2):
        for r in range(4):
            for c in range(3):
                q = (f - 1) * 16 + r * 4 + min(c + f, 3)
                if c + f <= 3:
                    assert target[0, q, r * 4 + c] == 1.0  # came from one token to the left (f tokens)
    assert torch.all((target.sum(-1) == 0) | torch.isclose(target.sum(-1), torch.tensor(1.0)))
    # the probe changes nothing in the forward and its logits give a finite loss
    torch.manual_seed(0)
    net = build_motion_wan(ModelConfig(), text_encoder_dim=384).eval()
    x = torch.randn(1, 16, 3, 8, 8)
    kw = dict(text=torch.randn(1, 4, 384), text_lengths=torch.tensor([4]), image=torch.randn(1, 20, 3, 8, 8))
    probe = CorrespondenceProbe(grid, net.dit.head_dim, layer=0, head=1, device=x.device)
    with torch.no_grad():
        torch.testing.assert_close(
            net(x, torch.tensor([500.0]), **kw, attention=probe), net(x, torch.tensor([500.0]), **kw)
        )
    assert probe.logits.shape == (1, 32, 48) and torch.isfinite(correspondence_loss(probe.logits, target))


def test_sampler_refuses_to_drop_a_clean_first_frame_the_network_was_trained_with():
    net = build_motion_wan(ModelConfig(), text_encoder_dim=384)
    net.conventions = Conventions(clean_first_frame=True)
    cond = Condition(
        text=torch.zeros(1, 2, 384),
        text_lengths=torch.tensor([2]),
        null_text=torch.zeros(1, 2, 384),
        null_text_lengths=torch.tensor([2]),
        image=torch.zeros(1, 20, 3, 4, 4),
    )
    with pytest.raises(ValueError, match="first_latent"):
        sample(
            net,
            torch.randn(1, 16, 3, 4, 4),
            cond,
            cfg=SamplerConfig(steps=1, guidance=GuidanceConfig("none")),
            shift=3.0,
        )


def test_conventions_read_old_exports_and_name_unknown_keys():
    from trackstream.models.streaming import CausalConfig, StreamConfig

    # a student exported before sink / window were recorded streams with c3s1w1
    old = Conventions.from_dict(
        {
            "clean_first_frame": True,
            "schedule_shift": 3.0,
            "causal": {"chunk_frames": 3, "first_chunk_frames": 1, "steps": 3, "shift": 3.0},
        }
    )
    assert old.streaming == StreamConfig(causal=CausalConfig(3, 1, 1, first_chunk_frames=1), steps=3, shift=3.0)
    assert Conventions.from_dict(old.to_dict()) == old  # the JSON round trip is exact
    with pytest.raises(ValueError, match="clean_first_fram"):
        Conventions.from_dict({"clean_first_fram": True}, source="x/network.json")


# ----------------------------------------------------------------------------- decoded-frame loss


def test_decoded_frame_loss_is_zero_at_the_true_velocity_and_counts_frames_and_their_differences():
    from trackstream.models.codecs.tiny_ae import TinyAE, TinyAEConfig
    from trackstream.train.teacher.objective import decoded_frame_loss

    codec = TinyAE(TinyAEConfig(width=16, patch=4)).eval().requires_grad_(False)
    x0 = torch.randn(2, 16, 3, 4, 4)  # 9 pixel frames of 16x16
    noise = torch.randn_like(x0)
    sigma = torch.tensor([[0.0, 0.4, 0.4], [0.0, 0.8, 0.8]])
    x = add_noise(x0, noise, sigma)
    exact = decoded_frame_loss(codec, x, velocity_target(x0, noise), x0, sigma)
    assert exact.shape == (2,) and exact.abs().max() < 1e-10
    v = (velocity_target(x0, noise) + 0.3 * torch.randn_like(x0)).requires_grad_(True)
    wrong = decoded_frame_loss(codec, x, v, x0, sigma)
    hat, ref = codec.decode(x0_from_velocity(x, v, sigma)), codec.decode(x0)
    by_hand = ((hat - ref)[:, :, 1:] ** 2).mean(dim=(1, 2, 3, 4)) + ((hat.diff(dim=2) - ref.diff(dim=2)) ** 2).mean(
        dim=(1, 2, 3, 4)
    )
    torch.testing.assert_close(wrong, by_hand)
    wrong.sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0
    assert all(p.grad is None for p in codec.parameters())  # the codec stays frozen


def test_the_objective_adds_the_decoded_loss_only_when_weighted():
    import types

    from trackstream.models.codecs.tiny_ae import TinyAE, TinyAEConfig

    with pytest.raises(ValueError, match="decoded_loss_weight"):
        TeacherConfig(decoded_loss_weight=-1.0)
    torch.manual_seed(0)
    net = build_motion_wan(ModelConfig(), text_encoder_dim=384)
    codec = TinyAE(TinyAEConfig(width=16)).eval().requires_grad_(False)  # 8x: 4x4 latents of 32x32 frames
    losses = {}
    for w in (0.0, 1.0):
        obj = _objective(net, decoded_loss_weight=w, clean_first_frame=True)
        obj.conditioner = types.SimpleNamespace(codec=codec)
        loss, extra = obj.loss("dit", _batch(), step=0)
        losses[w] = (loss.item(), extra)
    assert "fm/decoded" not in losses[0.0][1] and losses[1.0][1]["fm/decoded"] > 0
    assert losses[1.0][0] > losses[0.0][0]  # the same draws, plus the decoded term


def test_a_clean_prefix_is_whole_chunks_after_frame_0_and_leaves_a_chunk_to_denoise():
    from trackstream.train.teacher.objective import clean_prefix

    g = torch.Generator().manual_seed(0)
    sigma = torch.full((400, 7), 0.6)
    sigma[:, 0] = 0
    out = clean_prefix(sigma, p=0.5, chunk=3, generator=g)
    clean = (out == 0).sum(dim=1) - 1  # prefix frames beyond frame 0
    assert set(clean.tolist()) == {0, 3}  # 7 latents: frame 0 + 2 chunks of 3, at most one chunk clean
    assert 150 < int((clean == 3).sum()) < 250  # p = 0.5
    assert torch.all(out[clean == 3][:, 1:4] == 0) and torch.all(out[:, 4:] == 0.6)
    long = torch.full((300, 13), 0.5)  # 4 chunks: prefixes of 1, 2 or 3 chunks
    assert set(((clean_prefix(long, p=1.0, chunk=3, generator=g) == 0).sum(dim=1)).tolist()) == {3, 6, 9}
    short = torch.full((4, 4), 0.5)  # one chunk: no room
    assert torch.equal(clean_prefix(short, p=1.0, chunk=3, generator=g), short)
    with pytest.raises(ValueError, match="clean_first_frame"):
        TeacherConfig(clean_prefix_prob=0.5)


def test_the_objective_does_not_score_the_clean_prefix():
    torch.manual_seed(0)
    net = build_motion_wan(ModelConfig(), text_encoder_dim=384)
    batch = _batch()
    batch["latents"], batch["image"] = torch.randn(4, 16, 7, 4, 4), torch.randn(4, 20, 7, 4, 4)
    batch["tracks"], batch["visibility"] = torch.rand(4, 25, 6, 2) * 31, torch.ones(4, 25, 6, dtype=torch.bool)
    obj = _objective(net, clean_first_frame=True, clean_prefix_prob=1.0, weighting="uniform")
    seen = {}
    orig = net.forward

    def spy(x, t, **kw):
        seen["t"] = t
        return orig(x, t, **kw)

    net.forward = spy
    loss, _ = obj.loss("dit", batch, step=0)
    assert torch.isfinite(loss)
    assert torch.all(seen["t"][:, :4] == 0) and torch.all(seen["t"][:, 4:] > 0)  # frame 0 + one chunk clean
