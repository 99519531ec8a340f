"""Reading the files an export or a checkpoint is made of, with one-line errors naming the file and the fix.

torch's and safetensors' own errors on a truncated or garbage file neither name the file (safetensors:
"Error while deserializing header: ...") nor give a fix a user should take (torch's unpickling error
suggests ``weights_only=False``, i.e. running whatever code the file holds). Every reader of a
user-supplied weights / JSON file goes through here, so the error says which file, what is wrong with
it and what writes it again (``fix``, given by the caller, who knows which command wrote the file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

__all__ = [
    "read_torch_file",
    "read_safetensors",
    "read_json_file",
    "one_line",
    "sha256",
    "release_mismatches",
    "check_shipped",
]


def one_line(text: str, limit: int = 160) -> str:
    """The first line of a library's error text, cut to ``limit`` characters (a reason, not a report)."""
    first = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _fix(fix: str | None) -> str:
    return f"; {fix}" if fix else ""


def read_torch_file(path: str | os.PathLike, *, fix: str | None = None, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a file that is not a torch checkpoint of tensors
    (truncated, garbage, or pickling code) is a one-line ValueError naming it and ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist{_fix(fix)}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except MemoryError:
        raise  # the machine's fault, not the file's
    except Exception as err:  # noqa: BLE001 -- any failure to parse is the file's fault, said in one line
        if "zip archive" in str(err) or "central directory" in str(err):
            what = "is truncated or corrupt (not a complete zip archive)"
        elif type(err).__name__ == "UnpicklingError" and "Weights only load failed" in str(err):
            # not torch's advice (weights_only=False runs the file's code): say what the file is instead
            what = "is not a torch checkpoint of tensors (garbage, or it pickles objects other than tensors)"
        else:  # a legacy (non-zip) pickle cut short or garbage: EOFError, IndexError, OSError, ...
            what = f"is not a torch checkpoint of tensors (garbage or truncated: {type(err).__name__}: {one_line(err)})"
        raise ValueError(f"{path} {what}{_fix(fix)}") from None


def read_safetensors(
    path: str | os.PathLike, *, fix: str | None = None, device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file``; a truncated or garbage file is a one-line ValueError naming it."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        return load_file(str(path), device=device)
    except Exception as err:  # noqa: BLE001 -- SafetensorError names neither the file nor a fix
        raise ValueError(f"{path} is truncated or not a safetensors file ({one_line(err)}){_fix(fix)}") from None


def read_json_file(path: str | os.PathLike, *, fix: str | None = None, require: tuple[str, ...] = ()) -> Any:
    """A JSON file's object; invalid JSON (or an object missing one of ``require``'s keys) is a one-line
    ValueError naming the file, the line and ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist{_fix(fix)}")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({one_line(err)}){_fix(fix)}") from None
    if require:
        if not isinstance(obj, dict):
            raise ValueError(f"{path} holds a JSON {type(obj).__name__}, not an object with {list(require)}{_fix(fix)}")
        missing = [k for k in require if k not in obj]
        if missing:
            raise ValueError(f"{path} lacks the key(s) {missing}{_fix(fix)}")
    return obj


# ----------------------------------------------------------------------------- shipped release folders


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def release_mismatches(directory: Path, manifest: dict) -> tuple[list[str], list[str]]:
    """(missing, altered): the files ``manifest["sha256"]`` lists under ``directory`` that are absent, or
    whose sha256 differs."""
    missing, altered = [], []
    for rel, digest in sorted(manifest.get("sha256", {}).items()):
        path = Path(directory) / rel
        if not path.is_file():
            missing.append(rel)
        elif sha256(path) != digest:
            altered.append(rel)
    return missing, altered


_CHECKED: dict[tuple[str, int], None] = {}  # (manifest path, its mtime) -> checked intact in this process


def _release_of(path: Path) -> tuple[Path, dict] | None:
    """The release folder ``path`` lies in: the nearest ancestor (3 levels at most) whose manifest.json
    lists ``path`` (or files under it) by sha256."""
    path = path.resolve()
    for folder in [path, *path.parents][:4]:
        manifest = folder / "manifest.json"
        if folder == path and not path.is_dir():
            continue
        if not manifest.is_file():
            continue
        try:
            listed = json.loads(manifest.read_text()).get("sha256")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return None  # not a release manifest (e.g. a data manifest); nothing to check against
        if not isinstance(listed, dict):
            return None
        rel = "" if folder == path else str(path.relative_to(folder))
        if rel == "" or rel in listed or any(k.startswith(rel + "/") for k in listed):
            return folder, {"sha256": listed}
        return None
    return None


def check_shipped(path: str | os.PathLike) -> Path | None:
    """A file or folder of a shipped release (``assets/tiny-teacher``, ``assets/tiny-student``: a
    manifest.json with the sha256 of every file) is checked against it before it is loaded, once per
    process and manifest; an altered or missing file is a one-line ValueError naming the folder and the
    fix. Paths outside a release folder are not checked. Returns the release folder checked, if any."""
    found = _release_of(Path(path))
    if found is None:
        return None
    folder, manifest = found
    key = (str(folder / "manifest.json"), (folder / "manifest.json").stat().st_mtime_ns)
    if key in _CHECKED:
        return folder
    missing, altered = release_mismatches(folder, manifest)
    if missing or altered:
        parts = ([f"missing {missing}"] if missing else []) + (
            [f"altered (sha256 differs from manifest.json) {altered}"] if altered else []
        )
        raise ValueError(
            f"release {folder} is not intact: {'; '.join(parts)}. Restore it with `git checkout -- {folder}` "
            "(or `git lfs pull` if your clone used LFS), or re-export it"
        )
    _CHECKED[key] = None
    log.debug("release %s: %d files match manifest.json", folder, len(manifest["sha256"]))
    return folder
