"""Wan 2.2 VAE codec (``wan2.2-vae``): official key layout and sizes, parity with diffusers, loading paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan
from omegaconf import OmegaConf

from trackstream.models.codecs import (
    WAN22_LATENTS_MEAN,
    WAN22_LATENTS_STD,
    Wan22VAE,
    Wan22VAEConfig,
    WanVAE,
    WanVAEConfig,
    build_codec,
    convert_diffusers_to_official22,
    convert_official22_to_diffusers,
)
from trackstream.models.codecs.wan22_vae import official22_to_diffusers_key, wan22_vae_config_from_state_dict
from trackstream.models.formats.release_folder import find_release, vae_version

ROOT = Path(__file__).resolve().parents[1]

# Wan-AI/Wan2.2-TI2V-5B-Diffusers vae/config.json as published (diffusers scripts/convert_wan_to_diffusers.py,
# ``vae22_diffusers_config``, plus AutoencoderKLWan's defaults it leaves out); the statistics are checked apart.
OFFICIAL_DIFFUSERS_CONFIG = {
    "_class_name": "AutoencoderKLWan", "attn_scales": [], "base_dim": 160, "clip_output": False,
    "decoder_base_dim": 256, "dim_mult": [1, 2, 4, 4], "dropout": 0.0, "in_channels": 12, "is_residual": True,
    "num_res_blocks": 2, "out_channels": 12, "patch_size": 2, "scale_factor_spatial": 16,
    "scale_factor_temporal": 4, "temperal_downsample": [False, True, True], "z_dim": 48,
}  # fmt: skip

# The released block structure at tiny widths (encoder 8, decoder 16: distinct, so both are read off the file).
SMALL = Wan22VAEConfig(base_dim=8, decoder_base_dim=16)


def _video(b: int, t: int, hw: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, t, hw, hw, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _stats() -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, 48, 1, 1, 1)
    return torch.tensor(WAN22_LATENTS_MEAN).view(shape), torch.tensor(WAN22_LATENTS_STD).view(shape)


@pytest.fixture(scope="module")
def small() -> Wan22VAE:
    torch.manual_seed(0)
    codec = Wan22VAE.from_config(SMALL).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a misplaced tensor shows up numerically
        for name, p in codec.vae.named_parameters():
            if name.endswith(("gamma", "bias")):
                p.uniform_(0.5, 1.5) if name.endswith("gamma") else p.uniform_(-0.1, 0.1)
    return codec


def _expected_official_keys() -> set[str]:
    """Names of Wan2.2_VAE.pth written out from the official vae2_2.py modules (independent of diffusers):
    Down_/Up_ResidualBlock hold an nn.Sequential ``downsamples``/``upsamples`` of residual blocks and then
    the Resample; their avg_shortcut (AvgDown3D / DupUp3D) has no parameters."""
    res = ["residual.0.gamma", "residual.2.weight", "residual.2.bias", "residual.3.gamma"]
    res += ["residual.6.weight", "residual.6.bias"]
    attn = ["norm.gamma", "to_qkv.weight", "to_qkv.bias", "proj.weight", "proj.bias"]
    wb = ["weight", "bias"]
    keys = {f"{p}.{s}" for p in ("conv1", "conv2", "encoder.conv1", "decoder.conv1") for s in wb}
    for side in ("encoder", "decoder"):
        keys |= {f"{side}.middle.{i}.{k}" for i in (0, 2) for k in res}
        keys |= {f"{side}.middle.1.{k}" for k in attn}
        keys |= {f"{side}.head.0.gamma"} | {f"{side}.head.2.{s}" for s in wb}
    enc = "encoder.downsamples.{}.downsamples.{}.{}"
    keys |= {enc.format(i, j, k) for i in range(4) for j in (0, 1) for k in res}
    keys |= {enc.format(i, 0, f"shortcut.{s}") for i in (1, 2) for s in wb}  # widths double at levels 1 and 2
    keys |= {enc.format(i, 2, f"resample.1.{s}") for i in (0, 1, 2) for s in wb}
    keys |= {enc.format(i, 2, f"time_conv.{s}") for i in (1, 2) for s in wb}  # temperal_downsample F, T, T
    dec = "decoder.upsamples.{}.upsamples.{}.{}"
    keys |= {dec.format(i, j, k) for i in range(4) for j in (0, 1, 2) for k in res}
    keys |= {dec.format(i, 0, f"shortcut.{s}") for i in (2, 3) for s in wb}  # widths halve at levels 2 and 3
    keys |= {dec.format(i, 3, f"resample.1.{s}") for i in (0, 1, 2) for s in wb}
    keys |= {dec.format(i, 3, f"time_conv.{s}") for i in (0, 1) for s in wb}  # temperal upsample T, T, F
    return keys


# ---------------------------------------------------------------------------- (a), (b) the real configuration


def test_real_config_has_the_released_parameter_and_tensor_counts():
    """704,688,668 parameters in 196 tensors. No first-party figure was found: this is the count several
    third-party projects report after loading the released Wan2.2_VAE.pth (2,818,839,170 bytes, fp32), so
    it is also asserted equal to diffusers' AutoencoderKLWan built from the Wan2.2-TI2V-5B-Diffusers
    vae/config.json values (as the diffusers conversion script writes them)."""
    with torch.device("meta"):
        ours = AutoencoderKLWan(**Wan22VAEConfig().diffusers_kwargs())
        official = AutoencoderKLWan.from_config(OFFICIAL_DIFFUSERS_CONFIG)
    count = sum(p.numel() for p in ours.parameters())
    assert count == 704_688_668 == sum(p.numel() for p in official.parameters())
    state = ours.state_dict()
    assert len(state) == 196
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in official.state_dict().items()}
    assert sum(p.numel() for p in ours.encoder.parameters()) == 149_627_776
    assert sum(p.numel() for p in ours.decoder.parameters()) == 555_049_228
    kwargs = Wan22VAEConfig().diffusers_kwargs()
    assert {k: kwargs[k] for k in OFFICIAL_DIFFUSERS_CONFIG if k in kwargs} == {
        k: v for k, v in OFFICIAL_DIFFUSERS_CONFIG.items() if k in kwargs
    }
    assert kwargs["latents_mean"][19] == 0.5109 and kwargs["latents_std"][39] == 1.6887
    assert len(kwargs["latents_mean"]) == len(kwargs["latents_std"]) == 48


def test_official_key_layout_matches_the_released_vae():
    with torch.device("meta"):
        real = AutoencoderKLWan(**Wan22VAEConfig().diffusers_kwargs())
    state = real.state_dict()
    official = convert_diffusers_to_official22(state)
    assert set(official) == _expected_official_keys()
    assert {official22_to_diffusers_key(k) for k in official} == set(state)
    # renames as in diffusers' convert_vae_22 (scripts/convert_wan_to_diffusers.py)
    pairs = {
        "encoder.downsamples.0.downsamples.1.residual.6.bias": "encoder.down_blocks.0.resnets.1.conv2.bias",
        "encoder.downsamples.1.downsamples.0.shortcut.weight": "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
        "encoder.downsamples.2.downsamples.2.time_conv.weight": "encoder.down_blocks.2.downsampler.time_conv.weight",
        "decoder.upsamples.3.upsamples.0.shortcut.weight": "decoder.up_blocks.3.resnets.0.conv_shortcut.weight",
        "decoder.upsamples.1.upsamples.3.resample.1.bias": "decoder.up_blocks.1.upsampler.resample.1.bias",
        "decoder.middle.1.to_qkv.weight": "decoder.mid_block.attentions.0.to_qkv.weight",
        "encoder.head.0.gamma": "encoder.norm_out.gamma",
        "conv1.weight": "quant_conv.weight",
    }
    assert {k: official22_to_diffusers_key(k) for k in pairs} == pairs
    shapes = {
        "encoder.conv1.weight": (160, 12, 3, 3, 3),  # 2x2-patchified RGB
        "encoder.downsamples.0.downsamples.2.resample.1.weight": (160, 160, 3, 3),
        "encoder.downsamples.1.downsamples.0.shortcut.weight": (320, 160, 1, 1, 1),
        "encoder.downsamples.1.downsamples.2.time_conv.weight": (320, 320, 3, 1, 1),
        "encoder.middle.1.to_qkv.weight": (1920, 640, 1, 1),
        "encoder.head.2.weight": (96, 640, 3, 3, 3),
        "conv1.weight": (96, 96, 1, 1, 1),
        "conv2.weight": (48, 48, 1, 1, 1),
        "decoder.conv1.weight": (1024, 48, 3, 3, 3),
        "decoder.middle.0.residual.0.gamma": (1024, 1, 1, 1),
        "decoder.upsamples.0.upsamples.0.residual.2.weight": (1024, 1024, 3, 3, 3),
        "decoder.upsamples.0.upsamples.3.resample.1.weight": (1024, 1024, 3, 3),  # 2.2: no channel halving
        "decoder.upsamples.0.upsamples.3.time_conv.weight": (2048, 1024, 3, 1, 1),
        "decoder.upsamples.2.upsamples.0.shortcut.weight": (512, 1024, 1, 1, 1),
        "decoder.head.0.gamma": (256, 1, 1, 1),
        "decoder.head.2.weight": (12, 256, 3, 3, 3),
    }
    assert {k: tuple(official[k].shape) for k in shapes} == shapes
    assert wan22_vae_config_from_state_dict(official) == Wan22VAEConfig()  # sizes read off the real shapes


# ---------------------------------------------------------------------------- (c) parity with diffusers


@torch.no_grad()
def test_official_file_loads_strictly_and_matches_diffusers(small, tmp_path):
    official = small.official_state_dict()
    assert set(official) == _expected_official_keys()  # the released structure at tiny widths
    back = convert_official22_to_diffusers(official)
    assert all(torch.equal(back[k], v) for k, v in small.vae.state_dict().items())
    path = tmp_path / "Wan2.2_VAE.pth"
    torch.save(official, path)
    codec = build_codec("wan2.2-vae", checkpoint=str(path)).eval()  # sizes read off the file
    assert (codec.vae.config.base_dim, codec.vae.config.decoder_base_dim, codec.vae.config.z_dim) == (8, 16, 48)

    reference = AutoencoderKLWan(**SMALL.diffusers_kwargs()).eval()  # plain diffusers, same weights
    reference.load_state_dict(small.vae.state_dict(), strict=True)
    mean, std = _stats()
    video = _video(1, 9, 32, seed=1)
    mu = reference.encode(video).latent_dist.mode()  # [1, 48, 3, 2, 2]
    z = codec.encode(video)
    assert (z - (mu - mean) / std).abs().max().item() <= 1e-5
    assert (codec.decode(z) - reference.decode(mu).sample).abs().max().item() <= 1e-5


# ---------------------------------------------------------------------------- (d) diffusers folder


@torch.no_grad()
def test_diffusers_folder_loads(small, tmp_path):
    small.vae.save_pretrained(tmp_path / "vae")
    video = _video(1, 5, 32, seed=2)
    for folder in (tmp_path, tmp_path / "vae"):  # a pipeline folder or its vae/ subfolder
        codec = build_codec("wan2.2-vae", checkpoint=str(folder)).eval()
        assert isinstance(codec, Wan22VAE) and codec.spatial_factor == 16
        torch.testing.assert_close(codec.encode(video), small.encode(video), rtol=0, atol=0)
    with pytest.raises(ValueError, match="cannot be combined"):
        build_codec("wan2.2-vae", checkpoint=str(tmp_path / "vae"), base_dim=8)
    AutoencoderKLWan(base_dim=8, z_dim=4).save_pretrained(tmp_path / "vae21")
    with pytest.raises(ValueError, match="not a Wan 2.2 VAE.*wan2.1-vae"):
        build_codec("wan2.2-vae", checkpoint=str(tmp_path / "vae21"))


# ---------------------------------------------------------------------------- (e), (f) shapes and streaming


@torch.no_grad()
def test_1_plus_4k_frames_map_to_1_plus_k_latents_of_48_channels_at_h_over_16(small):
    assert (small.latent_channels, small.spatial_factor, small.temporal_factor) == (48, 16, 4)
    assert small.num_latent_frames(121) == 31 and small.num_pixel_frames(31) == 121
    mean, std = _stats()
    assert torch.equal(small.latents_mean, mean) and torch.equal(small.latents_std, std)
    video = _video(2, 9, 32)
    z = small.encode(video)
    assert z.shape == (2, 48, 3, 2, 2)
    recon = small.decode(z)
    assert recon.shape == video.shape and recon.abs().max() <= 1.0
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        small.encode(_video(1, 8, 32))
    with pytest.raises(ValueError, match="multiples of the codec's spatial factor 16"):
        small.encode(_video(1, 5, 24))


@pytest.mark.slow
@torch.no_grad()
def test_streaming_decode_equals_full_decode(small):
    z = torch.randn(2, 48, 7, 2, 2, generator=torch.Generator().manual_seed(3))
    full = small.decode(z)
    assert full.shape == (2, 3, 25, 32, 32)
    for chunks in ([3, 3, 1], [1] * 7, [2, 5]):
        assert (small.decode_streaming(z, chunks) - full).abs().max().item() <= 1e-5, chunks
    first, state = small.decode_chunk(z[:, :, :2], small.init_decode_state())
    assert first.shape == (2, 3, 5, 32, 32)  # 1 + 4 frames
    again_a, state_a = small.decode_chunk(z[:, :, 2:4], state)
    again_b, _ = small.decode_chunk(z[:, :, 2:4], state)  # replay from the same state
    assert again_a.shape[2] == 8 and torch.equal(again_a, again_b) and state_a.started


# ---------------------------------------------------------------------------- (g) broken files


def test_broken_or_foreign_files_say_what_is_wrong(small, tmp_path):
    official = small.official_state_dict()
    del official["decoder.upsamples.2.upsamples.0.shortcut.weight"]
    official["decoder.upsamples.9.upsamples.0.residual.2.weight"] = torch.zeros(1)
    official["encoder.middle.1.proj.weight"] = torch.zeros(3, 3, 1, 1)
    torch.save(official, tmp_path / "broken.pth")
    with pytest.raises(ValueError) as err:
        build_codec("wan2.2-vae", checkpoint=str(tmp_path / "broken.pth"))
    msg = str(err.value)
    assert "broken.pth" in msg
    assert "missing keys (1)" in msg and "decoder.up_blocks.2.resnets.0.conv_shortcut.weight" in msg
    assert "unexpected keys (1)" in msg and "decoder.up_blocks.9.resnets.0.conv1.weight" in msg
    assert "shape mismatches (1)" in msg and "encoder.mid_block.attentions.0.proj.weight" in msg

    torch.save({"encoder.conv1.weight": torch.zeros(8, 12, 3, 3, 3), "decoder.x": torch.zeros(1)}, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match=r"not a Wan 2\.2 VAE.*decoder\.head\.2\.weight"):
        Wan22VAE.from_official_checkpoint(str(tmp_path / "cut.pth"))

    torch.manual_seed(0)  # a Wan 2.1 VAE file handed to wan2.2-vae, and the other way round
    torch.save(WanVAE.from_config(WanVAEConfig(base_dim=8, z_dim=4)).official_state_dict(), tmp_path / "v21.pth")
    with pytest.raises(ValueError, match="is a Wan 2.1 VAE.*codec.name=wan2.1-vae"):
        build_codec("wan2.2-vae", checkpoint=str(tmp_path / "v21.pth"))
    torch.save(small.official_state_dict(), tmp_path / "v22.pth")
    with pytest.raises(ValueError, match="is a Wan 2.2 VAE.*codec.name=wan2.2-vae"):
        build_codec("wan2.1-vae", checkpoint=str(tmp_path / "v22.pth"))


# ---------------------------------------------------------------------------- (h) release folder, config


@torch.no_grad()
def test_release_folder_with_other_pth_files_finds_the_wan22_vae(small, tmp_path):
    folder = tmp_path / "Wan2.2-TI2V-5B"
    folder.mkdir()
    torch.save(small.official_state_dict(), folder / "Wan2.2_VAE.pth")
    t5 = {"token_embedding.weight": torch.zeros(4, 2), "blocks.0.attn.q.weight": torch.zeros(2, 2)}
    torch.save(t5, folder / "models_t5_umt5-xxl-enc-bf16.pth")
    torch.save({"whatever.weight": torch.zeros(2)}, folder / "notes.pth")
    rel = find_release(folder)
    assert (rel.vae.name, rel.t5.name, [p.name for p in rel.unknown]) == ("Wan2.2_VAE.pth", rel.t5.name, ["notes.pth"])
    assert vae_version(rel.vae) == "2.2" and vae_version(rel.t5) is None
    video = _video(1, 5, 32, seed=4)
    codec = build_codec("wan2.2-vae", checkpoint=str(folder)).eval()
    torch.testing.assert_close(codec.encode(video), small.encode(video), rtol=0, atol=0)
    with pytest.raises(ValueError, match="codec.name=wan2.2-vae"):
        build_codec("wan2.1-vae", checkpoint=str(folder))
    (folder / "Wan2.2_VAE.pth").rename(folder / "vae.pth")  # renamed: classified by its keys
    assert find_release(folder).vae.name == "vae.pth" and vae_version(folder / "vae.pth") == "2.2"


def test_codec_config_file_names_the_release_folder():
    from trackstream.trainer.codec import CodecConfig

    raw = OmegaConf.load(ROOT / "conf" / "codec" / "wan2.2-vae.yaml")
    assert raw.name == "wan2.2-vae" and OmegaConf.to_container(raw)["checkpoint"].endswith("/Wan2.2-TI2V-5B")
    CodecConfig(name=raw.name, checkpoint="/data/Wan2.2-TI2V-5B")  # accepted by the schema
