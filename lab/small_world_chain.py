"""The small world model's chain driver (lab/small_world.py is its command line, lab/small_world_oneshot.py its
one-call form): each stage the ordinary ``python -m trackstream.train experiment=small_*`` in a sub-directory of
the run directory, stopped by the training loop's preemption signal at the call's deadline and continued from
its checkpoint by the next call (lab/small_world.py's docstring says how)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab.small_world_state import (
    EXPORTS,
    MAX_MIB,
    PART_MIB,
    STAGES,
    ChainError,
    last_losses,
    pack,
    progress,
    stage_done,
    stage_summary,
    unpack,
)
from trackstream.pipeline.report import read_metrics

__all__ = ["Chain", "record_chain", "stage_overrides", "run_training", "environment", "run"]

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = {"teacher": "small_teacher", "ode_init": "small_ode_init", "dmd": "small_dmd", "rl": "small_rl"}
DISTILL_FRAMES = "data.num_frames=25"  # make run's: the first frame + 2 chunks of 3 latents
STOP_SIGNAL = signal.SIGUSR1


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


def record_chain(run_dir: Path, chain: Chain) -> None:
    path = run_dir / "chain.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != asdict(chain):
            raise ChainError(
                f"{run_dir} was started with overrides {old}, not {asdict(chain)}: pass the same --set / "
                "--stage-set to continue it, or choose a new --run-dir"
            )
    path.write_text(json.dumps(asdict(chain), indent=1))


# ----------------------------------------------------------------------------- stages


def stage_overrides(run_dir: Path, name: str, chain: Chain) -> list[str]:
    """The stage's command-line overrides: its experiment, its inputs (earlier stages' exports, the pairs), then
    the chain's own. Each stage reads the teacher run's network, codec, world, frame size and shift from the
    network it is given (as make run's stages do)."""
    out = [f"experiment={EXPERIMENTS[name]}"]
    if name != "teacher":
        pairs = run_dir / "ode_init" / "ode_pairs"
        out.append(DISTILL_FRAMES)
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
    status = stage_summary(stage_dir).get("status")
    if proc.returncode == 0 and status in ("done", "preempted"):
        return "done" if status == "done" else "stopped"
    if first is not None:  # killed while stopping: it continues from its last checkpoint
        return "stopped"
    tail = (stage_dir / "console.log").read_text(errors="replace").strip().splitlines()[-1:]
    raise ChainError(
        f"{stage_dir.name} failed (exit {proc.returncode}): {tail[0] if tail else ''} -- see {stage_dir / 'console.log'}"
    )


def environment() -> dict:
    """The machine a call trains on (torch imported here only: the driver itself needs no accelerator)."""
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"device": gpu or f"cpu ({platform.machine()})", "torch": torch.__version__, "cuda": torch.version.cuda}


def _logged_step(stage_dir: Path) -> int:
    rows = [r for r in read_metrics(stage_dir / "metrics.jsonl") if "step" in r]
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
    record_chain(run_dir, chain)
    call = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "budget_s": budget_s, **environment()}
    call["from"] = progress(run_dir)
    for name in STAGES:
        if stage_done(run_dir / name):
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
        print(f"[small_world] {name}: {status} after {time.time() - t:.0f} s; {last_losses(run_dir / name)}")
        if status != "done":
            break
    where = progress(run_dir)
    print(f"[small_world] progress: done {where['done']}, next {where['stage']} at step {where['step']}", flush=True)
    call |= {"to": where, "seconds": round(time.time() - t0, 1)}
    with open(run_dir / "calls.jsonl", "a") as f:  # the release's manifest names the machines that trained it
        f.write(json.dumps(call) + "\n")
    if out is not None:
        pack(run_dir, Path(out), part_mib=part_mib, max_mib=max_mib)
    return where
