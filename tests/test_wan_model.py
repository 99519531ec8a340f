"""WanModel contract: flavors and official counts on meta, per-frame timesteps, input checks."""

import pytest
import torch

from trackstream.models.flavors import OFFICIAL_COUNTS, build_wan, flavor_config
from trackstream.models.rope import rope_axis_pairs
from trackstream.models.wan import WanModel
from trackstream.models.wan_embeddings import sinusoidal_embedding


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS))
def test_real_flavors_on_meta_have_official_counts(name):
    params, tensors = OFFICIAL_COUNTS[name]
    model = build_wan(name)
    assert all(p.is_meta for p in model.parameters())  # nothing allocated
    assert sum(p.numel() for p in model.parameters()) == params
    if tensors is not None:
        assert len(model.state_dict()) == tensors


@pytest.mark.slow
def test_official_key_names_1_3b():
    keys = set(build_wan("wan2.1-t2v-1.3b").state_dict())
    for k in [
        "patch_embedding.weight",
        "text_embedding.0.weight",
        "text_embedding.2.bias",
        "time_embedding.0.weight",
        "time_projection.1.weight",
        "head.modulation",
        "head.head.weight",
        "blocks.29.modulation",
        "blocks.0.self_attn.norm_q.weight",
        "blocks.0.norm3.weight",
        "blocks.0.norm3.bias",
        "blocks.0.cross_attn.o.bias",
        "blocks.0.ffn.0.weight",
        "blocks.0.ffn.2.bias",
    ]:
        assert k in keys, k
    assert not any("norm1" in k or "norm2" in k for k in keys)  # non-affine norms hold no tensors
    i2v = set(build_wan("wan2.1-i2v-14b").state_dict())
    assert {
        "img_emb.proj.0.weight",
        "img_emb.proj.4.bias",
        "blocks.0.cross_attn.k_img.weight",
        "blocks.0.cross_attn.norm_k_img.weight",
    } <= i2v


def _randomised_head(model):
    for p in model.head.head.parameters():  # the official init zeroes the output head
        torch.nn.init.normal_(p, std=0.1)
    return model


def test_per_frame_timesteps_equal_scalar_timesteps():
    model = _randomised_head(build_wan("tiny").eval())
    B, F = 2, 5
    x, ctx = torch.randn(B, 16, F, 8, 8), torch.randn(B, 9, 64)
    t = torch.tensor([812.0, 37.0])
    with torch.no_grad():
        a = model(x, t, ctx)
        b = model(x, t[:, None].expand(B, F).clone(), ctx)
        c = model(x, torch.tensor([[812.0] * F, [37.0] * F]), ctx)
    assert torch.equal(a, b) and torch.equal(a, c)
    # and per-frame timesteps really act per frame
    t2 = t[:, None].repeat(1, F)
    t2[:, -1] = 500.0
    with torch.no_grad():
        d = model(x, t2, ctx)
    assert not torch.allclose(a, d)


def test_zero_head_init_and_shapes():
    model = build_wan("tiny")
    out = model(torch.randn(1, 16, 3, 8, 8), torch.tensor([10]), torch.randn(1, 4, 64))
    assert out.shape == (1, 16, 3, 8, 8) and out.dtype == torch.float32
    assert torch.count_nonzero(out) == 0  # official init: zero output projection


def test_sinusoid_cos_first_and_rope_split():
    emb = sinusoidal_embedding(torch.tensor([0.0]), 256)
    assert torch.all(emb[0, :128] == 1) and torch.all(emb[0, 128:] == 0)
    assert rope_axis_pairs(128) == (22, 21, 21)


def test_text_padding_is_zero_rows():
    """Context rows beyond the given length equal explicit zero rows (Wan pads with zeros, no mask)."""
    model = build_wan("tiny").eval()
    for p in model.head.head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, ctx = torch.randn(1, 16, 1, 4, 4), torch.randn(1, 5, 64)
    with torch.no_grad():
        a = model(x, torch.tensor([100]), ctx)
        b = model(x, torch.tensor([100]), torch.cat([ctx, torch.zeros(1, 32 - 5, 64)], 1))
        c = model(x, torch.tensor([100]), torch.cat([ctx, torch.randn(1, 3, 64)], 1), context_lens=torch.tensor([5]))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(a, c, rtol=0, atol=1e-6)


def test_clear_errors():
    model = build_wan("tiny")
    with pytest.raises(ValueError, match="in_dim"):
        model(torch.randn(1, 20, 1, 4, 4), torch.tensor([1]), torch.randn(1, 4, 64))
    with pytest.raises(ValueError, match="text_len"):
        model(torch.randn(1, 16, 1, 4, 4), torch.tensor([1]), torch.randn(1, 40, 64))
    with pytest.raises(ValueError, match="t has shape"):
        model(torch.randn(1, 16, 2, 4, 4), torch.tensor([[1, 2, 3]]), torch.randn(1, 4, 64))
    with pytest.raises(ValueError, match="clip_fea"):
        build_wan("tiny-i2v")(
            torch.randn(1, 16, 1, 4, 4), torch.tensor([1]), torch.randn(1, 4, 64), y=torch.randn(1, 20, 1, 4, 4)
        )
    with pytest.raises(ValueError, match="unknown model flavor"):
        flavor_config("wan-tiny")
    with pytest.raises(ValueError, match="model_type"):
        WanModel(model_type="t2i")


def test_bf16_inference_cast_keeps_fp32_parts():
    model = build_wan("tiny").cast_for_inference(torch.bfloat16)
    assert model.blocks[0].self_attn.q.weight.dtype == torch.bfloat16
    assert model.blocks[0].modulation.dtype == torch.float32
    assert model.time_embedding[0].weight.dtype == torch.float32
    out = model(torch.randn(1, 16, 2, 4, 4), torch.tensor([500]), torch.randn(1, 4, 64))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_gradient_checkpointing_matches():
    model = build_wan("tiny")
    for p in model.head.head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, ctx = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 4, 64)
    model(x, torch.tensor([300]), ctx).square().mean().backward()
    g1 = model.blocks[0].self_attn.q.weight.grad.clone()
    model.zero_grad()
    model.gradient_checkpointing = True
    model(x, torch.tensor([300]), ctx).square().mean().backward()
    torch.testing.assert_close(model.blocks[0].self_attn.q.weight.grad, g1)
