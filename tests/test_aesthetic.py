"""The LAION aesthetic predictor (models/aesthetic.py): the CLIP ViT-L/14 tower loads from a Hugging Face folder
and from an OpenAI / open_clip state dict (tiny weights a test writes in each format) to the same embeddings
as transformers' reference model; the head round-trips the released key names; the full-size tower has
OpenAI ViT-L/14's parameter count (built on meta, no weights)."""

import pytest
import torch
from rl_helpers import TINY_CLIP, openai_clip_state_dict, tiny_hf_clip, write_aesthetic_weights
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from trackstream.models.aesthetic import (
    HEAD_KEYS,
    VIT_L14_CONFIG,
    AestheticHead,
    load_aesthetic_head,
    load_aesthetic_predictor,
    load_clip_vision,
    preprocess_openai,
)


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(3)
    return torch.rand(2, 3, 48, 80) * 2 - 1  # [-1, 1], not square: resize + centre crop


def _reference_embeds(model, images):
    with torch.no_grad():
        e = model(pixel_values=preprocess_openai(images)).image_embeds
    return e / e.norm(dim=-1, keepdim=True)


def test_both_clip_formats_load_to_the_reference_embeddings(images, tmp_path):
    ref = tiny_hf_clip(0)
    want = _reference_embeds(ref, images)
    # Hugging Face folder (config.json + model.safetensors), as openai/clip-vit-large-patch14 is laid out
    ref.save_pretrained(tmp_path / "hf")
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    hf = load_clip_vision(tmp_path / "hf")
    torch.testing.assert_close(_reference_embeds(hf, images), want, rtol=0, atol=0)
    # OpenAI / open_clip state dict: fused q|k|v, proj [width, dim], text-tower keys ignored
    sd = openai_clip_state_dict(ref)
    assert "visual.transformer.resblocks.1.attn.in_proj_weight" in sd and sd["visual.proj"].shape == (64, 768)
    torch.save(sd, tmp_path / "ViT-L-14.pt")
    oa = load_clip_vision(tmp_path / "ViT-L-14.pt")
    assert oa.config.hidden_act == "quick_gelu" and oa.config.num_attention_heads == 1
    assert oa.config.image_size == TINY_CLIP["image_size"] and oa.config.num_hidden_layers == TINY_CLIP["layers"]
    torch.testing.assert_close(_reference_embeds(oa, images), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="unknown CLIP visual key"):
        torch.save({**sd, "visual.attnpool.weight": torch.zeros(1)}, tmp_path / "bad.pt")
        load_clip_vision(tmp_path / "bad.pt")


def test_head_round_trips_the_released_key_names_and_the_predictor_scores(images, tmp_path):
    clip, head_path = write_aesthetic_weights(tmp_path)
    sd = torch.load(head_path, weights_only=True)
    assert tuple(sd) == HEAD_KEYS  # layers.0 Linear(768, 1024) ... layers.7 Linear(16, 1)
    assert [tuple(sd[f"layers.{i}.weight"].shape) for i in (0, 2, 4, 6, 7)] == [
        (1024, 768),
        (128, 1024),
        (64, 128),
        (16, 64),
        (1, 16),
    ]
    head = load_aesthetic_head(head_path)
    assert all(torch.equal(head.state_dict()[k], sd[k]) for k in HEAD_KEYS)
    predictor = load_aesthetic_predictor(clip, head_path)
    scores = predictor(images)
    # the head is linear end to end on the L2-normalised embedding (no activations, dropouts inert)
    emb = _reference_embeds(tiny_hf_clip(0), images)
    w = [sd[f"layers.{i}.weight"] for i in (0, 2, 4, 6, 7)]
    b = [sd[f"layers.{i}.bias"] for i in (0, 2, 4, 6, 7)]
    x = emb
    for wi, bi in zip(w, b):
        x = x @ wi.t() + bi
    assert scores.shape == (2,)
    torch.testing.assert_close(scores, x[:, 0], rtol=1e-5, atol=1e-5)
    torch.save({"0.weight": sd["layers.0.weight"]}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="not an improved-aesthetic-predictor head"):
        load_aesthetic_head(tmp_path / "wrong.pth")


def test_full_size_vit_l14_has_openais_parameter_count():
    with torch.device("meta"):
        tower = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_L14_CONFIG))
        head = AestheticHead()
    w, L, p, n = 1024, 24, 14, (224 // 14) ** 2 + 1
    block = (3 * w * w + 3 * w) + (w * w + w) + (4 * w * w + 4 * w) + (4 * w * w + w) + 4 * w  # attn, out, mlp, 2 LNs
    # conv1 (no bias), class, positions, ln_pre, blocks, ln_post, proj [1024, 768] (no bias)
    expected = w * 3 * p * p + w + n * w + 2 * w + L * block + 2 * w + w * 768
    assert sum(t.numel() for t in tower.parameters()) == expected == 303_966_208
    assert (
        sum(t.numel() for t in head.parameters())
        == 768 * 1024 + 1024 + 1024 * 128 + 128 + 128 * 64 + 64 + 64 * 16 + 16 + 17
    )


def test_preprocessing_is_short_side_resize_and_centre_crop():
    x = torch.zeros(1, 3, 40, 100)
    x[..., :, :20] = 1  # a band on the left that the centre crop removes
    out = preprocess_openai(x)
    assert out.shape == (1, 3, 224, 224)
    torch.testing.assert_close(out[0, :, :, 0], out[0, :, :, -1])  # both borders inside the zero region
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        preprocess_openai(torch.zeros(3, 8, 8))


def test_openai_torchscript_file_needs_the_opt_in(tmp_path, monkeypatch):
    """OpenAI's ViT-L-14.pt is a TorchScript archive: torch.jit.load runs its code, so only with the opt-in."""
    path = tmp_path / "ViT-L-14.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    monkeypatch.delenv("TRACKSTREAM_ALLOW_PICKLE", raising=False)
    with pytest.raises(ValueError, match=r"OpenAI's CLIP file .* TorchScript archive.*TRACKSTREAM_ALLOW_PICKLE=1"):
        load_clip_vision(path)
