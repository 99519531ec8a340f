"""First-frame (I2V / Fun-Control) conditioning layouts and the CLIP image encoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from release_helpers import TINY_CLIP, wan_clip_state
from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

from trackstream.models.channel_layouts import (
    compose_condition,
    condition_channels,
    expand_patch_embedding,
    fun_control_condition,
    i2v_condition,
    i2v_mask,
    start_image_latents,
)
from trackstream.models.clip_image import (
    CLIP_MEAN,
    CLIP_STD,
    VIT_H14_CONFIG,
    CLIPImageEncoder,
    convert_wan_clip_visual,
)
from trackstream.models.flavors import build_wan
from trackstream.models.tracks import TrackEncoder


class TinyWanCodec:
    """Test codec: a tiny random diffusers Wan VAE with the 16-channel latent and 1+4k grouping."""

    def __init__(self):
        torch.manual_seed(0)
        self.vae = AutoencoderKLWan(
            base_dim=8,
            z_dim=16,
            dim_mult=[1, 2, 2, 2],
            num_res_blocks=1,
            attn_scales=[],
            temperal_downsample=[False, True, True],
        ).eval()
        self.mean = torch.tensor(self.vae.config.latents_mean).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(self.vae.config.latents_std).view(1, -1, 1, 1, 1)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return (self.vae.encode(video).latent_dist.mode() - self.mean) / self.std


@pytest.fixture(scope="module")
def codec():
    return TinyWanCodec()


def _image(b=2, h=32, w=32, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ----------------------------------------------------------------------------- I2V layouts


def test_i2v_mask_official_layout():
    m = i2v_mask(81, 2, 3, batch=2)
    assert m.shape == (2, 4, 21, 2, 3)
    assert torch.equal(m[:, :, 0], torch.ones(2, 4, 2, 3))
    assert torch.equal(m[:, :, 1:], torch.zeros(2, 4, 20, 2, 3))
    # FLF2V: the last pixel frame (80 = 4*(20-1) + 1 + 3) is channel 3 of latent 20
    m = i2v_mask(81, 2, 3, last_frame=True)
    assert torch.equal(m[:, 3, 20], torch.ones(1, 2, 3))
    assert m[:, :3, 20].sum() == 0 and m[:, :, 1:20].sum() == 0
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        i2v_mask(80, 2, 3)


def test_i2v_condition_follows_the_official_recipe(codec):
    image = _image()
    y = i2v_condition(codec, image, num_frames=9)
    assert y.shape == (2, 20, 3, 4, 4)
    assert torch.equal(y[:, :4], i2v_mask(9, 4, 4, batch=2))
    video = torch.zeros(2, 3, 9, 32, 32)
    video[:, :, 0] = image  # the image, then mid-grey (0) frames, encoded together
    torch.testing.assert_close(y[:, 4:], codec.encode(video), rtol=0, atol=0)
    assert y[:, 4:, 1:].abs().sum() > 0  # "empty" frames are real latents of grey, not zeros
    # bicubic resize (no aspect keeping) when a target size is given
    odd = _image(h=40, w=24)
    y2 = i2v_condition(codec, odd, num_frames=5, height=32, width=32)
    video = torch.zeros(2, 3, 5, 32, 32)
    video[:, :, 0] = F.interpolate(odd, size=(32, 32), mode="bicubic", align_corners=False)
    torch.testing.assert_close(y2[:, 4:], codec.encode(video))


def test_fun_control_layout_and_causal_start_latent(codec):
    image = _image()
    y = fun_control_condition(codec, image, num_frames=9)
    assert y.shape == (2, 32, 3, 4, 4)
    assert torch.equal(y[:, :16], torch.zeros(2, 16, 3, 4, 4))  # no control -> zero control slot
    assert torch.equal(y[:, 16:, 1:], torch.zeros(2, 16, 2, 4, 4))  # start latent only in frame 0
    # the causal VAE: encoding the image alone = latent 0 of the image-plus-grey video
    torch.testing.assert_close(
        y[:, 16:, :1], i2v_condition(codec, image, num_frames=9)[:, 4:, :1], atol=1e-5, rtol=1e-5
    )
    control = torch.randn(2, 16, 3, 4, 4)
    y = fun_control_condition(codec, image, num_frames=9, control=control)
    assert torch.equal(y[:, :16], control)
    with pytest.raises(ValueError, match="control slot"):
        compose_condition("fun_control", first_frame=y[:, 16:], track=torch.zeros(2, 8, 3, 4, 4))


def test_condition_channels_and_compose_errors():
    assert condition_channels("t2v") == 0 and condition_channels("t2v", 16) == 16
    assert condition_channels("wan_i2v") == 20 and condition_channels("wan_i2v", 16) == 36
    assert condition_channels("fun_control") == 32 == condition_channels("fun_control", 16)
    assert compose_condition("t2v") is None
    with pytest.raises(ValueError, match="layout"):
        condition_channels("i2v")
    with pytest.raises(ValueError, match="first_frame"):
        compose_condition("t2v", first_frame=torch.zeros(1, 20, 1, 2, 2))
    with pytest.raises(ValueError, match="needs first_frame"):
        compose_condition("wan_i2v", track=torch.zeros(1, 16, 1, 2, 2))
    with pytest.raises(ValueError, match="differ"):
        compose_condition("wan_i2v", first_frame=torch.zeros(1, 20, 2, 2, 2), track=torch.zeros(1, 16, 1, 2, 2))


@pytest.mark.slow
@pytest.mark.parametrize("layout, in_dim", [("wan_i2v", 36), ("fun_control", 48), ("wan_i2v+tracks", 52)])
def test_layouts_end_to_end_through_a_tiny_wan(codec, layout, in_dim):
    image = _image()
    B, T, H, W = 2, 9, 32, 32
    g = torch.Generator().manual_seed(1)
    enc = TrackEncoder(16)
    tracks = torch.rand(B, T, 100, 2, generator=g) * H
    feats = enc(tracks, torch.ones(B, T, 100, dtype=torch.bool), height=H, width=W, generator=g)
    if layout == "fun_control":
        model = build_wan("tiny-i2v", in_dim=48)
        y = fun_control_condition(codec, image, num_frames=T, control=feats)
    elif layout == "wan_i2v":
        model = build_wan("tiny-i2v")
        y = compose_condition("wan_i2v", first_frame=i2v_condition(codec, image, num_frames=T))
    else:
        model = expand_patch_embedding(build_wan("tiny-i2v"), 16)
        y = compose_condition("wan_i2v", first_frame=i2v_condition(codec, image, num_frames=T), track=feats)
    assert model.in_dim == in_dim == 16 + y.shape[1]
    x = torch.randn(B, 16, 3, 4, 4, generator=g)
    with torch.no_grad():
        out = model(x, torch.tensor([900, 100]), torch.randn(B, 5, 64, generator=g), torch.randn(B, 257, 1280), y)
    assert out.shape == (B, 16, 3, 4, 4) and torch.isfinite(out).all()


def test_start_image_latents_errors(codec):
    with pytest.raises(ValueError, match="image"):
        start_image_latents(codec, torch.zeros(2, 32, 32), num_frames=5)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        start_image_latents(codec, _image(), num_frames=4)


# ----------------------------------------------------------------------------- CLIP


def _wan_visual_reference(sd, cfg, image):
    """Wan's VisionTransformer(use_31_block=True), written from the reference description."""
    d, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    x = F.interpolate(image, size=(cfg["image_size"],) * 2, mode="bicubic", align_corners=False) * 0.5 + 0.5
    x = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    x = F.conv2d(x, sd["visual.patch_embedding.weight"], stride=cfg["patch_size"]).flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual.cls_embedding"].expand(x.shape[0], -1, -1), x], dim=1) + sd["visual.pos_embedding"]
    x = F.layer_norm(x, (d,), sd["visual.pre_norm.weight"], sd["visual.pre_norm.bias"], 1e-5)
    for i in range(cfg["num_hidden_layers"] - 1):  # all blocks but the last
        b = f"visual.transformer.{i}."
        h = F.layer_norm(x, (d,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], 1e-5)
        B, S, _ = h.shape
        q, k, v = (
            F.linear(h, sd[b + "attn.to_qkv.weight"], sd[b + "attn.to_qkv.bias"]).view(B, S, 3, heads, -1).unbind(2)
        )
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + F.linear(a.transpose(1, 2).reshape(B, S, d), sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        h = F.layer_norm(x, (d,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], 1e-5)
        x = x + F.linear(
            F.gelu(F.linear(h, sd[b + "mlp.0.weight"], sd[b + "mlp.0.bias"])),
            sd[b + "mlp.2.weight"],
            sd[b + "mlp.2.bias"],
        )
    return x


@pytest.mark.slow
def test_clip_wan_checkpoint_converts_strictly_and_matches_wan_semantics(tmp_path):
    sd = wan_clip_state(TINY_CLIP)
    torch.save(sd, tmp_path / "clip.pth")
    enc = CLIPImageEncoder.from_wan_checkpoint(tmp_path / "clip.pth", config=TINY_CLIP)
    image = _image(h=48, w=40)
    out = enc(image)
    assert out.shape == (2, 5, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, _wan_visual_reference(sd, TINY_CLIP, image), atol=1e-5, rtol=1e-4)

    # the same weights saved in transformers format load through from_pretrained, same output
    enc.model.save_pretrained(tmp_path / "hf")
    again = CLIPImageEncoder.from_pretrained(tmp_path / "hf")
    torch.testing.assert_close(again(image), out)

    # with projection: visual.head becomes visual_projection.weight (transposed), strict load
    proj = CLIPVisionModelWithProjection(CLIPVisionConfig(**dict(VIT_H14_CONFIG, **TINY_CLIP)))
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in proj.state_dict()) else ""
    proj.load_state_dict(convert_wan_clip_visual(sd, prefix=prefix, with_projection=True), strict=True)
    assert torch.equal(proj.visual_projection.weight, sd["visual.head"].t())
    proj.save_pretrained(tmp_path / "hf_proj")
    torch.testing.assert_close(CLIPImageEncoder.from_pretrained(tmp_path / "hf_proj")(image), out)

    with pytest.raises(ValueError, match="unknown CLIP visual key"):
        convert_wan_clip_visual({"visual.transformer.0.attn.weird.weight": torch.zeros(1)})


def test_clip_vit_h14_key_mapping_covers_the_real_model():
    """On meta (no memory): the converted ViT-H/14 keys and shapes equal transformers' exactly."""
    sd = wan_clip_state(VIT_H14_CONFIG, device="meta")
    with torch.device("meta"):
        model = CLIPVisionModel(CLIPVisionConfig(**VIT_H14_CONFIG))
    target = model.state_dict()
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in target) else ""
    conv = convert_wan_clip_visual(sd, prefix=prefix)
    assert set(conv) == set(target)
    assert all(conv[k].shape == target[k].shape for k in target)
    assert target[prefix + "embeddings.position_embedding.weight"].shape == (257, 1280)  # 257 tokens
