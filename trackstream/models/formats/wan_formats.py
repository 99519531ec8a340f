"""Wan DiT checkpoint formats: the official and the diffusers names of the same weights and config.

Key renames in both directions (``official_to_diffusers``, ``diffusers_to_official``; ``to_official``
after ``detect_format`` tells a state dict's format from its keys), the wrapper prefixes a saved
state dict may carry (``strip_wrapper_prefix``), and config.json in both formats: ``config_from_json``
reads either into ``WanModel`` kwargs, ``official_config_json`` / ``diffusers_config_json`` write one.
Nothing here reads or writes a file: ``checkpoint`` (state dicts) and ``models.wan_io`` (a WanModel) do,
through these.
"""

from __future__ import annotations

import re

import torch

from trackstream.models.wan import WanModel

__all__ = [
    "CheckpointError",
    "official_to_diffusers",
    "diffusers_to_official",
    "detect_format",
    "to_official",
    "strip_wrapper_prefix",
    "config_from_json",
    "official_config_json",
    "diffusers_config_json",
]

# Official -> diffusers renames. Top-level prefixes, then per-block suffix prefixes.
_TOP = [
    ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
    ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
    ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
    ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
    ("time_projection.1.", "condition_embedder.time_proj."),
    ("head.modulation", "scale_shift_table"),
    ("head.head.", "proj_out."),
    ("img_emb.proj.0.", "condition_embedder.image_embedder.norm1."),
    ("img_emb.proj.1.", "condition_embedder.image_embedder.ff.net.0.proj."),
    ("img_emb.proj.3.", "condition_embedder.image_embedder.ff.net.2."),
    ("img_emb.proj.4.", "condition_embedder.image_embedder.norm2."),
    ("img_emb.emb_pos", "condition_embedder.image_embedder.pos_embed"),
    ("patch_embedding.", "patch_embedding."),
]
_BLOCK = [
    ("modulation", "scale_shift_table"),
    ("self_attn.q.", "attn1.to_q."),
    ("self_attn.k.", "attn1.to_k."),
    ("self_attn.v.", "attn1.to_v."),
    ("self_attn.o.", "attn1.to_out.0."),
    ("self_attn.norm_q.", "attn1.norm_q."),
    ("self_attn.norm_k.", "attn1.norm_k."),
    ("cross_attn.q.", "attn2.to_q."),
    ("cross_attn.k.", "attn2.to_k."),
    ("cross_attn.v.", "attn2.to_v."),
    ("cross_attn.o.", "attn2.to_out.0."),
    ("cross_attn.norm_q.", "attn2.norm_q."),
    ("cross_attn.norm_k.", "attn2.norm_k."),
    ("cross_attn.k_img.", "attn2.add_k_proj."),
    ("cross_attn.v_img.", "attn2.add_v_proj."),
    ("cross_attn.norm_k_img.", "attn2.norm_added_k."),
    ("norm3.", "norm2."),  # the affine cross-attention norm: diffusers swaps norm2/norm3 names
    ("ffn.0.", "ffn.net.0.proj."),
    ("ffn.2.", "ffn.net.2."),
]
# diffusers declares this key unused (``_keys_to_ignore_on_load_unexpected``); so do we.
_DIFFUSERS_IGNORED = re.compile(r"^blocks\.\d+\.attn2\.norm_added_q\.")
_WRAPPER_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "module.", "_orig_mod.", "model.")
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message says what and how to fix it."""


def _rename(key: str, top, block, src: int) -> str | None:
    dst = 1 - src
    m = _BLOCK_KEY.match(key)
    if m:
        for pair in block:
            if m.group(2).startswith(pair[src]):
                return f"blocks.{m.group(1)}.{pair[dst]}{m.group(2)[len(pair[src]) :]}"
        return None
    for pair in top:
        if key.startswith(pair[src]):
            return pair[dst] + key[len(pair[src]) :]
    return None


def official_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        new = _rename(k, _TOP, _BLOCK, src=0)
        if new is None:
            raise CheckpointError(f"official key {k!r} has no diffusers equivalent")
        out[new] = v
    return out


def diffusers_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if _DIFFUSERS_IGNORED.match(k):
            continue
        new = _rename(k, _TOP, _BLOCK, src=1)
        out[new if new is not None else f"<unmapped diffusers key> {k}"] = v
    return out


def detect_format(keys) -> str:
    keys = list(keys)
    if any(k.startswith("condition_embedder.") or ".attn1." in k or k.startswith("proj_out.") for k in keys):
        return "diffusers"
    if any(k.startswith(("time_embedding.", "head.head.")) or ".self_attn." in k for k in keys):
        return "official"
    raise CheckpointError(
        f"cannot tell the format of a checkpoint whose keys start {keys[:5]}: expected Wan official "
        "(blocks.N.self_attn.q.weight, head.head.weight) or diffusers (condition_embedder.*, blocks.N.attn1.*)"
    )


def strip_wrapper_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a prefix every key shares (DDP ``module.``, compile ``_orig_mod.``, ComfyUI ...)."""
    changed = True
    while changed and sd:
        changed = False
        for p in _WRAPPER_PREFIXES:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p) :]: v for k, v in sd.items()}
                changed = True
    return sd


def to_official(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    fmt = detect_format(sd.keys())
    return (diffusers_to_official(sd) if fmt == "diffusers" else sd), fmt


# ----------------------------------------------------------------------------- config.json


def config_from_json(config: dict) -> dict:
    """WanModel kwargs from an official or a diffusers config.json."""
    if config.get("_class_name") == "WanTransformer3DModel" or "num_attention_heads" in config:
        heads, head_dim = config["num_attention_heads"], config["attention_head_dim"]
        if config.get("pos_embed_seq_len"):
            model_type = "flf2v"
        elif config.get("image_dim") or config.get("added_kv_proj_dim"):
            model_type = "i2v"
        elif config["in_channels"] == config["out_channels"] == 48:
            model_type = "ti2v"  # Wan 2.2 TI2V-5B: 48-channel latents, no image branch
        else:
            model_type = "t2v"
        qk = config.get("qk_norm", "rms_norm_across_heads")
        if qk not in (None, "rms_norm_across_heads"):
            raise CheckpointError(f"diffusers qk_norm={qk!r} is not Wan 2.1's rms_norm_across_heads")
        return dict(
            model_type=model_type,
            patch_size=tuple(config.get("patch_size", (1, 2, 2))),
            in_dim=config["in_channels"],
            out_dim=config["out_channels"],
            dim=heads * head_dim,
            num_heads=heads,
            ffn_dim=config["ffn_dim"],
            num_layers=config["num_layers"],
            freq_dim=config.get("freq_dim", 256),
            text_dim=config.get("text_dim", 4096),
            eps=config.get("eps", 1e-6),
            cross_attn_norm=config.get("cross_attn_norm", True),
            qk_norm=qk is not None,
            text_len=config.get("text_len", 512),
        )
    fields = set(WanModel.__init__.__code__.co_varnames[1 : WanModel.__init__.__code__.co_argcount])
    cfg = {k: v for k, v in config.items() if k in fields}
    for k in ("patch_size", "window_size"):
        if k in cfg:
            cfg[k] = tuple(cfg[k])
    return cfg


def official_config_json(model: WanModel) -> dict:
    return {"_class_name": "WanModel", "_diffusers_version": "0.30.0", **model.config()}


def diffusers_config_json(model: WanModel) -> dict:
    image = model.model_type in ("i2v", "flf2v")
    return {
        "_class_name": "WanTransformer3DModel",
        "patch_size": list(model.patch_size),
        "num_attention_heads": model.num_heads,
        "attention_head_dim": model.head_dim,
        "in_channels": model.in_dim,
        "out_channels": model.out_dim,
        "text_dim": model.text_dim,
        "freq_dim": model.freq_dim,
        "ffn_dim": model.ffn_dim,
        "num_layers": model.num_layers,
        "cross_attn_norm": model.cross_attn_norm,
        "qk_norm": "rms_norm_across_heads" if model.qk_norm else None,
        "eps": model.eps,
        "image_dim": 1280 if image else None,
        "added_kv_proj_dim": model.dim if image else None,
        "rope_max_seq_len": 1024,
        "pos_embed_seq_len": 514 if model.model_type == "flf2v" else None,
        # text_len is not a diffusers field (it pads to 512 upstream); record it only when it differs
        **({"text_len": model.text_len} if model.text_len != 512 else {}),
    }
