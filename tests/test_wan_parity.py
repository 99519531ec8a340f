"""Parity of our WanModel with diffusers' WanTransformer3DModel (an implementation nobody here
wrote): same random weights through the key map, fp32, max-abs difference <= 1e-5."""

import pytest
import torch

from trackstream.models.formats.wan_formats import diffusers_to_official, official_to_diffusers
from trackstream.models.wan import WanModel

diffusers = pytest.importorskip("diffusers")
from diffusers import WanTransformer3DModel  # noqa: E402

# diffusers hard-codes the 512-token text split for I2V, so use the real text_len.
HEADS, HEAD_DIM, LAYERS, TEXT_DIM, TEXT_LEN = 2, 64, 2, 48, 512


def _pair(model_type: str, in_dim: int, out_dim: int = 16):
    image = model_type == "i2v"
    theirs = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM,
        in_channels=in_dim,
        out_channels=out_dim,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=160,
        num_layers=LAYERS,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        image_dim=1280 if image else None,
        added_kv_proj_dim=HEADS * HEAD_DIM if image else None,
        rope_max_seq_len=1024,
    ).eval()
    # diffusers zero-inits some tensors; randomise all so every weight is exercised.
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    ours = WanModel(
        model_type=model_type,
        in_dim=in_dim,
        dim=HEADS * HEAD_DIM,
        ffn_dim=160,
        freq_dim=256,
        text_dim=TEXT_DIM,
        text_len=TEXT_LEN,
        out_dim=out_dim,
        num_heads=HEADS,
        num_layers=LAYERS,
    ).eval()
    ours.load_state_dict(diffusers_to_official(theirs.state_dict()), strict=True)
    return ours, theirs


@pytest.mark.parametrize("model_type,in_dim", [("t2v", 16), ("i2v", 36)])
def test_parity_with_diffusers(model_type, in_dim):
    ours, theirs = _pair(model_type, in_dim)
    B, F, H, W, L = 2, 3, 8, 12, 11
    x = torch.randn(B, 16, F, H, W)
    y = torch.randn(B, in_dim - 16, F, H, W) if in_dim > 16 else None
    t = torch.tensor([999, 317])
    ctx = torch.randn(B, L, TEXT_DIM)
    clip = torch.randn(B, 257, 1280) if model_type == "i2v" else None
    with torch.no_grad():
        out = ours(x, t, ctx, clip_fea=clip, y=y)
        # Wan pads the text to text_len with zeros before the embedding; diffusers expects it padded.
        ctx_pad = torch.nn.functional.pad(ctx, (0, 0, 0, TEXT_LEN - L))
        ref = theirs(
            hidden_states=x if y is None else torch.cat([x, y], 1),
            timestep=t,
            encoder_hidden_states=ctx_pad,
            encoder_hidden_states_image=clip,
            return_dict=False,
        )[0]
    assert out.shape == (B, 16, F, H, W)
    err = (out - ref).abs().max().item()
    assert err <= 1e-5, f"max abs diff {err:.3e} vs diffusers ({model_type})"
    assert ref.abs().max() > 1e-2  # the comparison is not between two near-zero tensors


def test_ti2v_parity_with_per_frame_timesteps():
    """Wan 2.2 TI2V-5B's image conditioning: the clean first latent frame at t = 0 while the others are
    noisy. Our per-frame t [B, F] equals diffusers' per-token timesteps [B, tokens] (expand_timesteps)."""
    ours, theirs = _pair("ti2v", 48, out_dim=48)
    B, F, H, W, L = 2, 3, 8, 12, 7
    x = torch.randn(B, 48, F, H, W)
    t = torch.tensor([[0.0, 700.0, 700.0], [0.0, 250.0, 250.0]])  # frame 0 is the given image
    ctx = torch.randn(B, L, TEXT_DIM)
    with torch.no_grad():
        out = ours(x, t, ctx)
        per_token = t.repeat_interleave((H // 2) * (W // 2), dim=1)  # [B, F * h * w] after the 1x2x2 patches
        ref = theirs(
            hidden_states=x,
            timestep=per_token,
            return_dict=False,
            encoder_hidden_states=torch.nn.functional.pad(ctx, (0, 0, 0, TEXT_LEN - L)),
        )[0]
    err = (out - ref).abs().max().item()
    assert out.shape == (B, 48, F, H, W) and err <= 1e-5, f"max abs diff {err:.3e} vs diffusers (ti2v)"
    assert ref.abs().max() > 1e-2


@pytest.mark.slow
def test_ti2v_5b_counts_equal_diffusers_on_the_official_config():
    from trackstream.models.flavors import OFFICIAL_COUNTS, build_wan
    from trackstream.models.formats.wan_formats import config_from_json, diffusers_config_json

    ours = build_wan("wan2.2-ti2v-5b")
    with torch.device("meta"):
        theirs = WanTransformer3DModel(**{k: v for k, v in diffusers_config_json(ours).items() if k != "_class_name"})
    n, keys = OFFICIAL_COUNTS["wan2.2-ti2v-5b"]
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters()) == n
    assert len(ours.state_dict()) == len(theirs.state_dict()) == keys
    assert config_from_json(diffusers_config_json(ours))["model_type"] == "ti2v"


def test_key_maps_are_inverse():
    ours, theirs = _pair("i2v", 36)
    sd = ours.state_dict()
    back = diffusers_to_official(official_to_diffusers(sd))
    assert set(back) == set(sd)
    assert set(official_to_diffusers(sd)) == set(theirs.state_dict())
