"""The long CPU distillation run: make run's ODE-init student, then DMD for
>= 400 generator updates, resumable across processes and machines (docs/long-dmd.md).

    python -m lab.long_dmd run    --run-dir RUN                   # start, or continue
    python -m lab.long_dmd pack   --run-dir RUN                   # -> runs/dmd-long/ (copy it to the next machine)
    python -m lab.long_dmd unpack --run-dir DIR                   # fresh machine (run does it too)
    python -m lab.long_dmd status --run-dir DIR

``run`` goes through make run's own stages (trackstream/pipeline/run.py: the shipped teacher's fine-tune, ODE
pairs, ODE init, each reused when done) with make run's sizes, then its DMD stage with make run's
hyperparameters (experiment=tiny_dmd: update ratio 5, learning rates, EMA, batch) for
``--updates`` x update_ratio loop steps, with ``stage.snapshot_every``: generator snapshots every
``--snapshot-every`` generator updates (trackstream/train/snapshots.py), a checkpoint every ``--ckpt-every``
steps, resumed exactly (trainer.resume=auto) whenever ``run`` is started again. The DMD learning
rates are constant (no decay horizon), so a finished run can be extended with a larger
``--updates``: the continuation is the same as a run started with that count. A progress line goes
to stdout and ``<run-dir>/progress.log`` every ``--report-every`` seconds.

``pack`` writes the run's resumable state as one file, ``runs/dmd-long/state.pt`` in this checkout
(a safetensors file with a JSON header, no pickle; the name is kept from the pickle-based version 1;
lab/run_pack.py: the latest DMD checkpoint, the teacher and ODE-init exports, the pairs'
conditions, configs and logs; ~19 MB), and each snapshot's EMA weights, once, as
``runs/dmd-long/snapshots/gen_XXXXX.pt`` (2.5 MB each, never rewritten). ``run`` in a run
directory that does not exist yet unpacks them first (``--fresh`` starts over instead).

``--set KEY=VALUE`` (repeatable) gives every stage ``run`` launches an override after its own; a run directory
keeps them as part of its sizes (``sizes.json``), as it keeps the DMD stage's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf

from lab.run_pack import pack_run, read_pack, unpack_run
from trackstream.pipeline.presets import FULL, SCRATCH, Sizes
from trackstream.pipeline.report import read_metrics
from trackstream.pipeline.run import DISTILL, check_preset, stage_dmd, stage_ode_init, stage_teacher
from trackstream.pipeline.stage_calls import PipelineError
from trackstream.train.snapshots import SNAPSHOT_DIR, list_snapshots, read_snapshot
from trackstream.trainer.checkpoint import find_latest, latest_readable

__all__ = ["PACK_DIR", "long_sizes", "dmd_overrides", "run", "pack", "unpack", "main"]

ROOT = Path(__file__).resolve().parents[1]
PACK_DIR = ROOT / "runs" / "dmd-long"  # ignored by git: run state stays out of the tree
UPDATE_RATIO = 5  # experiment=tiny_dmd's stage.update_ratio (lab/tests/test_long_dmd.py checks they agree)
PART_BYTES = 19 * 2**20  # each file under 20 MB (what a repository or an artifact store takes): state.pt.partNN


def _split_state(pack_dir: Path) -> list[Path]:
    """``state.pt`` over PART_BYTES -> ``state.pt.part00``, ``.part01``, ... (state.pt removed); stale parts of an
    earlier pack always go. Returns the files that hold the state."""
    state = pack_dir / "state.pt"
    for old in pack_dir.glob("state.pt.part*"):
        old.unlink()
    if state.stat().st_size <= PART_BYTES:
        return [state]
    data, parts = state.read_bytes(), []
    for i in range(0, len(data), PART_BYTES):
        parts.append(pack_dir / f"state.pt.part{i // PART_BYTES:02d}")
        parts[-1].write_bytes(data[i : i + PART_BYTES])
    state.unlink()
    return parts


def _has_state(pack_dir: Path) -> bool:
    return (pack_dir / "state.pt").is_file() or (pack_dir / "state.pt.part00").is_file()


def _state_file(pack_dir: Path) -> Path:
    """A readable ``state.pt``: the file itself, or its parts joined into a temporary file."""
    state = pack_dir / "state.pt"
    if state.is_file():
        return state
    parts = sorted(pack_dir.glob("state.pt.part*"))
    if not parts:
        raise PipelineError(f"{pack_dir}: no packed state (state.pt or state.pt.part00); pack a run first")
    import tempfile

    joined = Path(tempfile.mkdtemp(prefix="long_dmd_")) / "state.pt"
    with open(joined, "wb") as f:
        for part in parts:
            f.write(part.read_bytes())
    return joined


def long_sizes(
    *,
    updates: int = 400,
    snapshot_every: int = 50,
    ckpt_every: int = 25,
    rollout: str = "self_forcing",
    more: Sequence[str] = (),
) -> Sizes:
    """make run's FULL teacher fine-tune, the ODE init of a run distilled from its own ODE-init student
    (SCRATCH's: 24 pairs, 80 steps; FULL's few steps only show the stage); the long DMD stage after them, with the
    Self-Forcing rollout (the default) or AR-Drag's Self-Rollout (``stage.rollout``). ``more``: overrides every
    stage takes after its own (``--set``)."""
    for name, value in (("--updates", updates), ("--snapshot-every", snapshot_every), ("--ckpt-every", ckpt_every)):
        if value < 1:
            raise ValueError(f"{name}={value} must be >= 1")
    dmd = (
        f"stage.snapshot_every={snapshot_every}",
        f"trainer.ckpt_every={ckpt_every}",
        *(() if rollout == "self_forcing" else (f"stage.rollout={rollout}",)),
        f"trainer.max_steps={updates * UPDATE_RATIO}",
    )
    more = tuple(more)
    return dataclasses.replace(
        FULL, name="dmd-long", teacher=(*FULL.teacher, *more), ode_init=(*SCRATCH.ode_init, *more), dmd=(*dmd, *more)
    )


def dmd_overrides(sizes: Sizes) -> list[str]:
    """The DMD stage's overrides that do not depend on the run directory (for composing it in tests)."""
    return ["experiment=tiny_dmd", *DISTILL, *sizes.dmd]


def _recorded(sizes: Sizes) -> Sizes:
    # what a run directory must keep: everything but the length, which may grow (constant LRs)
    kept = tuple(o for o in sizes.dmd if not o.startswith("trainer.max_steps="))
    return dataclasses.replace(sizes, dmd=kept)


# ----------------------------------------------------------------------------- progress


class Progress(threading.Thread):
    """Every ``every`` s: step, generator updates, s/step and s/update since this process started, losses."""

    def __init__(self, run_dir: Path, max_steps: int, every: float):
        super().__init__(daemon=True)
        self.run_dir, self.max_steps, self.every = run_dir, max_steps, every
        self.stop = threading.Event()
        self.first: tuple[float, int] | None = None

    def line(self) -> str | None:
        rows = [r for r in read_metrics(self.run_dir / "dmd" / "metrics.jsonl") if "step" in r]
        if not rows:
            return None
        step, now = int(rows[-1]["step"]), time.time()
        if self.first is None or step < self.first[1]:
            self.first = (now, step)
        t0, s0 = self.first
        rate = (now - t0) / (step - s0) if step > s0 else None
        gen = next((r for r in reversed(rows) if "train/loss/generator" in r), {})
        critic = next((r for r in reversed(rows) if "train/loss/critic" in r), {})
        parts = [
            time.strftime("%Y-%m-%d %H:%M:%S"),
            f"step {step}/{self.max_steps}",
            f"generator updates {step // UPDATE_RATIO}/{self.max_steps // UPDATE_RATIO}",
        ]
        if rate is not None:
            left = (self.max_steps - step) * rate / 3600
            parts += [f"{rate:.1f} s/step", f"{rate * UPDATE_RATIO:.0f} s/update", f"{left:.1f} h left"]
        if gen:
            parts.append(f"generator loss {gen['train/loss/generator']:.4g}")
        if critic:
            parts.append(f"critic loss {critic['train/loss/critic']:.4g}")
        latest = find_latest(self.run_dir / "dmd" / "checkpoints")
        parts.append(f"checkpoint {latest.name if latest else '-'}")
        parts.append(f"snapshots {sorted(list_snapshots(self.run_dir / 'dmd' / SNAPSHOT_DIR))}")
        return "[long_dmd] " + " | ".join(parts)

    def run(self) -> None:
        while not self.stop.wait(self.every):
            text = self.line()
            if text:
                print(text, flush=True)
                with open(self.run_dir / "progress.log", "a") as f:
                    f.write(text + "\n")


# ----------------------------------------------------------------------------- commands


def run(
    run_dir: Path,
    sizes: Sizes,
    *,
    pack_dir: Path = PACK_DIR,
    fresh: bool = False,
    report_every: float = 300,
    teacher_asset: Path | None = None,
) -> dict:
    """``teacher_asset``: the shipped-teacher folder the chain starts from (default assets/tiny-teacher), recorded
    in the run directory on its first start: a continuation with another one is refused."""
    from trackstream.pipeline.releases import ASSET_DIR

    run_dir = Path(run_dir).resolve()
    asset = Path(teacher_asset or ASSET_DIR).resolve()
    if not (run_dir / "sizes.json").is_file() and not fresh and _has_state(pack_dir):
        print(
            f"[long_dmd] {run_dir} is new: continuing the packed run {pack_dir / 'state.pt'} (--fresh: start over)",
            flush=True,
        )
        unpack(run_dir, pack_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_preset(run_dir, _recorded(sizes))
    recorded = run_dir / "teacher_asset.txt"  # relative to the checkout, so a new machine's checkout matches
    name = str(asset.relative_to(ROOT)) if asset.is_relative_to(ROOT) else str(asset)
    if recorded.is_file() and recorded.read_text().strip() != name:
        raise ValueError(
            f"{run_dir} was started from the teacher {recorded.read_text().strip()}, not {name}: give that "
            "--teacher-asset or a new --run-dir"
        )
    recorded.write_text(name + "\n")
    (run_dir / "long_dmd.pid").write_text(str(os.getpid()))
    # the DMD stage's length: its last trainer.max_steps (a later override wins)
    max_steps = int([o for o in sizes.dmd if o.startswith("trainer.max_steps=")][-1].split("=")[1])
    results = run_dir / "dmd" / "results.json"
    if results.is_file() and json.loads(results.read_text()).get("step", 0) < max_steps:
        results.unlink()  # a longer run than the one that finished: the stage resumes from its last checkpoint
    state: dict = {"sizes": sizes, "teacher_asset": asset}
    progress = Progress(run_dir, max_steps, report_every)
    try:
        for name, fn in (("teacher", stage_teacher), ("ode_init", stage_ode_init)):
            t0 = time.perf_counter()
            fn(run_dir, state)
            print(f"[long_dmd] {name} done in {time.perf_counter() - t0:.0f} s", flush=True)
        print(
            f"[long_dmd] DMD to {max_steps} steps ({max_steps // UPDATE_RATIO} generator updates) in {run_dir / 'dmd'}",
            flush=True,
        )
        progress.start()
        summary = stage_dmd(run_dir, state)
    finally:
        progress.stop.set()
        (run_dir / "long_dmd.pid").unlink(missing_ok=True)
    print(progress.line() or "", flush=True)
    print(f"[long_dmd] done: {summary}", flush=True)
    return summary


def pack(run_dir: Path, pack_dir: Path = PACK_DIR, *, allow_pickle: bool = False) -> dict:
    """The resumable state -> ``pack_dir/state.pt`` (overwritten; safetensors + JSON, see run_pack); new
    snapshots' EMA -> ``pack_dir/snapshots``. The RL stage (``lab.student_chain rl``) goes in too: finished, its
    export and records; under way, its latest checkpoint, its Hydra records and its log up to that step (the
    next ``student_chain rl`` resumes from it). ``allow_pickle``: read a run's old pickle-based files."""
    from lab.ship_teacher import git_commit

    run_dir = Path(run_dir).resolve()
    found = latest_readable(run_dir / "dmd" / "checkpoints", allow_pickle=allow_pickle)  # a damaged newest one: skipped
    if found is None:
        raise PipelineError(f"{run_dir}: no readable DMD checkpoint yet; pack after the first one (trainer.ckpt_every)")
    ckpt, meta = found
    step = int(ckpt.name.split("_")[1])
    updates = int(meta["networks"]["generator"]["num_updates"])
    # the teacher run's own codec, where it fitted one: a rollout past the horizon re-encodes frames with it
    files = ["sizes.json", "teacher_asset.txt", "pipeline.log", "progress.log", "teacher/codec/codec.pt"]
    stages = [("teacher", "export/teacher"), ("ode_init", "export/student"), ("dmd", "export/student")]
    rl = run_dir / "rl" / "results.json"  # the chain's RL stage (lab.student_chain rl), once finished
    rl_done = rl.is_file() and json.loads(rl.read_text()).get("status") == "done"
    if rl_done:
        stages.append(("rl", "export/student"))
    for stage, export in stages:
        files += [f"{stage}/{f}" for f in ("results.json", "config.yaml", "metrics.jsonl")]
        files += [str(p.relative_to(run_dir)) for p in sorted((run_dir / stage / export).rglob("*")) if p.is_file()]
    files += [str(p.relative_to(run_dir)) for p in sorted((run_dir / "ode_init" / "ode_pairs").iterdir())]
    files = [f for f in files if (run_dir / f).is_file()]
    files += [str(p.relative_to(run_dir)) for p in sorted(ckpt.iterdir())]
    # the log as of the packed checkpoint: steps after it are replayed (and logged again) on resume
    content = {"dmd/metrics.jsonl": _log_until(run_dir / "dmd" / "metrics.jsonl", step)}
    rl_step = None if rl_done else latest_readable(run_dir / "rl" / "checkpoints", allow_pickle=allow_pickle)
    if rl_step is not None:  # an RL stage under way: its latest checkpoint, its records and its log so far
        rl_ckpt, _ = rl_step
        rl_files = sorted((run_dir / "rl" / ".hydra").glob("*.yaml"))
        rl_files += [run_dir / "rl" / "config.yaml", *sorted(rl_ckpt.iterdir())]
        files += [str(p.relative_to(run_dir)) for p in rl_files if p.is_file()]
        files.append("rl/metrics.jsonl")
        content["rl/metrics.jsonl"] = _log_until(run_dir / "rl" / "metrics.jsonl", int(rl_ckpt.name.split("_")[1]))
    drop = {
        f: ("trajectory",) for f in files if f.startswith("ode_init/ode_pairs/") and f.endswith((".pt", ".safetensors"))
    }
    info = {
        "step": step,
        "generator_updates": updates,
        "git_commit": git_commit(),
        "packed_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "checkpoint": ckpt.name,
        "rl_checkpoint": None if rl_step is None else rl_step[0].name,
    }
    sizes = pack_run(
        run_dir,
        files,
        pack_dir / "state.pt",
        info=info,
        drop=drop,
        content=content,
        allow_pickle=allow_pickle,
    )
    new = []
    for n, path in list_snapshots(run_dir / "dmd" / SNAPSHOT_DIR).items():
        target = pack_dir / SNAPSHOT_DIR / path.name
        if not target.is_file():  # written once: a snapshot never changes
            snap = read_snapshot(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.save({k: snap[k] for k in ("generator_updates", "step", "ema")}, target)
            new.append(n)
    total = (pack_dir / "state.pt").stat().st_size
    held = _split_state(pack_dir)
    print(
        f"[long_dmd] packed step {step} ({updates} generator updates) of {run_dir} into "
        f"{', '.join(p.name for p in held)} in {pack_dir} ({total / 2**20:.1f} MiB, {len(sizes)} files); "
        f"new snapshots {new or 'none'} in {pack_dir / SNAPSHOT_DIR}"
        + (f"; the RL stage under way at {info['rl_checkpoint']}" if info["rl_checkpoint"] else "")
    )
    return {**info, "bytes": total, "new_snapshots": new}


def _log_until(metrics: Path, step: int) -> bytes:
    """A stage's ``metrics.jsonl`` up to ``step`` (whole lines only; nothing where there is no log yet)."""
    rows = metrics.read_text().splitlines(keepends=True) if metrics.is_file() else []
    return "".join(r for r in rows if r.endswith("\n") and json.loads(r).get("step", 0) <= step).encode()


def unpack(run_dir: Path, pack_dir: Path = PACK_DIR, *, allow_pickle: bool = False) -> dict:
    """``pack_dir/state.pt`` -> ``run_dir``; ``allow_pickle``: the opt-in for a version 1 (pickle-based) pack."""
    run_dir = Path(run_dir).resolve()
    pid = run_dir / "long_dmd.pid"
    if pid.is_file() and _alive(int(pid.read_text() or 0)):
        raise PipelineError(f"a run is going on in {run_dir} (pid {pid.read_text()}): stop it before unpacking there")
    state = _state_file(pack_dir)
    info = read_pack(state, allow_pickle=allow_pickle)["info"]
    have = find_latest(run_dir / "dmd" / "checkpoints")
    if have is not None and int(have.name.split("_")[1]) >= int(info["step"]):
        raise PipelineError(f"{run_dir} is already at {have.name}, the pack at step {info['step']}: nothing to unpack")
    info = unpack_run(state, run_dir, allow_pickle=allow_pickle)
    snaps = run_dir / "dmd" / SNAPSHOT_DIR
    for n, path in list_snapshots(pack_dir / SNAPSHOT_DIR).items():
        if not (snaps / path.name).is_file():
            snaps.mkdir(parents=True, exist_ok=True)
            (snaps / path.name).write_bytes(path.read_bytes())
    print(
        f"[long_dmd] unpacked step {info['step']} ({info['generator_updates']} generator updates, packed "
        f"{info['packed_at']} at commit {info['git_commit']}) into {run_dir}",
        flush=True,
    )
    return info


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return pid > 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lab.long_dmd",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("command", choices=("run", "pack", "unpack", "status"))
    ap.add_argument("--run-dir", type=Path, required=True, help="the run directory (outside the checkout)")
    ap.add_argument(
        "--pack-dir", type=Path, default=PACK_DIR, help=f"where the packed state lives (default {PACK_DIR})"
    )
    ap.add_argument("--updates", type=int, default=400, help="generator updates (loop steps = updates x 5)")
    ap.add_argument("--snapshot-every", type=int, default=50, help="generator updates between snapshots")
    ap.add_argument("--ckpt-every", type=int, default=25, help="loop steps between checkpoints")
    ap.add_argument("--report-every", type=float, default=300, help="seconds between progress lines")
    ap.add_argument("--fresh", action="store_true", help="run: do not continue the packed run in a new run dir")
    ap.add_argument(
        "--allow-pickle",
        action="store_true",
        help="pack / unpack / status: read old pickle-based files (a version 1 pack, old checkpoints); they can "
        "run code when loaded, so only for files you trust (or TRACKSTREAM_ALLOW_PICKLE=1)",
    )
    ap.add_argument(
        "--teacher-asset",
        type=Path,
        default=None,
        help="run: the shipped-teacher folder the chain starts from (default assets/tiny-teacher)",
    )
    ap.add_argument(
        "--rollout",
        choices=("self_forcing", "self_rollout"),
        default="self_forcing",
        help="the DMD rollout (stage.rollout): Self-Forcing's exit-step jump or AR-Drag's Self-Rollout",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run: an override for every stage, after its own",
    )
    args = ap.parse_args(argv)
    try:
        if args.command == "run":
            sizes = long_sizes(
                updates=args.updates,
                snapshot_every=args.snapshot_every,
                ckpt_every=args.ckpt_every,
                rollout=args.rollout,
                more=args.set,
            )
            run(
                args.run_dir,
                sizes,
                pack_dir=args.pack_dir,
                fresh=args.fresh,
                report_every=args.report_every,
                teacher_asset=args.teacher_asset,
            )
        elif args.command == "pack":
            pack(args.run_dir, args.pack_dir, allow_pickle=args.allow_pickle)
        elif args.command == "unpack":
            unpack(args.run_dir, args.pack_dir, allow_pickle=args.allow_pickle)
        else:
            run_dir = Path(args.run_dir).resolve()
            cfg = run_dir / "dmd" / "config.yaml"  # the length the run was started with
            steps = int(OmegaConf.load(cfg).trainer.max_steps) if cfg.is_file() else args.updates * UPDATE_RATIO
            progress = Progress(run_dir, steps, 0)
            print(progress.line() or f"[long_dmd] no DMD progress in {args.run_dir} yet")
            if _has_state(args.pack_dir):
                packed = read_pack(_state_file(args.pack_dir), allow_pickle=args.allow_pickle)["info"]
                print(f"[long_dmd] pack {args.pack_dir}: {packed}")
    except (PipelineError, ValueError) as e:
        print(f"[long_dmd] error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
