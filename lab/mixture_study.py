"""Which shares of the placement mixture teach a teacher the inputs it misses: few points and none.

    python -m lab.mixture_study run --out runs/mixture --steps 200

Arms fine-tune the same teacher release (``--source``, default the shipped ``assets/tiny-teacher``) for ``--steps``
steps on ``experiment=tiny_teacher_placements``, everything equal (the same steps, batches, seeds, learning rate)
but the shares of ``data.placement``'s kinds (``trackstream.data.placements.Placement``). The default arms:
``defaults`` (the mixture's own shares: the control, as much more training on the same inputs) and ``sparse``
(clusters and no tracks twice as often: the kinds behind the shipped teacher's unmet sparse and none targets);
``--arm NAME=KIND:SHARE,...`` replaces them (kinds not named keep their defaults; ``hold_none:true`` trains the
samples drawn without tracks on their first frame held). Each arm's export is scored by
``lab.placement_table`` (teacher only, every placement, ``--clips`` held-out clips); ``mixture_study.json`` holds
the tables, each arm's shares and each placement's EPE / frozen over its lattice's (``lab.splat_study.summary``),
``mixture_study.md`` the comparison. A re-run resumes each arm where it stopped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lab.splat_study import EXPERIMENT, relabelled_release, score_arm, summary, write_study

ROOT = Path(__file__).resolve().parents[1]
ARMS = {
    "defaults": {},
    "sparse": {"random": 0.2, "grid": 0.15, "cluster": 0.3, "lattice": 0.1, "none": 0.25},
}

__all__ = ["ARMS", "parse_arm", "run_arm", "main"]


def parse_arm(text: str) -> tuple[str, dict]:
    """``NAME=KIND:SHARE,...`` -> (name, {kind: share}); kinds from ``data.placements.KINDS``, and
    ``hold_none:true`` (``Placement.hold_none``: a sample without tracks trains on its first frame held)."""
    from trackstream.data.placements import KINDS

    name, _, spec = text.partition("=")
    shares: dict = {}
    for item in filter(None, spec.split(",")):
        kind, _, share = item.partition(":")
        if kind == "hold_none" and share.lower() in ("true", "false"):
            shares[kind] = share.lower() == "true"
            continue
        if kind not in KINDS or not share:
            raise ValueError(
                f"--arm {text!r}: write NAME=KIND:SHARE,... with KIND one of {list(KINDS)} (or hold_none:true)"
            )
        shares[kind] = float(share)
    if not name:
        raise ValueError(f"--arm {text!r}: the arm needs a name before '='")
    return name, shares


def run_arm(out: Path, name: str, shares: dict, *, init: Path, steps: int, threads: int) -> Path:
    """Fine-tune one arm from ``init`` to ``steps`` (resuming); returns its run directory."""
    from lab.ship_teacher import start

    run_dir = out / name
    # ++: the recipe's data.placement is {} (every field its default), so each share is added to it
    overrides = [
        f"model.init_from={init / 'teacher'}",
        *(f"++data.placement.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in shares.items()),
    ]
    code = start(run_dir, overrides, until=steps, threads=threads, experiment=EXPERIMENT)
    if code:
        raise SystemExit(f"the {name} arm's training failed (exit {code}); see {run_dir}")
    return run_dir


def main(argv=None) -> int:
    from trackstream.data.placements import KINDS, Placement

    ap = argparse.ArgumentParser(prog="python -m lab.mixture_study", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["run"])
    ap.add_argument("--out", type=Path, required=True, help="study folder (outside the repository)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teacher-steps", type=int, default=24)
    ap.add_argument("--source", type=Path, default=ROOT / "assets" / "tiny-teacher")
    ap.add_argument("--arm", action="append", default=[], help="NAME=KIND:SHARE,... (repeat; default: ARMS)")
    args = ap.parse_args(argv)
    try:
        arms = dict(parse_arm(a) for a in args.arm) if args.arm else dict(ARMS)
    except ValueError as err:
        ap.error(str(err))
    args.out = args.out.resolve()  # the arms train from the repository root (lab.ship_teacher.start)
    args.out.mkdir(parents=True, exist_ok=True)
    splat = json.loads((args.source / "teacher" / "network.json").read_text())["model"]["track_splat"]
    init = relabelled_release(args.source, args.out / "init", splat)  # one start folder for every arm
    tables, mixes = {}, {}
    for name, shares in arms.items():
        run_dir = run_arm(args.out, name, shares, init=init, steps=args.steps, threads=args.threads)
        mix = Placement(**shares)
        mixes[name] = {**dict(zip(KINDS, (round(float(s), 4) for s in mix.shares()))), "hold_none": mix.hold_none}
        tables[name] = score_arm(
            run_dir, args.out / f"table-{name}", clips=args.clips, teacher_steps=args.teacher_steps
        )
    result = {"steps": args.steps, "clips": args.clips, "shares": mixes, "tables": tables, "summary": summary(tables)}
    write_study(args.out, "mixture_study", result, {arm: f"{arm} {mixes[arm]}" for arm in tables})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
