"""The small world model's chain on a GPU machine, in resumable calls (docs/small-world.md):
teacher -> ODE pairs + ODE init -> Self-Forcing DMD -> RL, each stage the ordinary
``python -m trackstream.train experiment=small_*`` in a sub-directory of the run directory.

    python -m lab.small_world run --run-dir RUN --budget-min 9 [--state DIR] [--out DIR]
    python -m lab.small_world oneshot --run-dir RUN --budget-min 9 --out DIR  # one call: chain + ship
    python -m lab.small_world pack   --run-dir RUN --out DIR
    python -m lab.small_world unpack --run-dir RUN --state DIR
    python -m lab.small_world status --run-dir RUN [--state DIR]
    python -m lab.small_world minilm --out .minilm [--no-prune]  # the text encoder to carry
    python -m lab.small_world ship   --run-dir RUN [--dest assets/small-world] [--out DIR]
    python -m lab.small_world release --dest assets/small-world --out DIR [--first-part K]
    python -m lab.small_world release --dest assets/small-world --state DIR [--state DIR2]

``run`` continues the chain from where the run directory is (after unpacking ``--state`` when that is
further along: a fresh machine), and stops before ``--budget-min``: at the deadline each running stage
gets SIGUSR1, which the training loop honours at its next step boundary (checkpoint, then exit). The
stage processes start with SIGUSR1 ignored, so a signal that arrives while a stage is still setting
up (pool, text encoder, ODE pairs) is dropped instead of killing it; the driver repeats it every few
seconds until the loop takes it, and kills the stage after ``--grace-s`` (it resumes from its last
checkpoint, trainer.ckpt_every, and pair shards are kept). With ``--out`` the state is then packed:
``state-NN.pack`` parts (lab/run_pack.py's format, each <= ``--part-mib``) and
``state.json`` (what the pack holds, each stage's progress and last losses), at most 8 files, what
one device call brings back (``lab/small_world_state.py``). What the pack holds (``mode`` in state.json):
  exact     finished stages' exports, configs and logs + the running stage's latest checkpoint:
            the next call continues bit for bit;
  boundary  the exact pack is over ``--max-mib``: finished stages only, the running one restarts;
  boundary-bf16  that too: the finished stages with their exports' DiT weights in bf16 (not bit for bit);
  logs      even that is over: logs and figures only, the run continues only where its directory is.
A warm device keeps the run directory between calls (an ignored path of the checkout's copy), so
``run`` there skips unpacking whatever is behind it.

``minilm`` writes the bundled all-MiniLM-L6-v2 in bf16, by default with its vocabulary pruned to the
tokens the small world's texts can produce (``pipeline.carry_minilm``): 21 MiB instead of 44; words outside it
become [UNK], so ``--no-prune`` is for free-text prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab.carry_minilm import write_minilm
from lab.small_world_oneshot import oneshot
from lab.small_world_ship import SMALL_DIR, pack_release, ship_small_world, unpack_release
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
from lab.student_chain import add_scoring_args, scoring_options
from trackstream.pipeline.report import read_metrics
from trackstream.pipeline.stage_calls import PipelineError

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


def _environment() -> dict:
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
    _record(run_dir, chain)
    call = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "budget_s": budget_s, **_environment()}
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
        prog="python -m lab.small_world",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("command", choices=("run", "oneshot", "pack", "unpack", "status", "minilm", "ship", "release"))
    ap.add_argument("--run-dir", type=Path, help="the run directory")
    ap.add_argument("--budget-min", type=float, default=9.0, help="run: stop and pack within this many minutes")
    ap.add_argument(
        "--state",
        type=Path,
        action="append",
        help="a packed state folder (state.json + parts) to continue from; release: folders of release parts",
    )
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
    ap.add_argument("--min-stage-s", type=float, help="run / oneshot: start no stage with less time left (90 / 20)")
    ap.add_argument("--grace-s", type=float, help="run / oneshot: kill a stage this long after the signal (60 / 20)")
    ap.add_argument("--pack-reserve-s", type=float, help="run / oneshot: seconds kept for packing (30 / 25)")
    ap.add_argument("--finish-s", type=float, default=30.0, help="oneshot: seconds kept to export a stopped stage")
    ap.add_argument("--stop-at", metavar="STAGE:STEP", help="run: stop that stage at that step (rehearsals)")
    ap.add_argument("--part-mib", type=float, default=PART_MIB, help="largest pack part")
    ap.add_argument("--max-mib", type=float, default=MAX_MIB, help="largest pack in all (what can travel back in)")
    ap.add_argument("--dest", type=Path, default=SMALL_DIR, help="ship: the release folder")
    add_scoring_args(ap, long_clips=4)
    ap.add_argument("--first-part", type=int, default=0, help="ship / release --out: the first release part to write")
    args = ap.parse_args(argv)
    for key, run_default, oneshot_default in (
        ("min_stage_s", 90.0, 20.0),
        ("grace_s", 60.0, 20.0),
        ("pack_reserve_s", 30.0, 25.0),
    ):
        if getattr(args, key) is None:
            setattr(args, key, oneshot_default if args.command == "oneshot" else run_default)
    try:
        if args.command == "minilm":
            write_minilm(args.out or Path(".minilm"), prune=args.prune)
            return 0
        states = args.state or []
        if len(states) > 1 and args.command != "release":
            raise ValueError(f"{args.command} takes one --state DIR (several are for release parts only)")
        state = states[0] if states else None
        if args.run_dir is None and args.command != "release":
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
                state=state,
                out=args.out,
                min_stage_s=args.min_stage_s,
                grace_s=args.grace_s,
                pack_reserve_s=args.pack_reserve_s,
                stop_at=stop_at,
                part_mib=args.part_mib,
                max_mib=args.max_mib,
            )
        elif args.command == "oneshot":
            if args.out is None:
                raise ValueError("oneshot needs --out DIR (what the device call brings back: $OUT)")
            ship = [f"--{k.replace('_', '-')}={v}" for k, v in scoring_options(args).items()]
            oneshot(
                args.run_dir,
                args.out,
                _chain(args),
                budget_s=args.budget_min * 60,
                pack_reserve_s=args.pack_reserve_s,
                finish_s=args.finish_s,
                grace_s=args.grace_s,
                min_stage_s=args.min_stage_s,
                ship_options=ship,
            )
        elif args.command == "ship":
            m = ship_small_world(args.run_dir, args.dest, **scoring_options(args))
            print(f"[small_world] {args.dest}: {len(m['sha256'])} files, {m['bytes'] / 2**20:.1f} MiB")
            if args.out is not None:
                pack_release(args.dest, args.out, first_part=args.first_part)
            for name, t in m["targets"].items():
                print(
                    f"[small_world]   {name}: {t['value']:.3f} vs {t['threshold']:.3f}: {'met' if t['met'] else 'NOT met'}"
                )
        elif args.command == "release":
            if (args.out is None) == (not states):
                raise ValueError("release takes --out DIR (pack --dest for the trip back) or --state DIR (unpack)")
            if args.out is not None:
                pack_release(args.dest, args.out, first_part=args.first_part)
            else:
                m = unpack_release(states, args.dest)
                print(f"[small_world] {args.dest}: {len(m['sha256'])} files checked against its manifest")
        elif args.command == "pack":
            if args.out is None:
                raise ValueError("pack needs --out DIR")
            pack(args.run_dir, args.out, part_mib=args.part_mib, max_mib=args.max_mib)
        elif args.command == "unpack":
            if state is None:
                raise ValueError("unpack needs --state DIR")
            unpack(args.run_dir, state)
        else:
            print(json.dumps(progress(Path(args.run_dir).resolve()) if Path(args.run_dir).is_dir() else {}, indent=1))
            if state and (state / "state.json").is_file():
                meta = json.loads((state / "state.json").read_text())
                print(json.dumps({k: meta[k] for k in ("mode", "progress", "bytes", "losses", "packed_at")}, indent=1))
    except (PipelineError, ValueError) as e:
        print(f"[small_world] error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
