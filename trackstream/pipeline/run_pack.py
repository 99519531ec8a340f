"""A run directory's resumable state as ONE file that can be committed to git, and back.

``pack_run(run_dir, files, out)`` writes ``out`` (atomically, overwriting it): a ``torch.save`` of
plain Python containers and bytes only, loadable with ``weights_only=True``, so no project class
is pickled and renaming the packages (``models`` -> ``trackstream.models``) cannot break it:
  format, version    "trackstream.run-pack", 1
  run_dir            the absolute run directory at packing time (paths inside are rewritten on unpack)
  info               what the caller records (step, generator updates, commit, ...)
  files              {relative path: {"zlib": uint8 tensor, "kind": "raw" | "torch"}}
A "raw" entry is the file's bytes; a "torch" entry is the ``torch.save`` of the file's content made
plain (numpy arrays of the RNG states as bytes + dtype + shape). Each entry is compressed on its
own (held as a uint8 tensor: torch.save pickles ``bytes`` as a latin-1 string, ~1.5x larger), so files that do not change between packs (teacher, ODE-init student, pairs) give the same
bytes every time and git's delta compression stores them once.

Two things are left out because they carry no information for the continuation, which is what
keeps a DMD run under ~20 MB:
  * ``drop``: top-level keys of chosen ``.pt`` files (the ODE trajectories of the pair shards,
    which the DMD stage never reads);
  * Adam's first moment where the parameter group has beta1 = 0 (Self-Forcing's DMD betas (0,
    0.999)): the next step sets exp_avg = lerp(exp_avg, grad, 1) = grad exactly, whatever it held,
    so it is stored as "zeros like exp_avg_sq" (tests/test_long_dmd.py checks the resumed weights
    bit for bit).
``unpack_run(file, run_dir)`` writes the files back under ``run_dir``, replacing the packed run
directory's path by the new one in text files and in strings inside ``.pt`` files (the stage
summaries and checkpoint fingerprints name absolute paths).
"""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import numpy as np
import torch

__all__ = ["FORMAT", "pack_run", "unpack_run", "read_pack", "entry_object"]

FORMAT, VERSION = "trackstream.run-pack", 1
TEXT_SUFFIXES = (".json", ".jsonl", ".yaml", ".log", ".txt")


# ----------------------------------------------------------------------------- plain containers


def _plain(x, where: str):
    """Checkpoint content -> containers weights_only can read (numpy -> tagged bytes)."""
    if isinstance(x, np.ndarray):
        return {"__ndarray__": x.tobytes(), "dtype": x.dtype.str, "shape": list(x.shape)}
    if isinstance(x, np.generic):
        return {"__npscalar__": x.item(), "dtype": x.dtype.str}
    if isinstance(x, dict):
        return {k: _plain(v, f"{where}/{k}") for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v, f"{where}[{i}]") for i, v in enumerate(x))
    if x is None or isinstance(x, (bool, int, float, str, bytes, torch.Tensor)):
        return x
    raise ValueError(
        f"cannot pack {where}: a {type(x).__module__}.{type(x).__name__} is not a plain value "
        "(tensors, numbers, strings, lists, dicts); save it as one"
    )


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


def _from_bytes(data: bytes):
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
) -> dict:
    """Pack ``files`` (paths relative to ``run_dir``) into ``out``; returns {path: packed bytes}.

    ``content`` gives the bytes to use for some of them instead of reading the file (e.g. a log
    trimmed to the packed checkpoint's step)."""
    run_dir = Path(run_dir).resolve()
    drop, content = drop or {}, content or {}
    entries, sizes = {}, {}
    for rel in files:
        path = run_dir / rel
        if rel.endswith(".pt"):
            obj = torch.load(path, map_location="cpu", weights_only=False)
            for key in drop.get(rel, ()):
                obj.pop(key, None)
            obj = _plain(obj, rel)
            _drop_first_moment(obj)
            data, kind = _to_bytes(obj), "torch"
        else:
            data, kind = (content[rel] if rel in content else path.read_bytes()), "raw"
        packed = zlib.compress(data, 6)
        entries[rel] = {"kind": kind, "zlib": torch.frombuffer(bytearray(packed), dtype=torch.uint8)}
        sizes[rel] = len(packed)
    pack = {
        "format": FORMAT,
        "version": VERSION,
        "run_dir": str(run_dir),
        "info": _plain(info or {}, "info"),
        "files": entries,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    torch.save(pack, tmp)
    os.replace(tmp, out)  # a reader (or a commit) never sees half a pack
    return sizes


def read_pack(path: Path) -> dict:
    pack = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(pack, dict) or pack.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a packed run ({FORMAT}); make one with `python -m trackstream.pipeline.long_dmd pack`"
        )
    if pack.get("version") != VERSION:
        raise ValueError(f"{path} is a version {pack.get('version')} pack, this code reads version {VERSION}")
    return pack


def entry_object(pack: dict, rel: str):
    """The packed content of ``rel`` as stored (a "torch" entry's plain object, a "raw" entry's bytes)."""
    entry = pack["files"][rel]
    data = zlib.decompress(entry["zlib"].numpy().tobytes())
    return _from_bytes(data) if entry["kind"] == "torch" else data


def unpack_run(path: Path, run_dir: Path) -> dict:
    """Write the packed files under ``run_dir`` (paths of the packed run rewritten); returns the info."""
    pack = read_pack(path)
    run_dir = Path(run_dir).resolve()
    old, new = pack["run_dir"], str(run_dir)

    def rewrite(s: str) -> str:
        return s.replace(old, new) if old != new else s

    # a checkpoint directory counts as complete once its meta.pt exists: write those last
    for rel, entry in sorted(pack["files"].items(), key=lambda kv: Path(kv[0]).name == "meta.pt"):
        data = zlib.decompress(entry["zlib"].numpy().tobytes())
        target = run_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry["kind"] == "torch":
            obj = _unplain(_from_bytes(data), rewrite)
            _restore_first_moment(obj)
            data = _to_bytes(obj)
        elif target.suffix in TEXT_SUFFIXES:
            data = rewrite(data.decode()).encode()
        tmp = target.with_name(f".tmp-{target.name}")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return _unplain(pack["info"], lambda s: s)
