"""Wan DiT checkpoints on disk, at the state-dict level: reading (official or diffusers) and writing.

Accepted inputs (all local paths):
- an official file: ``diffusion_pytorch_model.safetensors`` / ``*.pth`` / ``*.pt``;
- a sharded checkpoint through its index json (``*.safetensors.index.json``);
- a folder: official (``config.json`` with ``_class_name: WanModel`` + weights), a diffusers
  transformer folder (``WanTransformer3DModel``), or a diffusers pipeline root (``transformer/``).
Keys may carry a wrapper prefix (``model.``, ``module.``, ``_orig_mod.``, ``diffusion_model.``),
which is stripped. A training checkpoint holding several networks (Self-Forcing / CausVid / LongLive
``.pt``: ``{"generator": ..., "generator_ema": ..., "critic": ...}``) is read through a subkey,
written ``PATH::generator_ema`` where one string must carry both (``split_subkey``;
``model.init_from``). A LoRA adapter file is refused as a network: it goes with its base
(``model.init_from=BASE model.adapter=PEFT_FOLDER``, ``models.lora.merge_adapter``). The two
formats' key names and config.json fields, and the conversions between them, are ``wan_formats``;
building a ``WanModel`` from these files (strict loading, ``CheckpointError`` naming the missing /
unexpected keys) is ``models.wan_io``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from trackstream.models.formats.files import read_json_file, read_safetensors, read_torch_file
from trackstream.models.formats.wan_formats import CheckpointError, strip_wrapper_prefix

# CheckpointError is defined beside the format conversions (they raise it too) and exported here with the
# reader that raises it, where users catch it (docs/recipes.md)
__all__ = [
    "INDEX_NAME",
    "REDOWNLOAD",
    "SIDE_HEADS",
    "SIDE_NETWORK",
    "SUBKEY_SEP",
    "WEIGHTS_NAME",
    "read_state_dict",
    "split_subkey",
    "write_state_dict",
]

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = WEIGHTS_NAME + ".index.json"

# adapter weights (PEFT ``lora_A`` / ``lora_B``, kohya ``lora_down`` / ``lora_up``) are deltas, not a network
_LORA_KEY = re.compile(r"\.lora_(A|B|down|up)\b")

SUBKEY_SEP = "::"
# files an exported DiT folder (``trackstream export``) carries beside the Wan weights: the rest of a
# TrackStream network (track head, text projection) and how to call it; read back by model.init_from
SIDE_HEADS = "trackstream_heads.pt"
SIDE_NETWORK = "trackstream_network.json"


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


# ----------------------------------------------------------------------------- reading


# what to do about a checkpoint file that does not parse, unless the caller knows better (an export says
# which command writes it again)
REDOWNLOAD = "download or export it again (a Wan release: the model card; a TrackStream export: its stage)"


def _read_file(path: Path, fix: str = REDOWNLOAD) -> dict[str, torch.Tensor]:
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
    not parse is a one-line ValueError naming it and ``fix`` (``formats.files``)."""
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
            from trackstream.models.formats.release_folder import find_release

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
            "network: give its base as model.init_from and the adapter's PEFT folder as model.adapter (merged on "
            "load), or merge it yourself (PEFT merge_and_unload)"
        )
    return strip_wrapper_prefix(sd), config


# ----------------------------------------------------------------------------- writing


def write_state_dict(
    sd: dict[str, torch.Tensor], config: dict, out_dir: str | os.PathLike, *, max_shard_bytes: int | None = None
) -> Path:
    """Write config.json + safetensors (sharded with an index when above ``max_shard_bytes``).

    The folder is written to a temporary sibling and renamed, so a crash never leaves a
    half-written checkpoint under ``out_dir``.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
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
