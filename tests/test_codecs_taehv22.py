"""TAEHV for Wan 2.2 (``taehv-wan2.2``, the official taew2_2 release): key layout, sizes, streaming, loading errors.

The checkpoints here are random tensors laid out as the official files are, from a key/shape table written
out below from the official nn.Sequential of madebyollin/taehv (taehv.py) rather than from our module, so a
drift of our layer indices or widths away from the released files fails the tests.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra_helpers import compose_job
from safetensors.torch import save_file

from trackstream.models.codec_names import CODEC_FACTS, codec_latent_channels, codec_spatial_factor
from trackstream.models.codecs import TAEHV, TAEHV_RELEASES, build_codec
from trackstream.train.config import validate


def official_shapes(latent_channels: int, patch: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of an official base TAEHV file (taew2_1: 16, 1; taew2_2: 48, 2) and its shape."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, n_out: int, n_in: int, kernel: int = 3, bias: bool = True) -> None:
        shapes[f"{name}.weight"] = (n_out, n_in, kernel, kernel)
        if bias:
            shapes[f"{name}.bias"] = (n_out,)

    def mem_block(name: str, n: int) -> None:  # convs at .conv.0/2/4 (ReLUs between), identity skip
        conv(f"{name}.conv.0", n, 2 * n)  # input is [current, previous frame] concatenated
        conv(f"{name}.conv.2", n, n)
        conv(f"{name}.conv.4", n, n)

    pixels = 3 * patch * patch  # RGB after the p x p pixel unshuffle
    # encoder: 0 conv, 1 ReLU, three stages of [TPool, stride-2 conv, 3 MemBlocks], 17 conv to the latents
    conv("encoder.0", 64, pixels)
    for start, time_stride in ((2, 2), (7, 2), (12, 1)):
        conv(f"encoder.{start}.conv", 64, 64 * time_stride, kernel=1, bias=False)  # TPool: s frames -> channels
        conv(f"encoder.{start + 1}", 64, 64, bias=False)
        for j in range(3):
            mem_block(f"encoder.{start + 2 + j}", 64)
    conv("encoder.17", latent_channels, 64)
    # decoder: 0 Clamp, 1 conv, 2 ReLU, three stages of [3 MemBlocks, Upsample, TGrow, conv], 21 ReLU, 22 conv
    conv("decoder.1", 256, latent_channels)
    for start, n_in, n_out, time_stride in ((3, 256, 128, 1), (9, 128, 64, 2), (15, 64, 64, 2)):
        for j in range(3):
            mem_block(f"decoder.{start + j}", n_in)
        conv(f"decoder.{start + 4}.conv", n_in * time_stride, n_in, kernel=1, bias=False)  # TGrow
        conv(f"decoder.{start + 5}", n_out, n_in, bias=False)
    conv("decoder.22", pixels, 64)
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    # std 1 / sqrt(fan in) for weights [out, in, k, k] (biases small) keeps activations O(1) through ~50
    # random layers, so outputs are not all clamped and float rounding stays far below the tolerances
    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        fan_in = shape[1] * shape[2] * shape[3] if len(shape) == 4 else 100
        return torch.randn(*shape, generator=g) / fan_in**0.5

    return {k: draw(s) for k, s in shapes.items()}


def _latents(f: int, hw: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 48, f, hw, hw, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Random-weight taew2_2.pth / .safetensors and a taew2_1.pth, all in the official layout."""
    root = tmp_path_factory.mktemp("taehv22")
    state22, state21 = random_state(official_shapes(48, 2)), random_state(official_shapes(16, 1), seed=2)
    torch.save(state22, root / "taew2_2.pth")
    save_file(state22, str(root / "taew2_2.safetensors"))
    torch.save(state21, root / "taew2_1.pth")
    return {"root": root, "state22": state22}


@pytest.fixture(scope="module")
def taew22(files) -> TAEHV:
    return build_codec("taehv-wan2.2", checkpoint=str(files["root"] / "taew2_2.pth")).eval()


def test_module_has_the_official_taew2_2_keys_and_shapes():
    model = TAEHV(TAEHV_RELEASES["taehv-wan2.2"][0])
    table = official_shapes(48, 2)
    assert len(table) == 128
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == table
    assert sum(p.numel() for p in model.parameters()) == 11_418_108
    assert table["encoder.0.weight"] == (64, 12, 3, 3) and table["decoder.22.weight"] == (12, 64, 3, 3)


@pytest.mark.slow
def test_loads_by_name_from_pth_and_safetensors(files, taew22):
    for name in ("taew2_2.pth", "taew2_2.safetensors"):
        codec = build_codec("taehv-wan2.2", checkpoint=str(files["root"] / name))
        assert isinstance(codec, TAEHV)
        assert (codec.latent_channels, codec.spatial_factor, codec.temporal_factor) == (48, 16, 4)
        loaded = codec.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in files["state22"].items()), name


@pytest.mark.slow
@torch.no_grad()
def test_shapes_64px_to_4x4_latents_and_1_plus_4k_frames(taew22):
    video = torch.rand(1, 3, 9, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    z = taew22.encode(video)
    assert z.shape == (1, 48, 3, 4, 4)  # 1 + 4k = 9 frames -> 1 + k = 3 latents, 64 / 16 = 4
    out = taew22.decode(z)
    assert out.shape == video.shape and out.min() >= -1 and out.max() <= 1
    assert taew22.decode(_latents(1)).shape == (1, 3, 1, 64, 64)


def test_pixel_patch_channel_order(taew22):
    """Unshuffle puts pixel (2y + dy, 2x + dx) of colour c at channel 4c + 2dy + dx, as the official code feeds it."""
    video = torch.rand(2, 3, 5, 8, 12) * 2 - 1
    frames = taew22._to_taehv_frames(video)  # [B, T, 12, H / 2, W / 2]
    x = video.add(1).mul(0.5).permute(0, 2, 1, 3, 4)  # [B, T, 3, H, W] in [0, 1]
    by_hand = x.reshape(2, 5, 3, 4, 2, 6, 2).permute(0, 1, 2, 4, 6, 3, 5).reshape(2, 5, 12, 4, 6)
    torch.testing.assert_close(frames, by_hand, rtol=0, atol=0)
    torch.testing.assert_close(taew22._from_taehv_frames(frames, clamp=False), video, rtol=0, atol=1e-6)


@pytest.mark.slow
@torch.no_grad()
def test_streaming_decode_equals_full_decode(taew22):
    z = _latents(7)
    full = taew22.decode(z)
    assert full.shape == (1, 3, 25, 64, 64)  # 7 latents -> 4 * 7 - 3 frames
    state, pieces = taew22.init_decode_state(), []
    for lo, hi in ((0, 1), (1, 4), (4, 7)):
        frames, state = taew22.decode_chunk(z[:, :, lo:hi], state)
        pieces.append(frames)
    assert [p.shape[2] for p in pieces] == [1, 12, 12]
    assert (torch.cat(pieces, dim=2) - full).abs().max().item() <= 1e-5
    assert (taew22.decode_streaming(z, [1, 3, 3]) - full).abs().max().item() <= 1e-5


@pytest.mark.slow
@torch.no_grad()
def test_bf16_decode_runs(taew22):
    z = _latents(3)
    half = copy.deepcopy(taew22).to(torch.bfloat16)
    out = half.decode(z.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.shape == (1, 3, 9, 64, 64)
    assert torch.isfinite(out).all()
    assert (out.float() - taew22.decode(z)).abs().max().item() < 0.1


def test_a_checkpoint_of_the_other_release_is_refused_in_one_line(files, tmp_path):
    root = files["root"]
    with pytest.raises(ValueError, match=r"taew2_1\.pth.*taew2_1 checkpoint.*codec\.name=taehv-wan2\.1") as err:
        build_codec("taehv-wan2.2", checkpoint=str(root / "taew2_1.pth"))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"taew2_2\.safetensors.*taew2_2 checkpoint.*codec\.name=taehv-wan2\.2") as err:
        build_codec("taehv-wan2.1", checkpoint=str(root / "taew2_2.safetensors"))
    assert "\n" not in str(err.value)
    # the "super" decoder release has a conv at decoder.0, where the base decoder has its Clamp
    super_state = dict(files["state22"], **{"decoder.0.weight": torch.zeros(512, 48, 1, 1)})
    torch.save(super_state, tmp_path / "taew2_2_super.pth")
    with pytest.raises(ValueError, match="super"):
        build_codec("taehv-wan2.2", checkpoint=str(tmp_path / "taew2_2_super.pth"))


def test_a_damaged_checkpoint_gets_the_strict_key_listing(files, tmp_path):
    state = dict(files["state22"])
    del state["decoder.13.conv.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"broken\.pth(.|\n)*missing keys \(1\): decoder\.13\.conv\.weight"):
        build_codec("taehv-wan2.2", checkpoint=str(tmp_path / "broken.pth"))


def test_train_config_codec_facts():
    assert codec_latent_channels("taehv-wan2.2", {}) == 48
    assert codec_spatial_factor("taehv-wan2.2", {}) == 16
    assert (codec_latent_channels("taehv-wan2.1", {}), codec_spatial_factor("taehv-wan2.1", {})) == (16, 8)
    # the config-side facts repeat the codec presets; the two must not drift apart
    for name, (config, _) in TAEHV_RELEASES.items():
        facts = CODEC_FACTS[name]
        assert (facts.latent_channels, facts.spatial_factor) == (config.latent_channels, 8 * config.patch_size)
        codec = build_codec(name)
        assert codec.spatial_factor == codec_spatial_factor(name, {})
        assert codec.latent_channels == codec_latent_channels(name, {})


def _compose(tmp_path, *overrides):
    """The job config as the CLI composes it."""
    return compose_job(tmp_path, *overrides)


@pytest.fixture
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


@pytest.mark.slow
@pytest.mark.usefixtures("_clear_hydra")
def test_wan22_5b_with_the_tiny_decoder_validates(tmp_path):
    five_b = ("experiment=teacher_wan2.2_5b_704p", "model=wan2.2_ti2v_5b")
    typed = validate(_compose(tmp_path, *five_b, "codec=taehv-wan2.2"))
    assert typed.model.flavor == "wan2.2-ti2v-5b"
    assert typed.codec.name == "taehv-wan2.2" and typed.codec.checkpoint.endswith("taew2_2.pth")
    # the Wan 2.1 tiny decoder makes 16-channel latents: refused for the 48-channel 5B
    with pytest.raises(ValueError, match="codec=taehv-wan2.2"):
        validate(_compose(tmp_path, *five_b, "codec=taehv-wan2.1"))
    # 16x spatial: 720 px is 45 latent rows here (90 for an 8x codec), which the DiT's 2x2 patch cannot split
    with pytest.raises(ValueError, match=r"spatial factor 16.*\(45\)"):
        validate(_compose(tmp_path, *five_b, "codec=taehv-wan2.2", "data.height=720"))
