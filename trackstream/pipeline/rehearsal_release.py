"""A shrunk Wan release folder for rehearsals: the official file names and key layouts, random weights.

    trackstream rehearsal-release --flavor wan2.1-fun-1.3b-control --out D/Wan2.1-Fun-1.3B-Control
    trackstream rehearsal-release --flavor wan2.2-ti2v-5b --out D/Wan2.2-TI2V-5B --dim 64 --num-layers 2

lays out what a user downloads (the official Wan 2.1 release folders, e.g. Wan-AI/Wan2.1-T2V-1.3B, the I2V-14B
and the alibaba-pai Fun repos, which share these file names; Wan2.2-TI2V-5B with its own VAE): the DiT
(config.json + safetensors, or shards + index), ``Wan2.1_VAE.pth`` (or ``Wan2.2_VAE.pth``),
``models_t5_umt5-xxl-enc-bf16.pth`` + ``google/umt5-xxl/``, and for the flavors with the image branch
``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` + ``xlm-roberta-large/``, every network small (the
DiT at ``--dim`` / ``--num-layers`` / ``--num-heads`` / ``--ffn-dim``, the CLIP at Wan's 1280 width, which the
DiT's image branch requires, with 2 blocks and 2x2 patches). The real recipes run on it with the DiT overrides
it prints (``+model.overrides.dim=64 ...``): the rehearsal of a recipe's exact code path before real weights are
at hand (docs/recipes.md). The tests build their releases with it.
"""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path

import torch

from trackstream.models.codecs import WanVAE, WanVAEConfig
from trackstream.models.codecs.wan22_vae import Wan22VAE, Wan22VAEConfig
from trackstream.models.flavors import FLAVORS, build_wan, flavor_config
from trackstream.models.text_encoders import UMT5_XXL_CONFIG
from trackstream.models.wan_io import save_wan

__all__ = ["write_release_folder", "release_parts", "wan_clip_state", "tiny_t5_tokenizer", "umt5_to_wan_keys", "main"]
SHRINK = dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2)  # the DiT of the CPU rehearsals


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


def tiny_t5_tokenizer():
    """A tiny T5 (Unigram) tokenizer built offline: pad 0, EOS 1, unk 2, letters and a few words."""
    pieces = ["<pad>", "</s>", "<unk>"] + [f"\u2581{c}" for c in string.ascii_lowercase]
    pieces += list(string.ascii_lowercase) + ["\u2581the", "\u2581cat", "\u2581a", "\u2581", "&", "."]
    from transformers import T5Tokenizer

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
# the official block structure at base width 2 (the releases' 96 / 160 / 256): the rehearsals encode and decode
# every clip at its real frame count, so the codec's width sets most of their arithmetic
RELEASE_VAE = WanVAEConfig(base_dim=2, z_dim=16)
RELEASE_VAE22 = Wan22VAEConfig(base_dim=2, decoder_base_dim=4)  # 48 latent channels, H/16


def release_parts(flavor: str) -> tuple[str, ...]:
    """What a release of ``flavor`` ships beside its DiT: the Wan 2.2 VAE for 48-channel latents (else the
    Wan 2.1 VAE), umT5, and the CLIP image encoder for the flavors with the image branch."""
    cfg = flavor_config(flavor)
    vae = "vae22" if cfg.get("out_dim", 16) == 48 else "vae"
    return (vae, "t5", "clip") if cfg["model_type"] in ("i2v", "flf2v") else (vae, "t5")


def write_release_folder(
    root: Path,
    *,
    flavor: str = "tiny-i2v",
    parts=None,
    max_shard_bytes: int | None = None,
    seed: int = 0,
    **dit_overrides,
) -> Path:
    """A release folder at ``root`` (must not exist): the DiT of ``flavor`` (materialised on the CPU, random
    weights, ``dit_overrides`` applied) plus the ``parts`` ("vae" = Wan2.1_VAE.pth, "vae22" = Wan2.2_VAE.pth,
    "t5", "clip"; default: ``release_parts(flavor)``)."""
    from transformers import UMT5Config, UMT5EncoderModel

    parts = release_parts(flavor) if parts is None else parts
    dit_overrides.pop("device", None)  # always materialised: a folder of meta tensors cannot be written
    torch.manual_seed(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    save_wan(build_wan(flavor, device="cpu", **dit_overrides), root, max_shard_bytes=max_shard_bytes)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="trackstream rehearsal-release", description=__doc__.split("\n\n")[0])
    ap.add_argument("--flavor", required=True, choices=sorted(f for f in FLAVORS if not f.startswith("tiny")))
    ap.add_argument("--out", required=True, type=Path, help="the release folder to write (must not exist)")
    for key, value in SHRINK.items():
        ap.add_argument(
            f"--{key.replace('_', '-')}", type=int, default=value, help=f"the DiT's {key} (default {value})"
        )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.out.exists():
        print(f"error: --out {args.out} exists: give a new folder", file=sys.stderr)
        return 2
    dims = {k: getattr(args, k) for k in SHRINK}
    try:
        flavor_config(args.flavor, **dims)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_release_folder(args.out, flavor=args.flavor, seed=args.seed, **dims)
    print(f"wrote {args.out} ({args.flavor}, {', '.join(release_parts(args.flavor))}); run a recipe on it with")
    print("  " + " ".join(f"+model.overrides.{k}={v}" for k, v in dims.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
