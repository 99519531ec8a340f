"""The small world chain's state (lab/small_world.py): where a run directory is, and its
pack for the device's output (``state-NN.pack`` parts + ``state.json``, at most 8 files) and back.

What a pack holds (``mode`` in state.json):
  exact     finished stages' exports, configs and logs + the running stage's latest checkpoint:
            the next call continues bit for bit;
  boundary  the exact pack is over ``max_mib``: finished stages only, the running one restarts;
  boundary-bf16  that is over too (a model of real size: one float32 export of 8 x 384 is 68 MiB): the
            finished stages with their exports' DiT weights rounded to bf16 (half the bytes; they load
            back in float32), so later stages start from the rounded networks, not bit for bit;
  logs      even that is over: logs and figures only, the run continues only where its directory is.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from lab.run_pack import pack_run, unpack_run
from trackstream.pipeline.report import read_metrics
from trackstream.pipeline.stage_calls import PipelineError
from trackstream.trainer.checkpoint import find_latest

__all__ = [
    "STAGES",
    "EXPORTS",
    "ChainError",
    "progress",
    "stage_summary",
    "stage_done",
    "last_losses",
    "pack",
    "unpack",
]

STAGES = ("teacher", "ode_init", "dmd", "rl")
EXPORTS = {"teacher": "export/teacher", "ode_init": "export/student", "dmd": "export/student", "rl": "export/student"}
PART_MIB, MAX_MIB, MAX_FILES = 15.0, 60.0, 8  # the device returns <= 8 files of <= 16 MiB, 64 MiB together
LOGS = ("config.yaml", "results.json", "metrics.jsonl", "eval.jsonl", "eval.json", "console.log", "train.log")


class ChainError(PipelineError):
    """A user-facing failure of the chain driver: printed as one line by ``main``."""


# ----------------------------------------------------------------------------- where a run is


def stage_summary(stage_dir: Path) -> dict:
    path = stage_dir / "results.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def stage_done(stage_dir: Path) -> bool:
    return stage_summary(stage_dir).get("status") == "done"


def progress(run_dir: Path) -> dict:
    """The finished stages, the running one and its latest checkpoint step; ``key`` orders two runs."""
    done = []
    for name in STAGES:
        if not stage_done(run_dir / name):
            ckpt = find_latest(run_dir / name / "checkpoints")
            step = int(ckpt.name.split("_")[1]) if ckpt else 0
            return {"done": done, "stage": name, "step": step, "key": [len(done), step]}
        done.append(name)
    return {"done": done, "stage": None, "step": 0, "key": [len(done), 0]}


def last_losses(stage_dir: Path) -> dict:
    rows = read_metrics(stage_dir / "metrics.jsonl")
    row = next((r for r in reversed(rows) if "train/loss" in r), {})
    keep = ("step", "train/loss", "perf/step_time_s", "perf/max_memory_gib")
    return {k: row[k] for k in keep if k in row}


# ----------------------------------------------------------------------------- pack / unpack


def _stage_files(run_dir: Path, name: str, *, live: bool) -> tuple[list[str], dict[str, bytes], dict]:
    """(files, trimmed contents, drop) of one stage: logs; exports (finished) or the latest checkpoint (live)."""
    stage_dir = run_dir / name
    rel = lambda p: str(p.relative_to(run_dir))  # noqa: E731
    files = [f"{name}/{f}" for f in LOGS if (stage_dir / f).is_file()]
    content, drop = {}, {}
    if name == "teacher":  # the codec: its file once fitted, else the fit's own latest checkpoint
        codec = stage_dir / "codec"
        if (codec / "codec.pt").is_file():
            files.append(rel(codec / "codec.pt"))
        else:
            files += [rel(p) for p in (codec / "config.yaml", codec / "metrics.jsonl") if p.is_file()]
            ckpt = find_latest(codec / "checkpoints")
            files += [rel(p) for p in sorted(ckpt.iterdir())] if ckpt else []
    pairs = stage_dir / "ode_pairs"
    if name == "ode_init" and pairs.is_dir():
        shards = [rel(p) for p in sorted(pairs.iterdir()) if p.is_file() and not p.name.startswith(".")]
        files += shards
        if not live:  # DMD and RL read the pairs' conditions only
            drop = {f: ("trajectory",) for f in shards if f.endswith((".pt", ".safetensors"))}
    if not live:
        files += [rel(p) for p in sorted((stage_dir / EXPORTS[name]).rglob("*")) if p.is_file()]
        return files, content, drop
    ckpt = find_latest(stage_dir / "checkpoints")
    step = int(ckpt.name.split("_")[1]) if ckpt else 0
    files += [rel(p) for p in sorted(ckpt.iterdir())] if ckpt else []
    for log in ("metrics.jsonl", "eval.jsonl"):  # as of the checkpoint: later steps are replayed on resume
        if (stage_dir / log).is_file():
            rows = (stage_dir / log).read_text().splitlines(keepends=True)
            keep = [r for r in rows if r.endswith("\n") and _step_of(r) <= step]
            content[f"{name}/{log}"] = "".join(keep).encode()
    return files, content, drop


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, TypeError, ValueError):
        return 1 << 62


def _bf16_bytes(path: Path) -> bytes:
    """A safetensors file with its floating tensors in bf16 (what ``boundary-bf16`` carries)."""
    from safetensors.torch import load_file, save

    tensors = load_file(str(path))
    return save({k: v.bfloat16() if v.is_floating_point() else v for k, v in tensors.items()}, {"format": "pt"})


def _select(run_dir: Path, mode: str) -> tuple[list[str], dict[str, bytes], dict]:
    where = progress(run_dir)
    files, content, drop = [f for f in ("chain.json", "chain.log", "calls.jsonl") if (run_dir / f).is_file()], {}, {}
    for name in STAGES:
        if not (run_dir / name).is_dir():
            continue
        live = name not in where["done"]
        if live and mode.startswith("boundary"):
            continue
        f, c, d = _stage_files(run_dir, name, live=live)
        if mode == "boundary-bf16":
            export = f"{name}/{EXPORTS[name]}/"
            c |= {x: _bf16_bytes(run_dir / x) for x in f if x.startswith(export) and x.endswith(".safetensors")}
        if mode == "logs":
            f = [x for x in f if Path(x).name in LOGS and x.count("/") == 1]
            c, d = {k: v for k, v in c.items() if k in f}, {}
        files, content, drop = files + f, {**content, **c}, {**drop, **d}
    return files, content, drop


def _size(run_dir: Path, rel: str, content: dict) -> int:
    return len(content[rel]) if rel in content else (run_dir / rel).stat().st_size


def pack(run_dir: Path, out: Path, *, part_mib: float = PART_MIB, max_mib: float = MAX_MIB) -> dict:
    """Pack the run's state into ``out`` (state-NN.pack parts + state.json); see the module docstring."""
    run_dir, out = Path(run_dir).resolve(), Path(out)
    part, limit = int(part_mib * 2**20), int(max_mib * 2**20)
    for mode in ("exact", "boundary", "boundary-bf16", "logs"):
        files, content, drop = _select(run_dir, mode)
        total = sum(_size(run_dir, f, content) for f in files)  # raw bytes: zlib only shrinks them
        if total <= limit and -(-total // part) < MAX_FILES:
            break
        print(f"[small_world] a {mode} pack would be {total / 2**20:.1f} MiB (limit {max_mib} MiB)", flush=True)
    else:
        raise ChainError(f"{run_dir}: even its logs are over --max-mib {max_mib}; raise it or trim the logs")
    # big files travel as raw byte chunks (pack_run keeps each file in one part)
    chunks: dict[str, list[str]] = {}
    entries: list[str] = []
    for f in files:
        size = _size(run_dir, f, content)
        if size <= part:
            entries.append(f)
            continue
        data = content[f] if f in content else (run_dir / f).read_bytes()
        names = [f"{f}.chunk-{i:03d}" for i in range(-(-size // part))]
        for i, n in enumerate(names):
            content[n] = data[i * part : (i + 1) * part]
        chunks[f], entries = names, entries + names
    parts: list[list[str]] = []  # first fit, largest first
    loads: list[int] = []
    for f in sorted(entries, key=lambda f: -_size(run_dir, f, content)):
        s = _size(run_dir, f, content)
        k = next((i for i, load in enumerate(loads) if load + s <= part), None)
        if k is None:
            parts.append([]), loads.append(0)
            k = len(parts) - 1
        parts[k].append(f)
        loads[k] += s
    if len(parts) >= MAX_FILES:
        raise ChainError(f"{len(parts)} parts of {part_mib} MiB: over the device's {MAX_FILES - 1} + state.json")
    if out.exists():
        for old in out.glob("state-*.pack"):
            old.unlink()
    names = []
    where = progress(run_dir)
    for i, members in enumerate(parts):
        name = f"state-{i:02d}.pack"
        info = {"part": i, "parts": len(parts), "mode": mode}
        pack_run(run_dir, members, out / name, info=info, drop=drop, content=content)
        names.append(name)
    sizes = {n: (out / n).stat().st_size for n in names}
    over = [n for n, s in sizes.items() if s > 16 * 2**20]
    if over:
        raise ChainError(f"{over} over 16 MiB after packing: lower --part-mib")
    meta = {
        "format": "trackstream.small-world-state",
        "mode": mode,
        "progress": where,
        "parts": names,
        "bytes": sizes,
        "chunked": chunks,
        "run_dir": str(run_dir),
        "packed_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "losses": {n: last_losses(run_dir / n) for n in STAGES if (run_dir / n).is_dir()},
    }
    (out / "state.json").write_text(json.dumps(meta, indent=1))
    print(
        f"[small_world] packed ({mode}) {where['done']} + {where['stage']} at step {where['step']} into {out}: "
        f"{len(names)} parts, {sum(sizes.values()) / 2**20:.1f} MiB",
        flush=True,
    )
    return meta


def unpack(run_dir: Path, state: Path, *, only_if_ahead: bool = False) -> dict | None:
    """Write a pack back under ``run_dir``. A run directory that is behind the pack is moved aside to
    ``<run_dir>.old`` first; with ``only_if_ahead`` one that is level or ahead is kept (a warm device)."""
    run_dir, state = Path(run_dir).resolve(), Path(state)
    meta = json.loads((state / "state.json").read_text())
    if meta.get("mode") == "logs":
        print(f"[small_world] {state} holds logs only (mode logs): nothing to continue from", flush=True)
        return None
    if run_dir.exists():
        have = progress(run_dir)["key"]
        if have >= meta["progress"]["key"]:
            if only_if_ahead:
                print(f"[small_world] {run_dir} is at {have}, the pack at {meta['progress']['key']}: kept", flush=True)
                return None
            raise ChainError(f"{run_dir} is already at {have}, the pack at {meta['progress']['key']}: nothing to do")
        old = run_dir.with_name(run_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        run_dir.rename(old)
    for name in meta["parts"]:
        unpack_run(state / name, run_dir)
    for rel, names in meta["chunked"].items():
        with open(run_dir / rel, "wb") as f:
            for n in names:
                f.write((run_dir / n).read_bytes())
                (run_dir / n).unlink()
    print(f"[small_world] unpacked {state} ({meta['mode']}, {meta['progress']}) into {run_dir}", flush=True)
    return meta
