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
import sys
from pathlib import Path

from lab.carry_minilm import write_minilm
from lab.small_world_chain import Chain, run
from lab.small_world_oneshot import oneshot
from lab.small_world_ship import SMALL_DIR, pack_release, ship_small_world, unpack_release
from lab.small_world_state import (
    MAX_MIB,
    PART_MIB,
    STAGES,
    pack,
    progress,
    unpack,
)
from lab.student_chain import add_scoring_args, scoring_options
from trackstream.pipeline.stage_calls import PipelineError

__all__ = ["main"]

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
