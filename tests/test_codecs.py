"""Codecs: Wan 2.1 VAE (diffusers + official key layout), TAEHV, tiny AE, and the shared contract."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLWan

from trackstream.models.codecs import (
    TAEHV,
    TAEHVConfig,
    TinyAE,
    TinyAEConfig,
    VideoCodec,
    WanVAE,
    WanVAEConfig,
    build_codec,
    convert_diffusers_to_official,
    convert_official_to_diffusers,
    reconstruction_loss,
)
from trackstream.models.codecs.wan_vae import official_to_diffusers_key

# Same block structure as the released VAE (so official indices match), tiny widths.
SMALL_WAN = WanVAEConfig(
    base_dim=8,
    z_dim=4,
    latents_mean=(0.5, -0.25, 0.1, 0.0),
    latents_std=(2.0, 0.5, 1.5, 1.0),
)


def _video(b: int, t: int, hw: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, hw, hw, generator=g) * 2 - 1


def _latents(b: int, c: int, f: int, hw: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, f, hw, hw, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def small_wan() -> WanVAE:
    torch.manual_seed(0)
    return WanVAE.from_config(SMALL_WAN).eval()


# ---------------------------------------------------------------------------- Wan 2.1 VAE


@torch.no_grad()
def test_wan_vae_maps_1_plus_4k_frames_to_1_plus_k_normalised_latents(small_wan):
    video = _video(1, 9, 32)
    z = small_wan.encode(video)
    assert z.shape == (1, 4, 3, 4, 4)
    mu = small_wan.vae.encode(video).latent_dist.mode()
    mean = torch.tensor(SMALL_WAN.latents_mean).view(1, 4, 1, 1, 1)
    std = torch.tensor(SMALL_WAN.latents_std).view(1, 4, 1, 1, 1)
    torch.testing.assert_close(z, (mu - mean) / std)
    recon = small_wan.decode(z)
    assert recon.shape == video.shape
    assert recon.abs().max() <= 1.0
    # decode undoes the normalisation before the diffusers decoder
    torch.testing.assert_close(recon, small_wan.vae.decode(mu).sample, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        small_wan.encode(_video(1, 8, 32))
    with pytest.raises(ValueError, match="multiples"):
        small_wan.encode(_video(1, 5, 36))


@pytest.mark.slow
@torch.no_grad()
def test_wan_vae_streaming_decode_equals_full_decode(small_wan):
    z = _latents(2, 4, 7, 4)
    full = small_wan.decode(z)
    assert full.shape == (2, 3, 25, 32, 32)
    for chunks in ([3, 3, 1], [1] * 7, [2, 5]):
        streamed = small_wan.decode_streaming(z, chunks)
        assert (streamed - full).abs().max().item() <= 1e-5, chunks


@torch.no_grad()
def test_wan_vae_decode_chunk_is_functional(small_wan):
    z = _latents(1, 4, 6, 4, seed=1)
    first, state = small_wan.decode_chunk(z[:, :, :3], small_wan.init_decode_state())
    assert first.shape[2] == 9  # 1 + 4 * 2
    again_a, state_a = small_wan.decode_chunk(z[:, :, 3:], state)
    again_b, _ = small_wan.decode_chunk(z[:, :, 3:], state)  # replay from the same state
    assert again_a.shape[2] == 12
    assert torch.equal(again_a, again_b)
    assert state_a is not state and state_a.started


def _expected_official_keys() -> set[str]:
    """Names of Wan2.1_VAE.pth written out from the official wan/modules/vae.py module layout (independent of diffusers)."""
    res = ["residual.0.gamma", "residual.2.weight", "residual.2.bias", "residual.3.gamma"]
    res += ["residual.6.weight", "residual.6.bias"]
    attn = ["norm.gamma", "to_qkv.weight", "to_qkv.bias", "proj.weight", "proj.bias"]
    wb = ["weight", "bias"]
    keys = {f"{p}.{s}" for p in ("conv1", "conv2", "encoder.conv1", "decoder.conv1") for s in wb}
    for side in ("encoder", "decoder"):
        keys |= {f"{side}.middle.{i}.{k}" for i in (0, 2) for k in res}
        keys |= {f"{side}.middle.1.{k}" for k in attn}
        keys |= {f"{side}.head.0.gamma"} | {f"{side}.head.2.{s}" for s in wb}
    keys |= {f"encoder.downsamples.{i}.{k}" for i in (0, 1, 3, 4, 6, 7, 9, 10) for k in res}
    keys |= {f"encoder.downsamples.{i}.shortcut.{s}" for i in (3, 6) for s in wb}
    keys |= {f"encoder.downsamples.{i}.resample.1.{s}" for i in (2, 5, 8) for s in wb}
    keys |= {f"encoder.downsamples.{i}.time_conv.{s}" for i in (5, 8) for s in wb}
    keys |= {f"decoder.upsamples.{i}.{k}" for i in (0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14) for k in res}
    keys |= {f"decoder.upsamples.4.shortcut.{s}" for s in wb}
    keys |= {f"decoder.upsamples.{i}.resample.1.{s}" for i in (3, 7, 11) for s in wb}
    keys |= {f"decoder.upsamples.{i}.time_conv.{s}" for i in (3, 7) for s in wb}
    return keys


def test_official_key_layout_matches_the_released_vae():
    with torch.device("meta"):
        real = AutoencoderKLWan(**WanVAEConfig().diffusers_kwargs())
    state = real.state_dict()
    assert sum(p.numel() for p in real.parameters()) == 126_892_531
    official = convert_diffusers_to_official(state)
    expected = _expected_official_keys()
    assert len(expected) == 194
    assert set(official) == expected
    assert {official_to_diffusers_key(k) for k in expected} == set(state)
    shapes = {
        "encoder.conv1.weight": (96, 3, 3, 3, 3),
        "encoder.downsamples.5.time_conv.weight": (192, 192, 3, 1, 1),
        "encoder.middle.1.norm.gamma": (384, 1, 1),
        "encoder.middle.1.to_qkv.weight": (1152, 384, 1, 1),
        "encoder.head.2.weight": (32, 384, 3, 3, 3),
        "conv1.weight": (32, 32, 1, 1, 1),
        "conv2.weight": (16, 16, 1, 1, 1),
        "decoder.conv1.weight": (384, 16, 3, 3, 3),
        "decoder.upsamples.3.resample.1.weight": (192, 384, 3, 3),
        "decoder.upsamples.3.time_conv.weight": (768, 384, 3, 1, 1),
        "decoder.upsamples.4.shortcut.weight": (384, 192, 1, 1, 1),
        "decoder.upsamples.11.resample.1.weight": (96, 192, 3, 3),
        "decoder.head.0.gamma": (96, 1, 1, 1),
        "decoder.head.2.weight": (3, 96, 3, 3, 3),
    }
    for key, shape in shapes.items():
        assert tuple(official[key].shape) == shape, key


@pytest.mark.slow
@torch.no_grad()
def test_official_checkpoint_round_trip_loads_strictly(small_wan, tmp_path):
    official = small_wan.official_state_dict()
    assert set(official) == _expected_official_keys()  # same structure as the real file
    back = convert_official_to_diffusers(official)
    assert set(back) == set(small_wan.vae.state_dict())
    assert all(torch.equal(back[k], v) for k, v in small_wan.vae.state_dict().items())
    path = tmp_path / "Wan2.1_VAE.pth"
    torch.save(official, path)
    loaded = WanVAE.from_official_checkpoint(str(path), SMALL_WAN).eval()
    for k, v in small_wan.vae.state_dict().items():
        assert torch.equal(loaded.vae.state_dict()[k], v), k
    video = _video(1, 5, 16, seed=3)
    torch.testing.assert_close(loaded.encode(video), small_wan.encode(video), rtol=0, atol=0)
    via_factory = build_codec("wan2.1-vae", checkpoint=str(path), **{
        "base_dim": 8, "z_dim": 4, "latents_mean": list(SMALL_WAN.latents_mean),
        "latents_std": list(SMALL_WAN.latents_std),
    })  # fmt: skip
    torch.testing.assert_close(via_factory.encode(video), small_wan.encode(video), rtol=0, atol=0)


def test_wrong_checkpoint_lists_missing_and_unexpected_keys(small_wan, tmp_path):
    official = small_wan.official_state_dict()
    del official["decoder.upsamples.4.shortcut.weight"]
    official["decoder.extra_layer.weight"] = torch.zeros(1)
    official["conv2.weight"] = torch.zeros(4, 4, 3, 1, 1)
    path = tmp_path / "broken.pth"
    torch.save(official, path)
    with pytest.raises(ValueError) as err:
        WanVAE.from_official_checkpoint(str(path), SMALL_WAN)
    msg = str(err.value)
    assert "broken.pth" in msg
    assert "missing keys (1)" in msg and "decoder.up_blocks.1.resnets.0.conv_shortcut.weight" in msg
    assert "unexpected keys (1)" in msg and "decoder.extra_layer.weight" in msg
    assert "shape mismatches (1)" in msg and "post_quant_conv.weight" in msg
    # a Wan VAE file handed to TAEHV: the error names the codec and lists keys
    with pytest.raises(ValueError, match="does not match TAEHV"):
        TAEHV.from_checkpoint(str(path))


@torch.no_grad()
def test_wan_vae_loads_diffusers_folder(small_wan, tmp_path):
    small_wan.vae.save_pretrained(tmp_path / "vae")
    for codec in (WanVAE.from_pretrained(str(tmp_path)), build_codec("wan2.1-vae", checkpoint=str(tmp_path / "vae"))):
        video = _video(1, 5, 16, seed=4)
        torch.testing.assert_close(codec.encode(video), small_wan.encode(video), rtol=0, atol=0)
        assert torch.equal(codec.latents_std.flatten(), torch.tensor(SMALL_WAN.latents_std))
    with pytest.raises(ValueError, match="cannot be combined"):
        build_codec("wan2.1-vae", checkpoint=str(tmp_path / "vae"), base_dim=8)


def test_wan_vae_real_config_uses_wan21_statistics():
    config = WanVAEConfig()
    kwargs = config.diffusers_kwargs()
    assert kwargs["latents_mean"][7] == 1.5508 and kwargs["latents_std"][8] == 3.2687
    assert WanVAEConfig(base_dim=8, z_dim=4).diffusers_kwargs()["latents_std"] == [1.0] * 4
    with pytest.raises(ValueError, match="latents_mean"):
        WanVAEConfig(z_dim=4, latents_mean=(0.0,) * 16)


# ---------------------------------------------------------------------------- TAEHV


def test_taehv_parameter_count_and_state_dict_names():
    model = TAEHV()
    assert sum(p.numel() for p in model.parameters()) == 11_315_539
    assert sum(p.numel() for p in model.encoder.parameters()) == 1_470_928
    assert sum(p.numel() for p in model.decoder.parameters()) == 9_844_611
    state = model.state_dict()
    assert len(state) == 128
    assert tuple(state["encoder.0.weight"].shape) == (64, 3, 3, 3)
    assert tuple(state["encoder.2.conv.weight"].shape) == (64, 128, 1, 1)  # TPool(64, 2)
    assert tuple(state["encoder.4.conv.0.weight"].shape) == (64, 128, 3, 3)  # MemBlock input: [x, past]
    assert tuple(state["decoder.7.conv.weight"].shape) == (256, 256, 1, 1)  # TGrow(256, 1)
    assert tuple(state["decoder.13.conv.weight"].shape) == (256, 128, 1, 1)  # TGrow(128, 2)
    assert tuple(state["decoder.22.weight"].shape) == (3, 64, 3, 3)


@pytest.fixture(scope="module")
def taehv() -> TAEHV:
    torch.manual_seed(0)
    return TAEHV().eval()


@pytest.mark.slow
@torch.no_grad()
def test_taehv_decodes_21_latents_to_81_frames_and_streams_equal(taehv):
    z = _latents(1, 16, 21, 4)
    full = taehv.decode(z)
    assert full.shape == (1, 3, 81, 32, 32)
    assert full.min() >= -1.0 and full.max() <= 1.0
    for chunks in ([3] * 7, [1, 2, 3, 15]):
        streamed = taehv.decode_streaming(z, chunks)
        assert (streamed - full).abs().max().item() <= 1e-5, chunks


@torch.no_grad()
@pytest.mark.parametrize("pad", ["end", "front"])
def test_taehv_encoder_frame_convention(pad):
    torch.manual_seed(0)
    model = TAEHV(TAEHVConfig(encoder_time_pad=pad)).eval()
    video = _video(1, 9, 32)
    z = model.encode(video)
    assert z.shape == (1, 16, 3, 4, 4)
    assert model.decode(z).shape == video.shape
    # "front" groups frames like Wan ([0], [1..4], [5..8]): changing frame 5 leaves latents 0-1 alone.
    # "end" groups [0..3], [4..7], [8, 8, 8, 8]: changing frame 5 moves latent 1 as well.
    changed = video.clone()
    changed[:, :, 5] = -changed[:, :, 5]
    delta = (model.encode(changed) - z).abs().amax(dim=(0, 1, 3, 4))
    assert delta[0] == 0 and delta[2] > 0
    assert (delta[1] == 0) == (pad == "front")


@pytest.mark.slow
@torch.no_grad()
def test_taehv_checkpoint_loading_and_tgrow_patching(taehv, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in taehv.state_dict().items()}
    torch.save(state, tmp_path / "taew2_1.pth")
    save_file(state, str(tmp_path / "taew2_1.safetensors"))
    z = _latents(1, 16, 3, 2, seed=5)
    for name in ("taew2_1.pth", "taew2_1.safetensors"):
        loaded = build_codec("taehv-wan2.1", checkpoint=str(tmp_path / name)).eval()
        torch.testing.assert_close(loaded.decode(z), taehv.decode(z), rtol=0, atol=0)
    # A TGrow trained with a larger stride: only its last-timestep output channels are kept.
    wide = dict(state)
    wide["decoder.7.conv.weight"] = torch.cat([torch.randn(256, 256, 1, 1), state["decoder.7.conv.weight"]])
    torch.save(wide, tmp_path / "wide.pth")
    patched = TAEHV.from_checkpoint(str(tmp_path / "wide.pth"))
    assert torch.equal(patched.decoder[7].conv.weight, state["decoder.7.conv.weight"])


def test_taehv_is_trainable(taehv):
    model = TAEHV()
    z = _latents(1, 16, 2, 2, seed=6)
    out = model.decode(z, clamp=False)
    assert out.shape == (1, 3, 5, 16, 16)
    out.square().mean().backward()
    assert model.decoder[1].weight.grad is not None and model.decoder[1].weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- tiny AE


@pytest.fixture(scope="module")
def tiny() -> TinyAE:
    torch.manual_seed(0)
    model = TinyAE().eval()
    with torch.no_grad():  # non-trivial temporal mixing, so streaming really exercises the carried state
        for mix in (model.enc_time, model.dec_time):
            mix.gate.fill_(0.5)
    return model


@torch.no_grad()
def test_tiny_ae_shapes_and_causality(tiny):
    video = _video(2, 17, 64)
    z = tiny.encode(video)
    assert z.shape == (2, 16, 5, 8, 8)
    recon = tiny.decode(z)
    assert recon.shape == video.shape and recon.abs().max() <= 1.0
    changed = video.clone()
    changed[:, :, 13:] = 0.0  # frames 13..16 belong to latent 4 only
    delta = (tiny.encode(changed) - z).abs().amax(dim=(0, 1, 3, 4))
    assert torch.all(delta[:4] == 0) and delta[4] > 0


@torch.no_grad()
def test_tiny_ae_streaming_decode_equals_full(tiny):
    z = _latents(2, 16, 7, 4, seed=7)
    full = tiny.decode(z)
    assert full.shape == (2, 3, 25, 32, 32)
    for chunks in ([3, 3, 1], [1] * 7, [2, 5]):
        assert (tiny.decode_streaming(z, chunks) - full).abs().max().item() <= 1e-5, chunks


@torch.no_grad()
def test_tiny_ae_patch4_has_a_4x_spatial_factor_and_streams_exactly():
    from trackstream.models.codecs import build_codec
    from trackstream.models.conditioner import encode_motion

    torch.manual_seed(0)
    ae = build_codec("tiny-ae", patch=4).eval()
    assert ae.spatial_factor == 4
    video = _video(1, 9, 32)
    z = ae.encode(video)
    assert z.shape == (1, 16, 3, 8, 8) and ae.decode(z).shape == video.shape
    assert (ae.decode_streaming(z, [1, 2]) - ae.decode(z)).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="patch"):
        TinyAEConfig(patch=3)
    # track rasterisation follows the latent grid: a point at pixel (13, 5) lands in cell (1, 3) at 4x
    tracks = torch.tensor([13.0, 5.0]).view(1, 1, 1, 2).expand(1, 9, 1, 2)
    c_m = encode_motion(
        tracks,
        torch.ones(1, 9, 1, dtype=torch.bool),
        torch.tensor([[7]]),
        embed_dim=8,
        height=32,
        width=32,
        latent_height=z.shape[3],
    )
    assert (
        c_m.shape == (1, 8, 9, 8, 8)
        and c_m[0, :, 0, 1, 3].abs().sum() > 0
        and c_m.abs().sum() == c_m[:, :, :, 1, 3].abs().sum()
    )


def test_tiny_ae_loss_decreases_when_trained():
    torch.manual_seed(0)
    model = TinyAE(TinyAEConfig(width=64))
    # Simple synthetic clip batch: a bright square moving over a flat background.
    video = torch.full((2, 3, 9, 32, 32), -0.5)
    for t in range(9):
        video[0, :, t, 4:12, 2 + 2 * t : 10 + 2 * t] = 0.8
        video[1, 1, t, 20 - t : 28 - t, 10:18] = 0.9
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    with torch.no_grad():
        before = reconstruction_loss(model, video).item()
    for _ in range(30):
        loss = reconstruction_loss(model, video)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = reconstruction_loss(model, video).item()
    assert after < 0.3 * before, (before, after)


@torch.no_grad()
def test_tiny_ae_latent_stats_and_checkpoint(tiny, tmp_path):
    model = TinyAE(TinyAEConfig(width=32, latent_channels=8))
    videos = [_video(2, 9, 32, seed=s) for s in range(3)]
    model.fit_latent_stats(videos)
    z = torch.cat([model.encode(v) for v in videos], dim=0)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3, 4)), torch.zeros(8), rtol=0, atol=1e-4)
    torch.testing.assert_close(z.std(dim=(0, 2, 3, 4), unbiased=False), torch.ones(8), rtol=0, atol=1e-3)
    assert "latents_mean" in model.state_dict() and "latents_std" in model.state_dict()
    torch.save(model.checkpoint_dict(), tmp_path / "tiny.pt")
    loaded = build_codec("tiny-ae", checkpoint=str(tmp_path / "tiny.pt"))
    assert loaded.config == model.config
    torch.testing.assert_close(loaded.encode(videos[0]), model.encode(videos[0]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="missing keys"):
        TinyAE.from_checkpoint(str(tmp_path / "tiny.pt"), TinyAEConfig(width=32, latent_channels=8, num_res_blocks=2))


# ---------------------------------------------------------------------------- factory / contract


def test_build_codec_names_and_errors():
    codecs = {
        "wan2.1-vae": build_codec("wan2.1-vae", base_dim=8, z_dim=4),
        "taehv-wan2.1": build_codec("taehv-wan2.1"),
        "tiny-ae": build_codec("tiny-ae", width=16),
    }
    for name, codec in codecs.items():
        assert isinstance(codec, VideoCodec), name
        assert (codec.spatial_factor, codec.temporal_factor) == (8, 4), name
        assert codec.num_latent_frames(81) == 21 and codec.num_pixel_frames(21) == 81
        assert codec.num_pixel_frames(3, first_chunk=False) == 12
    assert codecs["wan2.1-vae"].latent_channels == 4
    assert codecs["taehv-wan2.1"].latent_channels == 16 and codecs["tiny-ae"].latent_channels == 16
    with pytest.raises(ValueError, match="is not a codec name"):
        build_codec("sd-vae")
    with pytest.raises(ValueError, match="unknown option"):
        build_codec("tiny-ae", widht=16)
    with pytest.raises(ValueError, match="does not exist"):
        build_codec("taehv-wan2.1", checkpoint="/nonexistent/taew2_1.pth")


def test_every_codec_has_the_facts_a_config_check_uses():
    """``models.codec_names.CODEC_FACTS`` (read by config checks without importing the codecs) is what each
    codec built at its default latent size reports; the widths shrink, the channel and cell sizes do not."""
    from trackstream.models.codec_names import CODEC_FACTS, CODEC_NAMES, codec_latent_channels, codec_spatial_factor

    small = {
        "wan2.1-vae": {"base_dim": 8},
        "wan2.2-vae": {"base_dim": 8, "decoder_base_dim": 8},
        "tiny-ae": {"width": 16},
    }
    assert set(CODEC_NAMES) == set(CODEC_FACTS)
    for name in CODEC_NAMES:
        codec = build_codec(name, **small.get(name, {}))
        assert (codec.latent_channels, codec.spatial_factor) == (
            codec_latent_channels(name, {}),
            codec_spatial_factor(name, {}),
        ), name
    assert codec_spatial_factor("tiny-ae", {"patch": 4}) == build_codec("tiny-ae", width=16, patch=4).spatial_factor
    assert codec_spatial_factor("taehv-wan2.1", {"patch_size": 2}) == 16
    for name in ("taehv-wan2.1", "taehv-wan2.2"):  # a TAEHV with a stage fewer (the tiny-ae latents' 4x decoder)
        opts = {"spatial_stages": [True, True, False]}
        assert codec_spatial_factor(name, opts) == build_codec(name, **opts).spatial_factor, name
    assert codec_latent_channels("wan2.2-vae", {"latent_channels": 16}) == 48  # fixed by the release
