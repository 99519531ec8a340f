"""The three starts of the causal student compared at equal CPU minutes, each then the same DMD.

    python -m lab.causal_starts run   --out RUN [--minutes 15] [--dmd-steps 50] [--threads 1] [--dmd-threads 2]
                                      [--set KEY=VALUE ...]   # an override for every stage, after its own
    python -m lab.causal_starts score --out RUN [--doc docs/causal_starts]

Starts, each given ``--minutes`` of one machine's CPU (costed, not timed: every stage's seconds per step, and the
ODE pairs' seconds per pair, are measured first by a short probe of each, one after another on the same machine, so
the arms compare at equal compute however busy the machine is later):

* ``ode``: ODE pairs from the teacher (``--pairs`` of ``--teacher-steps`` Euler steps, joint guidance; their
  sampling time counts: with the shipped teacher's 4-px tokens, 128 pairs of 48 steps had not finished after 10
  CPU minutes on one thread, more than a start's budget), then ODE init;
* ``tf``: teacher forcing (``experiment=tiny_teacher_forcing``) for the whole budget;
* ``cd``: teacher forcing for half the budget, then causal consistency distillation from it for the other half.

Then ``--dmd-steps`` of ``experiment=tiny_dmd`` (rollouts of two horizons) from each start, on the same
conditions (the first ``data.pool_size`` training clips, no pair folder). ``score`` streams the six students
on make run's held-out clips (``eval.stream_eval.run_evaluation``: the one EPE protocol, the quality columns,
the floors, every student's long streams to ``--long-factor`` (10) x the horizon) and writes the table, JSON and a
plot.
The teacher is the shipped one (``--teacher``: a release folder with ``teacher/``, ``codec.pt``, ``config.yaml``);
every stage reads its world, frame size, shift, codec and network settings from it. Stages resume (their
checkpoints).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from trackstream.eval.tables import markdown_table
from trackstream.pipeline.stage_calls import PipelineError, train_stage

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "assets" / "tiny-teacher"
ARMS = ("ode", "tf", "cd")
STAGE = {"ode": "ode_init", "tf": "teacher_forcing", "cd": "consistency"}  # plan["seconds_per_step"] keys
PROBE_STEPS = 6
PROBE_PAIRS = 16  # the pair sampler's default batch
POOL = 128  # training clips: the teacher-forcing pool and DMD's conditions


def _common(threads: int) -> list[str]:
    """Every stage's own choices; the teacher's network, codec, world, frame size and shift are read from the
    network each stage is given (``stage.teacher``)."""
    return [
        "data.num_frames=25",
        f"trainer.num_threads={threads}",
        "eval.enabled=false",
        "trainer.ckpt_every=50",
        "trainer.log_every=1",
    ]


def _stage(out: Path, name: str, experiment: str, common: list[str], *extra: str, more: Sequence[str] = ()) -> dict:
    return train_stage(out, name, [f"experiment={experiment}", *common, *extra, *more])


def _cost(run: Path) -> float:
    """Seconds per step: the median logged step time after the first two (warm-up) steps."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    times = [r["perf/step_time_s"] for r in rows if "perf/step_time_s" in r and r["step"] > 2]
    return float(statistics.median(times))


def run(
    out: Path,
    *,
    teacher: Path,
    minutes: float,
    dmd_steps: int,
    threads: int,
    pairs: int,
    teacher_steps: int,
    dmd_threads: int | None = None,
    probe_steps: int = PROBE_STEPS,
    more: Sequence[str] = (),
) -> dict:
    """The starts, each after the probes that cost them, then DMD from each (``RUN/plan.json``: the plan);
    ``more``: overrides every stage takes after its own (``--set``)."""
    out.mkdir(parents=True, exist_ok=True)
    stage = partial(_stage, out, more=tuple(more))
    common = _common(threads)
    t = f"stage.teacher={teacher}"
    pool = f"data.pool_size={POOL}"
    plan_file = out / "plan.json"
    if plan_file.is_file():
        plan = json.loads(plan_file.read_text())
    else:  # the costs, measured one after another on this machine, before any arm trains
        made = stage(
            "pairs", "tiny_ode_init", common, t, f"stage.ode_pairs.num_pairs={pairs}",
            f"stage.ode_pairs.teacher_steps={teacher_steps}", "trainer.max_steps=1",
        )  # fmt: skip
        # the pairs' cost is probed beside the others (one sampling batch, no more pairs than the study samples),
        # not read off the run that made them: that one may have shared the machine with other work
        batch = min(PROBE_PAIRS, pairs)
        sampled = stage(
            "probe_pairs", "tiny_ode_init", common, t, f"stage.ode_pairs.num_pairs={batch}",
            f"stage.ode_pairs.batch_size={batch}", f"stage.ode_pairs.teacher_steps={teacher_steps}",
            "trainer.max_steps=1",
        )  # fmt: skip
        pairs_seconds = sampled["pairs_seconds"] / sampled["num_pairs"] * made["num_pairs"]
        probes = {
            "ode_init": stage("probe_ode", "tiny_ode_init", common, t, f"stage.pairs={made['pairs']}",
                              f"trainer.max_steps={probe_steps}"),
            "teacher_forcing": stage("probe_tf", "tiny_teacher_forcing", common, t, pool,
                                     f"trainer.max_steps={probe_steps}"),
        }  # fmt: skip
        probes["consistency"] = stage(
            "probe_cd", "tiny_consistency", common, f"stage.teacher={probes['teacher_forcing']['export']}",
            pool, f"trainer.max_steps={probe_steps}",
        )  # fmt: skip
        cost = {k: _cost(out / f"probe_{a}") for k, a in zip(probes, ("ode", "tf", "cd"))}
        budget = 60.0 * minutes
        plan = {
            "minutes": minutes,
            "seconds_per_step": {k: round(v, 3) for k, v in cost.items()},
            "pairs_seconds": round(pairs_seconds, 1),
            "num_pairs": made["num_pairs"],
            "teacher_steps": teacher_steps,
            "pairs": made["pairs"],
            "steps": {
                "ode": max(1, round((budget - pairs_seconds) / cost["ode_init"])),
                "tf": max(1, round(budget / cost["teacher_forcing"])),
                "cd_tf": max(1, round(budget / 2 / cost["teacher_forcing"])),
                "cd": max(1, round(budget / 2 / cost["consistency"])),
            },
            "dmd_steps": dmd_steps,
            "threads": threads,
        }
        plan_file.write_text(json.dumps(plan, indent=2))
    steps = plan["steps"]
    starts = {
        "ode": stage("ode", "tiny_ode_init", common, t, f"stage.pairs={plan['pairs']}",
                     f"trainer.max_steps={steps['ode']}")["export"],
        "tf": stage("tf", "tiny_teacher_forcing", common, t, pool, f"trainer.max_steps={steps['tf']}")["export"],
    }  # fmt: skip
    half = stage("cd_tf", "tiny_teacher_forcing", common, t, pool, f"trainer.max_steps={steps['cd_tf']}")
    starts["cd"] = stage("cd", "tiny_consistency", common, f"stage.teacher={half['export']}", pool,
                         f"trainer.max_steps={steps['cd']}")["export"]  # fmt: skip
    # the same DMD after each start; it is not part of the equal budget, so it may take more threads
    plan |= {"dmd_steps": dmd_steps, "dmd_threads": dmd_threads or threads}
    plan_file.write_text(json.dumps(plan, indent=2))
    dmd_common = _common(plan["dmd_threads"])
    for arm in ARMS:
        stage(f"{arm}_dmd", "tiny_dmd", dmd_common, t, f"stage.student={starts[arm]}", pool,
              f"trainer.max_steps={dmd_steps}")  # fmt: skip
    return plan


def _row(figures: dict, name: str) -> dict:
    g = lambda k: figures.get(f"{name}_{k}")  # noqa: E731
    with_, without = g("epe_with_tracks"), g("epe_without_tracks")
    return {
        "epe_with_tracks": with_,
        "epe_ratio": None if not without else with_ / without,
        "no_hold_ratio": g("no_hold_ratio_with_tracks"),
        "lost_share": g("lost_share_with_tracks"),
        "late_brightness_gap": g("late_brightness_gap_with_tracks"),
        "late_texture_ratio": g("late_texture_ratio_with_tracks"),
        "brightness_gap_per_chunk": (g("brightness_gap_per_chunk") or {}).get("with_tracks"),
        "psnr_with_tracks": g("psnr_with_tracks"),
        **_long(figures.get("long_horizon", {}).get(name) or {}),
    }


def _long(runs: dict) -> dict:
    """Drift at the longest window (``--long-factor`` x the horizon) of the sink run: its PSNR below the first
    window's, and its latent energy against the ground truth's."""
    run = next((v for k, v in runs.items() if k.endswith("_with_sink")), None)
    if not run:
        return {"long_psnr_drop": None, "long_energy": None}
    windows = run["windows"]
    first, last = windows["1x"], windows[max(windows, key=lambda w: int(w.removesuffix("x")))]
    return {"long_psnr_drop": first["psnr"] - last["psnr"], "long_energy": last["energy"]}


def score(
    out: Path, doc: Path, *, teacher: Path, clips: int, long_clips: int, long_factor: int = 10, teacher_steps: int = 48
) -> dict:
    from omegaconf import OmegaConf

    from trackstream.data.clips import DataConfig
    from trackstream.eval.stream_eval import run_evaluation
    from trackstream.eval.stream_scoring import StreamEvalConfig

    plan = json.loads((out / "plan.json").read_text())
    cfg = OmegaConf.to_container(OmegaConf.load(out / "ode_dmd" / "config.yaml"), resolve=True)
    students = {arm: out / arm / "export" / "student" for arm in ARMS}
    students |= {f"{arm}_dmd": out / f"{arm}_dmd" / "export" / "student" for arm in ARMS}
    figures = run_evaluation(
        out / "score",
        teacher=str(teacher / "teacher"),
        students={k: str(v) for k, v in students.items()},
        data=DataConfig(**{**cfg["data"], "eval_samples": clips}),
        teacher_steps=teacher_steps,
        # the study reports no chunk latency: one timing round (of the evaluation's 25) is enough
        cfg=StreamEvalConfig(
            long_factor=long_factor, long_clips=long_clips, long_students="all", num_tracks=128, timing_repeats=1
        ),
    )
    result = {
        "plan": plan,
        "clips": clips,
        "long_factor": long_factor,
        "teacher_epe_ratio": figures["teacher_epe_with_tracks"] / figures["teacher_epe_without_tracks"],
        "floors": figures.get("floors"),
        "students": {name: _row(figures, name) for name in students},
    }
    doc.mkdir(parents=True, exist_ok=True)
    (doc / "causal_starts.json").write_text(json.dumps(result, indent=1, default=float))
    (doc / "causal_starts.md").write_text(_table(result))
    _plot(result, doc / "causal_starts.png")
    return result


def _fmt(v, spec: str = ".3f") -> str:
    return "" if v is None else format(v, spec)


def _table(result: dict) -> str:
    plan, k = result["plan"], result.get("long_factor", 10)  # results written before --long-factor: 10
    lines = [
        f"Each start {plan['minutes']} CPU minutes ({plan['threads']} thread), then {plan['dmd_steps']} DMD steps "
        f"({plan.get('dmd_threads', plan['threads'])} threads); "
        f"{result['clips']} held-out clips; teacher EPE ratio {result['teacher_epe_ratio']:.3f}.",
        "",
    ]
    head = [
        "student",
        "steps",
        "s / step",
        "EPE (px)",
        "EPE with / without",
        "no-hold / frozen",
        "lost",
        "late brightness gap",
        "late texture",
        f"{k}x: PSNR drop",
        f"{k}x: energy",
    ]
    rows = []
    f = result.get("floors") or {}
    # a floor has no steps, cost, ratio over itself nor long rollout: None, the blank that does not apply
    for label, key in (("ground truth", "ground_truth"), ("codec round trip", "codec_round_trip"),
                       ("frozen first frame", "frozen_frame")):  # fmt: skip
        rows.append(
            [
                f"*{label}*",
                None,
                None,
                _fmt(f.get(f"epe_{key}"), ".2f"),
                None,
                _fmt(f.get(f"no_hold_ratio_{key}")),
                _fmt(f.get(f"lost_share_{key}"), ".1%"),
                _fmt(f.get(f"late_brightness_gap_{key}"), "+.1f"),
                _fmt(f.get(f"late_texture_ratio_{key}"), ".2f"),
                None,
                None,
            ]
        )
    cost = plan["seconds_per_step"]
    for name, r in result["students"].items():
        arm = name.removesuffix("_dmd")
        steps = plan["dmd_steps"] if name.endswith("_dmd") else plan["steps"][arm]
        per_step = "" if name.endswith("_dmd") else _fmt(cost[STAGE[arm]], ".1f")
        if arm == "cd" and not name.endswith("_dmd"):
            steps = f"{plan['steps']['cd_tf']} TF + {steps}"
        elif arm == "ode" and not name.endswith("_dmd"):
            steps = f"{plan['num_pairs']} pairs ({plan['pairs_seconds'] / 60:.0f} min) + {steps}"
        rows.append(
            [
                name,
                steps,
                per_step,
                _fmt(r["epe_with_tracks"], ".2f"),
                _fmt(r["epe_ratio"]),
                _fmt(r["no_hold_ratio"]),
                _fmt(r["lost_share"], ".1%"),
                _fmt(r["late_brightness_gap"], "+.1f"),
                _fmt(r["late_texture_ratio"], ".2f"),
                _fmt(r["long_psnr_drop"], ".2f"),
                _fmt(r["long_energy"], ".2f"),
            ]
        )
    lines += markdown_table(head, rows, align="l" + "r" * (len(head) - 1))
    return "\n".join(lines) + "\n"


def _plot(result: dict, path: Path) -> None:
    """Each student's EPE ratio, no-hold ratio, late texture and 10x PSNR drop, the starts beside their DMD
    students."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["students"])
    panels = (("epe_ratio", "EPE with / without tracks"), ("no_hold_ratio", "no-hold EPE / frozen frame"),
              ("late_texture_ratio", "late texture / ground truth's (target 0.75-1.33)"),
              ("long_psnr_drop", f"PSNR drop at {result.get('long_factor', 10)}x the horizon (dB)"))  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (key, title) in zip(axes, panels):
        values = [result["students"][n][key] or 0.0 for n in names]
        ax.bar(range(len(names)), values, color=["#999" if not n.endswith("_dmd") else "#36c" for n in names])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_title(title, fontsize=9)
        if key == "late_texture_ratio":
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.causal_starts", description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["run", "score"])
    ap.add_argument("--out", type=Path, required=True, help="the study's run directory (outside the repository)")
    ap.add_argument("--teacher", type=Path, default=TEACHER, help="a teacher release folder")
    ap.add_argument("--minutes", type=float, default=15.0, help="CPU minutes per start")
    ap.add_argument("--dmd-steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the starts (their probes and runs)")
    ap.add_argument("--dmd-threads", type=int, default=None, help="torch threads of the DMD runs (default --threads)")
    ap.add_argument(
        "--pairs", type=int, default=64, help="ODE pairs (their sampling counts in the ODE start's minutes)"
    )
    ap.add_argument("--teacher-steps", type=int, default=24, help="the teacher's Euler steps per ODE pair")
    ap.add_argument(
        "--probe-steps", type=int, default=PROBE_STEPS, help="steps of each stage's cost probe (costed after two)"
    )
    ap.add_argument("--clips", type=int, default=16, help="held-out clips scored")
    ap.add_argument("--long-clips", type=int, default=4, help="clips streamed to --long-factor x the horizon")
    ap.add_argument("--long-factor", type=int, default=10, help="score: the long streams' length over the horizon")
    ap.add_argument("--eval-teacher-steps", type=int, default=48, help="score: the teacher's Euler steps")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "causal_starts")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run: an override for every stage, after its own",
    )
    args = ap.parse_args(argv)
    if args.probe_steps < 3:  # a probe's cost is the median of its steps after the first two
        ap.error(f"--probe-steps {args.probe_steps}: at least 3")
    try:
        if args.action == "run":
            plan = run(args.out, teacher=args.teacher, minutes=args.minutes, dmd_steps=args.dmd_steps,
                       threads=args.threads, pairs=args.pairs, teacher_steps=args.teacher_steps,
                       dmd_threads=args.dmd_threads, probe_steps=args.probe_steps, more=args.set)  # fmt: skip
            print(json.dumps(plan, indent=2))
        else:
            scored = score(args.out, args.doc, teacher=args.teacher, clips=args.clips, long_clips=args.long_clips,
                           long_factor=args.long_factor, teacher_steps=args.eval_teacher_steps)  # fmt: skip
            print(_table(scored))
    except (PipelineError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
