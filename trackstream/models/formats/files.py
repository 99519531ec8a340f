"""Reading the files an export, a checkpoint or a training state is made of, with one-line errors naming
the file and the fix; writing training state that reads back without pickle.

torch's and safetensors' own errors on a truncated or garbage file neither name the file (safetensors:
"Error while deserializing header: ...") nor give a fix a user should take (torch's unpickling error
suggests ``weights_only=False``, i.e. running whatever code the file holds). Every reader of a
user-supplied weights / JSON file goes through here, so the error says which file, what is wrong with
it and what writes it again (``fix``, given by the caller, who knows which command wrote the file).

Torch files are read by one reader, :func:`read_torch_file`: ``torch.load(weights_only=True)``, once. A
missing, truncated or garbage file is an :class:`UnreadableFile` (resume may fall back to an older
checkpoint on it). A file that pickles objects other than tensors is refused; for the formats TrackStream
itself once wrote with pickle (``old_format`` names which), the user may opt in to read it
(:data:`ALLOW_PICKLE_ENV`), because unpickling can run code the file carries. Training state is
written through :func:`plain_state`, so it always reads back without that opt-in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = [
    "ALLOW_PICKLE_ENV",
    "UnreadableFile",
    "read_torch_file",
    "read_safetensors",
    "read_json_file",
    "read_torchscript",
    "remove_run_folder",
    "one_line",
    "pickle_allowed",
    "pickle_refusal",
    "plain_state",
    "sha256",
    "release_mismatches",
    "check_shipped",
]

ALLOW_PICKLE_ENV = "TRACKSTREAM_ALLOW_PICKLE"


class UnreadableFile(ValueError):
    """A file that is missing, truncated or garbage (not one that merely needs pickle): resume may fall
    back to an older checkpoint on it."""


def one_line(text: str, limit: int = 160) -> str:
    """The first line of a library's error text, cut to ``limit`` characters (a reason, not a report)."""
    first = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _fix(fix: str | None) -> str:
    return f"; {fix}" if fix else ""


def pickle_allowed(allow_pickle: bool = False) -> bool:
    """The explicit opt-in to read old pickle-based files: the keyword, or ``TRACKSTREAM_ALLOW_PICKLE=1``."""
    return bool(allow_pickle) or os.environ.get(ALLOW_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes")


def pickle_refusal(path, what: str, fix: str) -> str:
    """The one-line error for an old pickle-based file: what it is, why it is not read, the opt-in and ``fix``."""
    return (
        f"{path} is {what} in an old pickle-based format, which can run arbitrary code when loaded, so it is not "
        f"read by default: if you trust it, set {ALLOW_PICKLE_ENV}=1 (or pass allow_pickle / --allow-pickle) "
        f"to read it once, then {fix}"
    )


def remove_run_folder(folder) -> None:
    """Remove a refused run's folder, first closing and detaching every logging file handler writing
    inside it (Hydra's job log): a handler left behind would re-create its file, or fail, at the next
    message once anything closes it. The folder is renamed away first, so the name is free at once: a
    run that starts on it meanwhile makes a folder of its own, which the removal does not reach."""
    import logging
    import os
    import shutil
    from pathlib import Path

    folder = Path(folder).resolve()
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for h in list(getattr(logger, "handlers", [])):
            name = getattr(h, "baseFilename", None)
            if name and Path(name).resolve().is_relative_to(folder):
                logger.removeHandler(h)
                h.close()
    gone = folder.with_name(f".{folder.name}.removed-{os.getpid()}")
    try:
        os.replace(folder, gone)
    except OSError:  # missing already, or a file system that refuses: remove it in place
        gone = folder
    shutil.rmtree(gone, ignore_errors=True)


def read_torchscript(path, *, what: str, map_location="cpu", allow_pickle: bool = False):
    """A TorchScript archive (``torch.jit.load``), only with the same explicit opt-in as pickle: it carries
    code that runs when it is loaded. Without it, a one-line ValueError naming the file and the opt-in."""
    import torch

    if not pickle_allowed(allow_pickle):
        raise ValueError(
            f"{path} is {what}, a TorchScript archive: loading it runs the code it carries, so it is not read by "
            f"default: if you trust it, set {ALLOW_PICKLE_ENV}=1 (or pass allow_pickle / --allow-pickle)"
        )
    return torch.jit.load(str(path), map_location=map_location)


def _damage(err: Exception) -> str:
    """What is wrong with a file ``torch.load(weights_only=True)`` failed on, when it is not pickled objects."""
    if "zip archive" in str(err) or "central directory" in str(err):
        return "is truncated or corrupt (not a complete zip archive)"
    if isinstance(err, pickle.UnpicklingError):  # an opcode the unpickler refuses; torch's text advises pickle
        return "is not a torch checkpoint of tensors (garbage or truncated)"
    # a legacy (non-zip) pickle cut short or garbage: EOFError, IndexError, OSError, ...
    return f"is not a torch checkpoint of tensors (garbage or truncated: {type(err).__name__}: {one_line(err)})"


def read_torch_file(
    path: str | os.PathLike,
    *,
    fix: str | None = None,
    mmap: bool = False,
    old_format: str | None = None,
    allow_pickle: bool = False,
) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, loaded once. A missing, truncated or garbage file
    is an :class:`UnreadableFile` naming it and ``fix``. A file that pickles objects other than tensors,
    numbers, strings and plain containers is a one-line ValueError; when ``old_format`` says what such a
    file is (a format TrackStream once wrote with pickle), the error offers the opt-in, and with
    :func:`pickle_allowed` the file is read with pickle (and a warning)."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableFile(f"{path} does not exist{_fix(fix)}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except MemoryError:
        raise  # the machine's fault, not the file's
    except Exception as err:  # noqa: BLE001 -- any failure to parse is the file's fault, said in one line
        # a class or function the restricted unpickler refuses names itself as a "global"; garbage fails on
        # an opcode instead (also "Weights only load failed"): that is a damaged file, not one of objects
        if not (isinstance(err, pickle.UnpicklingError) and "Unsupported global" in str(err)):
            raise UnreadableFile(f"{path} {_damage(err)}{_fix(fix)}") from None
    if old_format is None:
        # not torch's advice (weights_only=False runs the file's code): say what the file is instead
        raise ValueError(
            f"{path} is not a torch checkpoint of tensors (it pickles objects other than tensors){_fix(fix)}"
        )
    if not pickle_allowed(allow_pickle):
        raise ValueError(pickle_refusal(path, old_format, fix or "save it again"))
    log.warning("reading %s with pickle (%s): it can run code it carries; re-save it", path, ALLOW_PICKLE_ENV)
    return torch.load(str(path), map_location="cpu", weights_only=False, mmap=mmap)


def plain_state(x, where: str = "state"):
    """``x`` with numpy arrays as tensors and numpy scalars as Python numbers, so that ``torch.save`` of it
    loads with ``weights_only=True``; anything else that is not a tensor, number, string or plain
    container is a ValueError naming where it sits (a state_dict must not hold objects)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x).copy())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return type(x)((k, plain_state(v, f"{where}/{k}")) for k, v in x.items())
    if isinstance(x, (list, tuple)) and not isinstance(x, torch.Size):
        items = [plain_state(v, f"{where}[{i}]") for i, v in enumerate(x)]
        return items if isinstance(x, list) else tuple(items)
    if x is None or isinstance(x, (bool, int, float, complex, str, bytes, torch.Tensor, torch.Size, torch.dtype)):
        return x
    raise ValueError(
        f"cannot save {where}: a {type(x).__module__}.{type(x).__name__} is not a plain value (tensors, numbers, "
        "strings, lists, dicts); its state_dict must return plain values"
    )


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
