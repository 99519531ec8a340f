"""The ODE pair folder: shards, index.json, lazy reading, conversion of old ``.pt`` shards.

``<dir>/pairs_00000.safetensors`` ... each hold the stacked tensors of up to ``shard_size`` samples, the
captions and seeds as JSON in the header's metadata (safetensors + JSON: reading a shard runs no code it
carries, unlike a pickle), written to a temporary name and renamed (atomic); ``index.json`` (shards,
counts, the grid, the guidance, shapes) is written last, so a folder with it is complete. ``PairSet``
reads a folder lazily: every shard memory-mapped, gathered per batch. Per sample:
  trajectory  [K+1, C, F, h, w]   latents at sigma_0..sigma_{K-1} and the clean x0 (``dtype``; C = 16,
                                  or 48 for Wan 2.2)
  image       [C_img, F, h, w]    the layout's first-frame channels (absent for t2v / ti2v layouts)
  first_frame uint8 [3, H, W]
  image_latent [C, 1, h, w]       the clean first-frame latent (chunk 0 of the student: the sink)
  tracks      [T, N, 2] pixels, visibility [T, N], track_ids [N] (the IDs the teacher saw)
  text_emb    [L, E] (zero-padded), text_len;  caption (list of str), seeds
The teacher writes them in ``distill.ode_pairs.generate_ode_pairs``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from trackstream.models.formats.files import UnreadableFile, one_line

__all__ = [
    "INDEX_NAME",
    "LISTS",
    "shard_path",
    "pairs_complete",
    "stack_samples",
    "write_shard",
    "write_index",
    "read_shard",
    "load_shard",
    "PairSet",
    "load_ode_pairs",
]

INDEX_NAME = "index.json"
LISTS = ("caption", "seed")  # per-sample values that are not tensors: JSON in the shard's metadata
_REGENERATE = "delete the pair folder and generate it again (complete shards are kept when it is not deleted)"


def shard_path(directory: Path, i: int) -> Path:
    return directory / f"pairs_{i:05d}.safetensors"


def pairs_complete(directory: Path) -> bool:
    return (Path(directory) / INDEX_NAME).is_file()


def stack_samples(parts: dict[str, list]) -> dict:
    """Per-key lists of samples -> one batch: tensors stacked (``text_emb`` zero-padded to the longest),
    the ``LISTS`` kept as lists."""
    out = {}
    for key, values in parts.items():
        if key in ("caption", "seed"):
            out[key] = list(values)
        elif key == "text_emb":  # per-sample lengths differ: zero-pad to the longest
            L = max(v.shape[0] for v in values)
            out[key] = torch.stack([torch.nn.functional.pad(v, (0, 0, 0, L - v.shape[0])) for v in values])
        else:
            out[key] = torch.stack(values)
    return out


def write_shard(shard: dict, path: Path) -> None:
    """``shard`` (stacked tensors, plus the ``LISTS`` as lists) -> one safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in shard.items() if k not in LISTS}
    meta = {k: json.dumps(shard[k]) for k in LISTS if k in shard}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def write_index(directory: Path, index: dict) -> None:
    """``index.json``, atomically: the last file written, which marks the folder complete."""
    tmp = directory / (INDEX_NAME + ".tmp")
    tmp.write_text(json.dumps(index, indent=2))
    os.replace(tmp, directory / INDEX_NAME)


class _SafeShard:
    """One safetensors shard, memory-mapped: ``shard[key][j]`` reads sample j of ``key`` only."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        try:
            self.handle = safe_open(str(path), framework="pt", device="cpu")
            meta = self.handle.metadata() or {}
            self.lists = {k: json.loads(meta[k]) for k in LISTS if k in meta}
        except Exception as err:  # noqa: BLE001 -- SafetensorError / JSON: name the file, say what to do
            raise UnreadableFile(f"{path} is truncated or not an ODE pair shard ({one_line(err)}); {_REGENERATE}")
        self.keys = tuple(self.handle.keys()) + tuple(self.lists)

    def __iter__(self):
        return iter(self.keys)

    def __getitem__(self, key: str):
        if key in self.lists:
            return self.lists[key]
        return _Rows(self.handle.get_slice(key))


class _Rows:
    def __init__(self, sl):
        self.sl = sl

    def __getitem__(self, j: int) -> torch.Tensor:
        return self.sl[j : j + 1][0]


def read_shard(path: Path):
    """A shard as ``{key: rows}``, read lazily. Shards are safetensors; a ``.pt`` shard (an earlier TrackStream's
    pickle-based format) is refused in one line."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path}: an ODE pair shard of an earlier TrackStream ({path.suffix}, not safetensors); {_REGENERATE}"
        )
    return _SafeShard(path)


def load_shard(path: Path) -> dict:
    """A whole shard in memory as written (stacked tensors, caption and seed lists): for inspection and tests."""
    shard = read_shard(path)
    return {k: (shard[k] if k in LISTS else shard.handle.get_tensor(k)) for k in shard}


class PairSet:
    """A complete pair folder read lazily: every shard memory-mapped (safetensors' ``safe_open``), a
    batch gathered sample by sample, so only the pages of the samples drawn are ever read."""

    def __init__(self, directory: str | Path, *, student_steps: int, shift: float):
        directory = Path(directory)
        if not pairs_complete(directory):
            raise ValueError(f"{directory} holds no complete ODE pair set ({INDEX_NAME} missing); generate it first")
        self.index = json.loads((directory / INDEX_NAME).read_text())
        if self.index["student_steps"] != student_steps or abs(self.index["shift"] - shift) > 1e-12:
            raise ValueError(
                f"ODE pairs in {directory} were made for {self.index['student_steps']} steps at shift "
                f"{self.index['shift']}; this run uses {student_steps} steps at shift {shift}: "
                "regenerate them"
            )
        self.directory = directory
        self.shards = [read_shard(directory / s["file"]) for s in self.index["shards"]]
        self.where = [(k, j) for k, s in enumerate(self.index["shards"]) for j in range(s["num_samples"])]
        self.keys = tuple(self.shards[0])

    def __len__(self) -> int:
        return len(self.where)

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def batch(self, indices: list[int], keys: tuple[str, ...]) -> dict:
        """Stacked tensors of ``keys`` for these samples (text_emb zero-padded to the batch's longest)."""
        picks = [self.where[i] for i in indices]
        return stack_samples({key: [self.shards[k][key][j] for k, j in picks] for key in keys})


def load_ode_pairs(directory: str | Path, *, student_steps: int, shift: float) -> dict:
    """All samples of a pair folder stacked in memory (for inspection and tests; training reads a
    ``PairSet``), checked against the run's step grid."""
    pairs = PairSet(directory, student_steps=student_steps, shift=shift)
    out = pairs.batch(list(range(len(pairs))), pairs.keys)
    out["index"] = pairs.index
    return out
