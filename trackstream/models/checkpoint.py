"""Wan DiT checkpoint adapters: official and diffusers formats, in both directions.

Accepted inputs (all local paths):
- an official file: ``diffusion_pytorch_model.safetensors`` / ``*.pth`` / ``*.pt``;
- a sharded checkpoint through its index json (``*.safetensors.index.json``);
- a folder: official (``config.json`` with ``_class_name: WanModel`` + weights), a diffusers
  transformer folder (``WanTransformer3DModel``), or a diffusers pipeline root (``transformer/``).
Keys may carry a wrapper prefix (``model.``, ``module.``, ``_orig_mod.``, ``diffusion_model.``),
which is stripped. A training checkpoint holding several networks (Self-Forcing / CausVid / LongLive
``.pt``: ``{"generator": ..., "generator_ema": ..., "critic": ...}``) is read through a subkey,
written ``PATH::generator_ema`` where one string must carry both (``split_subkey``;
``model.init_from``). LoRA adapter files are refused (merge them into their base first). Loading is
strict by default; a mismatch raises ``CheckpointError`` naming the detected format and the
missing / unexpected keys.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from trackstream.models.wan import WanModel

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = WEIGHTS_NAME + ".index.json"

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
# adapter weights (PEFT ``lora_A`` / ``lora_B``, kohya ``lora_down`` / ``lora_up``) are deltas, not a network
_LORA_KEY = re.compile(r"\.lora_(A|B|down|up)\b")

SUBKEY_SEP = "::"
# files an exported DiT folder (models.wan_export) carries beside the Wan weights: the rest of a
# TrackStream network (track head, text projection) and how to call it; read back by model.init_from
SIDE_HEADS = "trackstream_heads.pt"
SIDE_NETWORK = "trackstream_network.json"


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message says what and how to fix it."""


def split_subkey(spec: str | os.PathLike) -> tuple[str, str | None]:
    """``"PATH::name"`` -> ``(PATH, name)``; anything else -> ``(spec, None)``.

    The split is on the LAST ``::`` and only when what follows is a plain entry name (no path
    separator); a path that exists as written is never split, so a file whose own name contains
    ``::`` still loads (it just cannot be given a subkey in this notation)."""
    spec = os.fspath(spec)
    path, sep, name = spec.rpartition(SUBKEY_SEP)
    if not sep or not name or "/" in name or os.sep in name or Path(spec).exists():
        return spec, None
    if not path:
        raise CheckpointError(f"{spec!r}: nothing before {SUBKEY_SEP!r}; write PATH{SUBKEY_SEP}<entry>")
    return path, name


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


# ----------------------------------------------------------------------------- reading


# what to do about a checkpoint file that does not parse, unless the caller knows better (an export says
# which command writes it again)
REDOWNLOAD = "download or export it again (a Wan release: the model card; a TrackStream export: its stage)"


def _read_file(path: Path, fix: str = REDOWNLOAD) -> dict[str, torch.Tensor]:
    from trackstream.models.files import read_safetensors, read_torch_file

    if path.suffix == ".safetensors":
        return read_safetensors(path, fix=fix)
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        obj = read_torch_file(path, fix=fix, mmap=True)
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            subs = [k for k, v in obj.items() if isinstance(v, dict)] if isinstance(obj, dict) else []
            raise CheckpointError(
                f"{path} is not a flat state dict; it holds the sub-dicts {subs}: name one as "
                f"{path}{SUBKEY_SEP}<name> (model.init_from) or subkey=<name> (e.g. 'generator_ema' or 'state_dict')"
            )
        return obj
    raise CheckpointError(f"unsupported checkpoint file {path}: use .safetensors, .pth, .pt, .bin or an index .json")


def _read_index(index: Path, fix: str = REDOWNLOAD) -> dict[str, torch.Tensor]:
    from trackstream.models.files import read_json_file

    weight_map = read_json_file(index, fix=fix, require=("weight_map",))["weight_map"]
    sd: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index.parent / shard
        if not shard_path.exists():
            raise CheckpointError(f"shard {shard_path} listed in {index} is missing")
        sd.update(_read_file(shard_path, fix))
    return sd


def _resolve_folder(folder: Path) -> Path:
    """A diffusers pipeline root holds the DiT in transformer/; otherwise use the folder itself."""
    if (folder / "transformer").is_dir() and not (folder / "config.json").exists():
        return folder / "transformer"
    if (folder / "transformer").is_dir() and json.loads((folder / "config.json").read_text()).get(
        "_class_name", ""
    ).endswith("Pipeline"):
        return folder / "transformer"
    return folder


def read_state_dict(
    path: str | os.PathLike, subkey: str | None = None, *, fix: str = REDOWNLOAD
) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Read weights and (if present) config.json from a file, an index json or a folder. A file that does
    not parse is a one-line ValueError naming it and ``fix`` (``models.files``)."""
    from trackstream.models.files import read_json_file, read_torch_file

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint path {path} does not exist")
    config = None
    if subkey is not None and (path.is_dir() or path.suffix in (".json", ".safetensors")):
        raise CheckpointError(
            f"{path}{SUBKEY_SEP}{subkey}: a subkey names an entry of a .pt / .pth training checkpoint; "
            f"{path.name} is a folder or a plain weights file: drop {SUBKEY_SEP}{subkey}"
        )
    if path.is_dir():
        path = _resolve_folder(path)
        if (path / "config.json").exists():
            config = read_json_file(path / "config.json", fix=fix)
        indexes = sorted(path.glob("*.safetensors.index.json")) + sorted(path.glob("*.bin.index.json"))
        singles = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.pth"))
        if len(singles) > 1 and not indexes and any(p.suffix == ".pth" for p in singles):
            # a release folder: the DiT sits beside the VAE / T5 / CLIP .pth files
            from trackstream.models.release_folder import find_release

            try:
                singles = find_release(path).require("dit", field_name="checkpoint").dit
            except ValueError as e:
                raise CheckpointError(str(e)) from None
        if indexes:
            sd = _read_index(indexes[0], fix)
        elif len(singles) == 1:
            sd = _read_file(singles[0], fix)
        else:
            raise CheckpointError(
                f"{path} holds {len(singles)} weight files and no index json; point at one file or add the index"
            )
    elif path.name.endswith(".json"):
        sd = _read_index(path, fix)
        if (path.parent / "config.json").exists():
            config = read_json_file(path.parent / "config.json", fix=fix)
    else:
        if subkey is not None:
            obj = read_torch_file(path, fix=fix, mmap=True)
            if not isinstance(obj, dict) or subkey not in obj:
                have = list(obj) if isinstance(obj, dict) else type(obj).__name__
                raise CheckpointError(f"{path} has no entry {subkey!r}; it has {have}")
            sd = obj[subkey]
            if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
                raise CheckpointError(
                    f"{path}{SUBKEY_SEP}{subkey} is not a state dict (name -> tensor); pick another entry"
                )
        else:
            sd = _read_file(path, fix)
        if (path.parent / "config.json").exists():
            config = read_json_file(path.parent / "config.json", fix=fix)
    lora = sorted(k for k in sd if _LORA_KEY.search(k))
    if lora:
        raise CheckpointError(
            f"{path}{SUBKEY_SEP + subkey if subkey else ''} holds LoRA adapter weights ({lora[0]}, ...), not a "
            "network: merge the adapter into its base first (PEFT merge_and_unload) and save the merged state dict"
        )
    return strip_wrapper_prefix(sd), config


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


def to_official(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    fmt = detect_format(sd.keys())
    return (diffusers_to_official(sd) if fmt == "diffusers" else sd), fmt


def load_into(
    model: WanModel,
    sd: dict[str, torch.Tensor],
    *,
    strict: bool = True,
    fmt: str | None = None,
    source: str = "state dict",
):
    """Load an official- or diffusers-format state dict into ``model`` (meta models are assigned)."""
    sd, detected = to_official(sd)
    fmt = fmt or detected
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shape_bad = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(sd) & set(expected)
        if sd[k].shape != expected[k].shape
    )
    if shape_bad or (strict and (missing or unexpected)):

        def _fmt(items):
            return (", ".join(items[:12]) + (f" ... (+{len(items) - 12} more)" if len(items) > 12 else "")) or "none"

        raise CheckpointError(
            f"{source} (detected format: {fmt}) does not match WanModel({model.model_type}, dim={model.dim}, "
            f"layers={model.num_layers}, in_dim={model.in_dim}): missing keys ({len(missing)}): {_fmt(missing)}; "
            f"unexpected keys ({len(unexpected)}): {_fmt(unexpected)}; shape mismatches: {_fmt(shape_bad)}; "
            "check that the flavor / config.json matches the checkpoint, or pass strict=False to load a subset"
        )
    is_meta = any(p.is_meta for p in model.parameters())
    model.load_state_dict({k: v for k, v in sd.items() if k in expected}, strict=strict, assign=is_meta)
    return model


def load_wan(
    path: str | os.PathLike,
    *,
    config: dict | None = None,
    strict: bool = True,
    dtype: torch.dtype | None = None,
    subkey: str | None = None,
) -> WanModel:
    """Build a WanModel from a checkpoint path; the config comes from ``config`` or config.json."""
    sd, file_cfg = read_state_dict(path, subkey=subkey)
    if config is None:
        if file_cfg is None:
            raise CheckpointError(
                f"no config.json next to {path}: pass config=flavor_config('<flavor>') (see models.flavors)"
            )
        config = config_from_json(file_cfg)
    with torch.device("meta"):
        model = WanModel(**config)
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    load_into(model, sd, strict=strict, source=str(path))
    if any(p.is_meta for p in model.parameters()):  # strict=False left some weights unset
        model.to_empty(device="cpu")
        raise CheckpointError(f"{path}: some parameters were not in the checkpoint; cannot leave them on meta")
    return model


# ----------------------------------------------------------------------------- writing


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


def save_wan(
    model: WanModel, out_dir: str | os.PathLike, *, fmt: str = "official", max_shard_bytes: int | None = None
) -> Path:
    """Write config.json + safetensors (sharded with an index when above ``max_shard_bytes``).

    The folder is written to a temporary sibling and renamed, so a crash never leaves a
    half-written checkpoint under ``out_dir``.
    """
    from safetensors.torch import save_file

    if fmt not in ("official", "diffusers"):
        raise ValueError(f"fmt={fmt!r}; expected 'official' or 'diffusers'")
    out_dir = Path(out_dir)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    cfg = official_config_json(model)
    if fmt == "diffusers":
        sd, cfg = official_to_diffusers(sd), diffusers_config_json(model)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        shards, cur, size = [], {}, 0
        for k, v in sd.items():
            nbytes = v.numel() * v.element_size()
            if max_shard_bytes and cur and size + nbytes > max_shard_bytes:
                shards.append(cur)
                cur, size = {}, 0
            cur[k] = v
            size += nbytes
        shards.append(cur)
        if len(shards) == 1:
            save_file(shards[0], str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards, 1):
                name = f"diffusion_pytorch_model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / name), metadata={"format": "pt"})
                weight_map.update({k: name for k in shard})
            total = sum(v.numel() * v.element_size() for v in sd.values())
            (tmp / INDEX_NAME).write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
            )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
