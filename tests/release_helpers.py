"""Fake Wan release folders for the tests: the official file names and key layouts, tiny shapes.

``write_release_folder`` lays out what a user downloads (the official Wan 2.1 release folders, e.g. Wan-AI/Wan2.1-T2V-1.3B,
the I2V-14B and the alibaba-pai Fun repos, which share these file names): the DiT
(config.json + safetensors, or shards + index), ``Wan2.1_VAE.pth``, ``models_t5_umt5-xxl-enc-bf16.pth``
+ ``google/umt5-xxl/``, ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` +
``xlm-roberta-large/``, with random weights of small configs (the CLIP keeps Wan's 1280 width,
which the DiT's image branch requires, with 2 blocks and 2x2 patches).
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

from trackstream.models.codecs import WanVAE, WanVAEConfig
from trackstream.models.codecs.wan22_vae import Wan22VAE, Wan22VAEConfig
from trackstream.models.flavors import build_wan
from trackstream.models.text_encoders import UMT5_XXL_CONFIG
from trackstream.models.wan_io import save_wan

TINY_CLIP = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=28,
    patch_size=14,
    projection_dim=16,
)


def wan_clip_state(cfg: dict, *, device="cpu", seed=0) -> dict[str, torch.Tensor]:
    """A Wan/open-clip format CLIP checkpoint (visual + a stub text tower) with random values."""
    g = torch.Generator().manual_seed(seed)
    d, f, p = cfg["hidden_size"], cfg["intermediate_size"], cfg["patch_size"]
    n_tok = (cfg["image_size"] // p) ** 2 + 1

    def r(*shape):
        if device == "meta":
            return torch.empty(*shape, device="meta")
        return torch.randn(*shape, generator=g) * 0.2

    sd = {
        "visual.patch_embedding.weight": r(d, 3, p, p),
        "visual.cls_embedding": r(1, 1, d),
        "visual.pos_embedding": r(1, n_tok, d),
        "visual.pre_norm.weight": 1 + r(d),
        "visual.pre_norm.bias": r(d),
        "visual.post_norm.weight": 1 + r(d),
        "visual.post_norm.bias": r(d),
        "visual.head": r(d, cfg["projection_dim"]),
        "textual.token_embedding.weight": r(10, 4),
        "log_scale": r(()),
    }
    for i in range(cfg["num_hidden_layers"]):
        b = f"visual.transformer.{i}."
        sd.update(
            {
                b + "norm1.weight": 1 + r(d),
                b + "norm1.bias": r(d),
                b + "attn.to_qkv.weight": r(3 * d, d),
                b + "attn.to_qkv.bias": r(3 * d),
                b + "attn.proj.weight": r(d, d),
                b + "attn.proj.bias": r(d),
                b + "norm2.weight": 1 + r(d),
                b + "norm2.bias": r(d),
                b + "mlp.0.weight": r(f, d),
                b + "mlp.0.bias": r(f),
                b + "mlp.2.weight": r(d, f),
                b + "mlp.2.bias": r(d),
            }
        )
    return sd


TINY_UMT5 = dict(
    vocab_size=64,
    d_model=16,
    d_kv=8,
    d_ff=32,
    num_layers=2,
    num_heads=2,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
)


def tiny_t5_tokenizer() -> T5Tokenizer:
    """A tiny T5 (Unigram) tokenizer built offline: pad 0, EOS 1, unk 2, letters and a few words."""
    pieces = ["<pad>", "</s>", "<unk>"] + [f"\u2581{c}" for c in string.ascii_lowercase]
    pieces += list(string.ascii_lowercase) + ["\u2581the", "\u2581cat", "\u2581a", "\u2581", "&", "."]
    return T5Tokenizer(vocab=[(p, -float(i)) for i, p in enumerate(pieces)], extra_ids=0)


def umt5_to_wan_keys(hf_state: dict) -> dict:
    """transformers UMT5EncoderModel keys -> Wan's T5 encoder keys, written out per §6."""
    names = {
        "layer.0.layer_norm.weight": "norm1.weight",
        "layer.0.SelfAttention.q.weight": "attn.q.weight",
        "layer.0.SelfAttention.k.weight": "attn.k.weight",
        "layer.0.SelfAttention.v.weight": "attn.v.weight",
        "layer.0.SelfAttention.o.weight": "attn.o.weight",
        "layer.0.SelfAttention.relative_attention_bias.weight": "pos_embedding.embedding.weight",
        "layer.1.layer_norm.weight": "norm2.weight",
        "layer.1.DenseReluDense.wi_0.weight": "ffn.gate.0.weight",
        "layer.1.DenseReluDense.wi_1.weight": "ffn.fc1.weight",
        "layer.1.DenseReluDense.wo.weight": "ffn.fc2.weight",
    }
    out = {
        "token_embedding.weight": hf_state["shared.weight"],
        "norm.weight": hf_state["encoder.final_layer_norm.weight"],
    }
    for k, v in hf_state.items():
        if k.startswith("encoder.block."):
            i, rest = k[len("encoder.block.") :].split(".", 1)
            out[f"blocks.{i}.{names[rest]}"] = v.clone()
    return out


# Wan's CLIP width (the DiT's img_emb input) with 2 blocks on a 28 px image: 5 tokens.
RELEASE_CLIP = dict(
    hidden_size=1280,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=16,
    image_size=28,
    patch_size=14,
    projection_dim=16,
)
RELEASE_VAE = WanVAEConfig(base_dim=8, z_dim=16)
RELEASE_VAE22 = Wan22VAEConfig(base_dim=8, decoder_base_dim=16)  # 48 latent channels, H/16


def write_release_folder(
    root: Path,
    *,
    flavor: str = "tiny-i2v",
    parts=("vae", "t5", "clip"),
    max_shard_bytes: int | None = None,
    seed: int = 0,
    **dit_overrides,
) -> Path:
    """A release folder at ``root`` (must not exist): the DiT of ``flavor`` plus the ``parts`` ("vae" =
    Wan2.1_VAE.pth, "vae22" = Wan2.2_VAE.pth, "t5", "clip")."""
    torch.manual_seed(seed)
    save_wan(build_wan(flavor, **dit_overrides), root, max_shard_bytes=max_shard_bytes)
    if "vae" in parts:
        torch.save(WanVAE.from_config(RELEASE_VAE).official_state_dict(), root / "Wan2.1_VAE.pth")
    if "vae22" in parts:  # the Wan 2.2 TI2V-5B release ships its own 48-channel VAE
        torch.save(Wan22VAE.from_config(RELEASE_VAE22).official_state_dict(), root / "Wan2.2_VAE.pth")
    if "t5" in parts:
        t5 = UMT5EncoderModel(UMT5Config(**dict(UMT5_XXL_CONFIG, **TINY_UMT5))).eval()
        torch.save(umt5_to_wan_keys(t5.state_dict()), root / "models_t5_umt5-xxl-enc-bf16.pth")
        tiny_t5_tokenizer().save_pretrained(root / "google" / "umt5-xxl")
    if "clip" in parts:
        torch.save(
            wan_clip_state(RELEASE_CLIP, seed=seed), root / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
        )
        (root / "xlm-roberta-large").mkdir()
    return root
