"""W&B helpers shared by train's ``MetricLogger`` and the evaluation command (docs/wandb.md).

``resolve_mode``: which W&B mode a run uses. An explicit config value wins, then the ``WANDB_MODE``
environment variable, then ``offline``: passing ``mode=`` to ``wandb.init`` overrides the variable, so
the config leaves it unset (null) to let ``WANDB_MODE=online`` reach the run.
``read_records``: the records of an offline run's ``run-<id>.wandb`` file (what ``wandb sync`` uploads),
for checking what a run logged without a server. wandb 0.31 ships no reader; the file is LevelDB's log
format (32 KiB blocks of 7-byte-headed fragments) after a 7-byte ``:W&B`` header, each record a
``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Mapping

__all__ = ["MODES", "resolve_mode", "read_records", "run_contents"]

MODES = ("offline", "online", "disabled")
_ALIASES = {"dryrun": "offline", "run": "online"}  # wandb's older spellings of the same modes


def resolve_mode(configured: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``configured`` if set, else ``WANDB_MODE`` if set, else ``offline``."""
    if configured is not None:
        if configured not in MODES:
            raise ValueError(f"wandb mode {configured!r}; choose offline, online or disabled (or null: WANDB_MODE)")
        return configured
    env = (os.environ if environ is None else environ).get("WANDB_MODE", "").strip()
    if not env:
        return "offline"
    mode = _ALIASES.get(env, env)
    if mode not in MODES:
        raise ValueError(f"WANDB_MODE={env!r}; set it to offline, online or disabled, or unset it")
    return mode


_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_records(path: Path | str) -> list:
    """Every ``Record`` of a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file (no ':W&B' header)")
    pos, parts, raws = _HEADER, b"", []
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if length == 0 and kind == 0:  # zero padding to the block's end
            pos += left
            continue
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            raws.append(chunk)
        elif kind == _FIRST:
            parts = chunk
        elif kind == _MIDDLE:
            parts += chunk
        elif kind == _LAST:
            raws.append(parts + chunk)
            parts = b""
    records = []
    for raw in raws:
        record = pb.Record()
        record.ParseFromString(raw)
        records.append(record)
    return records


def run_contents(path: Path | str) -> dict:
    """What a researcher looks for in a run file: the run record's ``group``, ``job_type``, ``tags`` and
    ``config`` (updates merged), ``history`` (one dict per logged step), ``summary`` (last values) and
    ``artifacts`` (name, type, file paths). JSON values decoded; media entries stay dicts."""
    out: dict = {"group": None, "job_type": None, "tags": [], "config": {}, "history": [], "summary": {}}
    out["artifacts"] = []

    def merge(into: dict, items) -> dict:
        # an item has a key, or a nested key (a media entry's fields: [name, field]) naming a dict's entry
        for item in items:
            keys = [item.key] if item.key else list(item.nested_key)
            node = into
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = json.loads(item.value_json)
        return into

    for r in read_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(group=r.run.run_group or None, job_type=r.run.job_type or None, tags=list(r.run.tags))
            merge(out["config"], r.run.config.update)
        elif kind == "config":
            merge(out["config"], r.config.update)
        elif kind == "history":
            out["history"].append(merge({}, r.history.item))
        elif kind == "summary":
            merge(out["summary"], r.summary.update)
        elif kind == "artifact":
            files = [c.path for c in r.artifact.manifest.contents]
            out["artifacts"].append({"name": r.artifact.name, "type": r.artifact.type, "files": files})
    return out
