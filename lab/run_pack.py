"""A run directory's resumable state as ONE file that can be committed to git, and back.

``pack_run(run_dir, files, out)`` writes ``out`` (atomically, overwriting it) as a safetensors file: no
pickle anywhere, so reading a pack (or a file unpacked from it) runs no code it carries, and no project
class is named in it, so renaming the packages cannot break it. Its header's metadata holds JSON:
  format, version    "trackstream.run-pack", 2
  pack               {"run_dir": the absolute run directory at packing time (paths inside are rewritten
                     on unpack), "info": what the caller records (step, generator updates, commit, ...),
                     "kinds": {relative path: "raw" | "tree"}}
and its tensors are the files, ``files/<relative path>``: each a uint8 tensor of zlib-compressed bytes,
compressed on its own, so files that do not change between packs (teacher, ODE-init student, pairs)
give the same bytes every time and git's delta compression stores them once. A "raw" entry is the
file's bytes; a "tree" entry is a ``.pt`` file's content (read with ``weights_only=True``) as a
safetensors blob: its tensors, and the containers around them as JSON (:func:`encode_tree`).

Two things are left out because they carry no information for the continuation, which is what
keeps a DMD run under ~20 MB:
  * ``drop``: top-level keys of chosen ``.pt`` / ``.safetensors`` files (the ODE trajectories of the pair
    shards, which the DMD stage never reads);
  * Adam's first moment where the parameter group has beta1 = 0 (Self-Forcing's DMD betas (0,
    0.999)): the next step sets exp_avg = lerp(exp_avg, grad, 1) = grad exactly, whatever it held,
    so it is stored as "zeros like exp_avg_sq" (lab/tests/test_long_dmd.py checks the resumed weights
    bit for bit).
``unpack_run(file, run_dir)`` writes the files back under ``run_dir``, replacing the packed run
directory's path by the new one in text files and in strings inside ``.pt`` files (the stage
summaries and checkpoint fingerprints name absolute paths); ``.pt`` files are written with tensors and
plain containers only (numpy arrays as tensors), so they load with ``weights_only=True``.

Version 1 packs (a ``torch.save`` zip, pickle-based) are read only with the
opt-in (``allow_pickle`` / ``--allow-pickle`` / ``TRACKSTREAM_ALLOW_PICKLE=1``); re-pack them once.
"""

from __future__ import annotations

import io
import json
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from trackstream.models.formats.files import one_line, pickle_allowed, pickle_refusal, plain_state, read_torch_file

__all__ = ["FORMAT", "pack_run", "unpack_run", "read_pack", "entry_object", "encode_tree", "decode_tree"]

FORMAT, VERSION = "trackstream.run-pack", 2
_REPACK = "re-pack it with this version (`python -m lab.long_dmd unpack --allow-pickle` into a new run directory, then `pack`)"
TEXT_SUFFIXES = (".json", ".jsonl", ".yaml", ".log", ".txt")


# ----------------------------------------------------------------------------- plain containers


# ----------------------------------------------------------------------------- trees: JSON + tensors


def encode_tree(x, tensors: dict[str, torch.Tensor], where: str = ""):
    """``x`` (tensors, numbers, strings, lists, tuples, dicts, numpy values, bytes) -> a JSON-able
    skeleton; tensors go to ``tensors`` under numbered names. Tags (``__tensor__``, ``__tuple__``,
    ``__items__`` for dicts whose keys are not plain strings, ...) keep the types exact on the way back."""

    def put(t: torch.Tensor) -> str:
        name = str(len(tensors))
        tensors[name] = t.detach().to("cpu").clone(memory_format=torch.contiguous_format)  # no shared storage
        return name

    if torch.is_tensor(x):
        return {"__tensor__": put(x)}
    if isinstance(x, np.ndarray):
        raw = torch.frombuffer(bytearray(np.ascontiguousarray(x).tobytes()), dtype=torch.uint8)
        return {"__ndarray__": put(raw), "dtype": x.dtype.str, "shape": list(x.shape)}
    if isinstance(x, np.generic):
        return {"__npscalar__": x.item(), "dtype": x.dtype.str}
    if isinstance(x, (bytes, bytearray)):
        return {"__bytes__": put(torch.frombuffer(bytearray(x), dtype=torch.uint8))}
    if isinstance(x, torch.dtype):
        return {"__dtype__": str(x).removeprefix("torch.")}
    if isinstance(x, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in x):
            return {k: encode_tree(v, tensors, f"{where}/{k}") for k, v in x.items()}
        return {
            "__items__": [
                [encode_tree(k, tensors, where), encode_tree(v, tensors, f"{where}/{k}")] for k, v in x.items()
            ]
        }
    if isinstance(x, tuple):  # torch.Size too
        return {"__tuple__": [encode_tree(v, tensors, f"{where}[{i}]") for i, v in enumerate(x)]}
    if isinstance(x, list):
        return [encode_tree(v, tensors, f"{where}[{i}]") for i, v in enumerate(x)]
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise ValueError(
        f"cannot pack {where}: a {type(x).__module__}.{type(x).__name__} is not a plain value "
        "(tensors, numbers, strings, lists, dicts); save it as one"
    )


def decode_tree(x, tensors: dict[str, torch.Tensor], rewrite=lambda s: s):
    """:func:`encode_tree`'s inverse; ``rewrite`` maps every string."""
    if isinstance(x, list):
        return [decode_tree(v, tensors, rewrite) for v in x]
    if isinstance(x, str):
        return rewrite(x)
    if not isinstance(x, dict):
        return x
    if "__tensor__" in x:
        return tensors[x["__tensor__"]]
    if "__ndarray__" in x:
        raw = tensors[x["__ndarray__"]].numpy().tobytes()
        return np.frombuffer(raw, dtype=np.dtype(x["dtype"])).reshape(x["shape"]).copy()
    if "__npscalar__" in x:
        return np.dtype(x["dtype"]).type(x["__npscalar__"])
    if "__bytes__" in x:
        return tensors[x["__bytes__"]].numpy().tobytes()
    if "__dtype__" in x:
        return getattr(torch, x["__dtype__"])
    if "__tuple__" in x:
        return tuple(decode_tree(v, tensors, rewrite) for v in x["__tuple__"])
    if "__items__" in x:
        return {decode_tree(k, tensors, rewrite): decode_tree(v, tensors, rewrite) for k, v in x["__items__"]}
    return {k: decode_tree(v, tensors, rewrite) for k, v in x.items()}


def _safetensors_header(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n])


def _tree_bytes(obj) -> bytes:
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    skeleton = encode_tree(obj, tensors)
    return save(tensors, metadata={"tree": json.dumps(skeleton, sort_keys=False)})


def _tree_object(data: bytes, rewrite=lambda s: s):
    from safetensors.torch import load

    skeleton = json.loads(_safetensors_header(data)["__metadata__"]["tree"])
    return decode_tree(skeleton, load(data), rewrite)


def _drop_safetensors_keys(data: bytes, keys: tuple[str, ...]) -> bytes:
    from safetensors.torch import load, save

    meta = _safetensors_header(data).get("__metadata__")
    tensors = {k: v for k, v in load(data).items() if k not in keys}
    return save(tensors, metadata=meta)


# version 1 packs (read with the opt-in only)


def _unplain(x, rewrite):
    if isinstance(x, dict):
        if "__ndarray__" in x:
            return np.frombuffer(x["__ndarray__"], dtype=np.dtype(x["dtype"])).reshape(x["shape"]).copy()
        if "__npscalar__" in x:
            return np.dtype(x["dtype"]).type(x["__npscalar__"])
        return {k: _unplain(v, rewrite) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_unplain(v, rewrite) for v in x)
    return rewrite(x) if isinstance(x, str) else x


def _optimizers(x):
    """Every optimizer state dict (``state`` + ``param_groups``) inside ``x``."""
    if isinstance(x, dict):
        if "state" in x and "param_groups" in x:
            yield x
        else:
            for v in x.values():
                yield from _optimizers(v)


def _drop_first_moment(obj) -> int:
    """Replace exp_avg by a marker where beta1 = 0 (see the module docstring); returns how many."""
    n = 0
    for opt in _optimizers(obj):
        for group in opt["param_groups"]:
            if float(group.get("betas", (1.0,))[0]) != 0.0:
                continue
            for idx in group["params"]:
                entry = opt["state"].get(idx, {})
                if torch.is_tensor(entry.get("exp_avg")) and torch.is_tensor(entry.get("exp_avg_sq")):
                    entry["exp_avg"] = {"__zeros_like__": "exp_avg_sq"}
                    n += 1
    return n


def _restore_first_moment(obj) -> None:
    for opt in _optimizers(obj):
        for entry in opt["state"].values():
            marker = entry.get("exp_avg")
            if isinstance(marker, dict) and "__zeros_like__" in marker:
                entry["exp_avg"] = torch.zeros_like(entry[marker["__zeros_like__"]])


def _to_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _from_bytes(data: bytes):  # a version 1 entry
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------- pack / unpack


def pack_run(
    run_dir: Path,
    files: list[str],
    out: Path,
    *,
    info: dict | None = None,
    drop: dict[str, tuple[str, ...]] | None = None,
    content: dict[str, bytes] | None = None,
    allow_pickle: bool = False,
) -> dict:
    """Pack ``files`` (paths relative to ``run_dir``) into ``out``; returns {path: packed bytes}.

    ``content`` gives the bytes to use for some of them instead of reading the file (e.g. a log
    trimmed to the packed checkpoint's step). ``.pt`` files are read with ``weights_only=True``
    (``allow_pickle``: the opt-in for files of the old pickle-based formats)."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir).resolve()
    drop, content = drop or {}, content or {}
    tensors, kinds, sizes = {}, {}, {}
    for rel in files:
        path = run_dir / rel
        if rel.endswith(".pt"):
            obj = read_torch_file(path, old_format="a run's file", fix=_REPACK, allow_pickle=allow_pickle)
            for key in drop.get(rel, ()):
                obj.pop(key, None)
            _drop_first_moment(obj)
            data, kind = _tree_bytes(obj), "tree"
        else:
            data, kind = (content[rel] if rel in content else path.read_bytes()), "raw"
            if rel.endswith(".safetensors") and drop.get(rel):
                data = _drop_safetensors_keys(data, drop[rel])
        packed = zlib.compress(data, 6)
        tensors[f"files/{rel}"] = torch.frombuffer(bytearray(packed), dtype=torch.uint8)
        kinds[rel], sizes[rel] = kind, len(packed)
    header = {"run_dir": str(run_dir), "info": encode_tree(info or {}, {}, "info"), "kinds": kinds}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "version": str(VERSION), "pack": json.dumps(header)})
    os.replace(tmp, out)  # a reader (or a commit) never sees half a pack
    return sizes


def read_pack(path: Path, *, allow_pickle: bool = False) -> dict:
    """A pack as {"format", "version", "run_dir", "info", "files": {rel: {"kind", "zlib"}}}. A truncated or
    foreign file is a one-line ValueError; a version 1 (pickle-based) pack needs ``allow_pickle``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist; make one with `python -m lab.long_dmd pack`")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] == b"PK":  # a torch.save zip: version 1
        if not pickle_allowed(allow_pickle):
            raise ValueError(pickle_refusal(path, "a packed run (version 1)", _REPACK))
        pack = torch.load(path, map_location="cpu", weights_only=True)  # v1 held plain containers only
        if not isinstance(pack, dict) or pack.get("format") != FORMAT or pack.get("version") != 1:
            raise ValueError(f"{path} is not a packed run ({FORMAT}); make one with `python -m lab.long_dmd pack`")
        pack["info"] = _unplain(pack["info"], lambda s: s)
        return pack
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ValueError("no run-pack header")
            files = {name.removeprefix("files/"): f.get_tensor(name) for name in f.keys()}
        header = json.loads(meta["pack"])
    except Exception as err:  # noqa: BLE001 -- SafetensorError / JSON: name the file, say what to do
        raise ValueError(
            f"{path} is truncated or not a packed run ({FORMAT}: {one_line(err)}); make one with "
            "`python -m lab.long_dmd pack` (the finished run's: docs/long-dmd.md restores it)"
        ) from None
    if meta.get("version") != str(VERSION):
        raise ValueError(f"{path} is a version {meta.get('version')} pack, this code reads version {VERSION}")
    return {
        "format": FORMAT,
        "version": VERSION,
        "run_dir": header["run_dir"],
        "info": decode_tree(header["info"], {}),
        "files": {rel: {"kind": kind, "zlib": files[rel]} for rel, kind in header["kinds"].items()},
    }


def entry_object(pack: dict, rel: str, rewrite=lambda s: s):
    """The packed content of ``rel`` as stored (a ``.pt`` entry's object, a "raw" entry's bytes)."""
    entry = pack["files"][rel]
    data = zlib.decompress(entry["zlib"].numpy().tobytes())
    if entry["kind"] == "tree":
        return _tree_object(data, rewrite)
    if entry["kind"] == "torch":  # version 1
        return _unplain(_from_bytes(data), rewrite)
    return data


def unpack_run(path: Path, run_dir: Path, *, allow_pickle: bool = False) -> dict:
    """Write the packed files under ``run_dir`` (paths of the packed run rewritten); returns the info."""
    pack = read_pack(path, allow_pickle=allow_pickle)
    run_dir = Path(run_dir).resolve()
    old, new = pack["run_dir"], str(run_dir)

    def rewrite(s: str) -> str:
        return s.replace(old, new) if old != new else s

    # a checkpoint directory counts as complete once its meta.pt exists: write those last
    for rel, entry in sorted(pack["files"].items(), key=lambda kv: Path(kv[0]).name == "meta.pt"):
        target = run_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry["kind"] in ("tree", "torch"):
            obj = entry_object(pack, rel, rewrite)
            _restore_first_moment(obj)
            data = _to_bytes(plain_state(obj, rel))  # numpy values as tensors: loads with weights_only=True
        else:
            data = zlib.decompress(entry["zlib"].numpy().tobytes())
            if target.suffix in TEXT_SUFFIXES:
                data = rewrite(data.decode()).encode()
        tmp = target.with_name(f".tmp-{target.name}")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return pack["info"]
