"""A short scaling study of tiny-teacher recipes: held-out EPE and PSNR against training minutes.

    python -m lab.teacher_study --out /tmp/teacher-study [--recipes 4px-2L-17f,8px-2L-17f] [--parallel 2]
    python -m lab.teacher_study --out /tmp/teacher-study --plot docs/teacher_study
    python -m lab.teacher_study --out RUNS --recipes obj-bilinear,obj-decoded --evals 4 --codec CODEC.pt

Each recipe is the ordinary teacher CLI (``python -m trackstream.train experiment=...``) with a few overrides,
trained for a budget of steps chosen to cost about the same single-thread minutes, on one thread
per process (two recipes share the two cores of a small machine without disturbing each other's
timing much). Every recipe shares the release schedule (``optim.decay_steps``), so a study run is
the first stretch of the long run it would become. The evaluation (held-out clips at the
make-run clip length, EPE by eval.metrics.motion_epe, PSNR/SSIM) runs half-way
(``trainer.sample_every``) and at the end. ``--plot`` reads the runs' ``eval.jsonl`` /
``eval.json`` / ``metrics.jsonl`` and writes ``study.json`` and ``study.png`` (figures against
training minutes, training-step wall time summed from the logged step times, evaluation excluded).
``--set KEY=VALUE`` (repeatable) adds an override to every run's command, after the recipe's own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from trackstream.eval.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]

EVAL_FRAMES = 25  # make run's clip length: 7 latent frames (first frame + two c3 chunks)
DECAY_STEPS = 6000  # the release schedule's cosine horizon, shared by every recipe
COMMON = (
    f"optim.decay_steps={DECAY_STEPS}",
    "trainer.num_threads=1",
    "eval.periodic_clips=8",
    "data.eval_samples=8",
    f"eval.num_frames={EVAL_FRAMES}",
    "logger.progress_bar=false",
    "trainer.log_every=10",
)

# name -> (overrides, steps). Steps give each 4-px recipe ~17-30 single-thread minutes of training
# (per-step times of two 1-thread processes on a 2-core machine: 4-px tokens with 2 layers ~2.1 s
# at 17 frames, ~4.1 s at 25 frames; 4 layers ~2x; 8-px tokens ~0.45 s) and the 8-px baseline ~12.
RECIPES: dict[str, tuple[tuple[str, ...], int]] = {
    "8px-2L-17f": (("experiment=tiny_teacher", "data.num_frames=17"), 1500),
    "4px-2L-17f": (("experiment=tiny_teacher_patch1", "data.num_frames=17"), 750),
    "4px-2L-25f": (("experiment=tiny_teacher_patch1", "data.num_frames=25"), 430),
    "4px-4L-17f": (("experiment=tiny_teacher_patch1", "data.num_frames=17", "+model.overrides.num_layers=4"), 260),
}
# The capacity and loss study on the world with moving objects (experiment=tiny_teacher_objects: the release
# recipe on 25-frame clips, the students' horizon, with a quarter of objects clips; docs/embedded-world.md).
# Each candidate changes one thing against "obj-25f"; "rel-25f" is the release world without objects clips.
# Every run uses its world's codec (--codec: fitted once, 1600 steps) and the curves are compared against
# training minutes. Steps give each ~30 single-thread minutes (2 layers x 128 at 25 frames: ~3.6 s a step
# beside a second run; 4 x 192 about 2.5 times that).
# The study's rows train without the clean context chunks (stage.clean_prefix_prob, added to the experiment
# after the first two rows ran): each candidate differs from "obj-25f" in one thing only.
_OBJ = ("experiment=tiny_teacher_objects", "stage.clean_prefix_prob=0")
_WIDE = ("+model.overrides.num_layers=4", "+model.overrides.dim=192", "+model.overrides.ffn_dim=576")
RECIPES.update(
    {
        "obj-25f": (_OBJ, 500),
        "rel-25f": (("experiment=tiny_teacher_release", "data.num_frames=25"), 500),
        "obj-25f-bilinear": ((*_OBJ, "model.track_splat=bilinear"), 500),
        "obj-25f-decoded": ((*_OBJ, "stage.decoded_loss_weight=10"), 450),
        "obj-25f-4L192": ((*_OBJ, *_WIDE, "model.overrides.num_heads=3"), 200),
    }
)


def command(name: str, out: Path, *, evals: int = 2, codec: Path | None = None, more: Sequence[str] = ()) -> list[str]:
    """The recipe's stage command; ``more``: overrides after its own (``--set``: they win)."""
    overrides, steps = RECIPES[name]
    every = max(1, steps // evals)
    return [
        sys.executable,
        "-m",
        "trackstream.train",
        *overrides,
        *COMMON,
        *([f"codec.checkpoint={codec.resolve()}"] if codec is not None else []),
        f"trainer.max_steps={steps}",
        f"trainer.sample_every={every}",
        f"trainer.ckpt_every={every}",
        f"hydra.run.dir={out / name}",
        *more,
    ]


def run_recipe(name: str, out: Path, *, evals: int = 2, codec: Path | None = None, more: Sequence[str] = ()) -> int:
    done = out / name / "results.json"
    if done.is_file() and json.loads(done.read_text()).get("status") == "done":
        print(f"[study] {name}: done already", flush=True)
        return 0
    (out / name).mkdir(parents=True, exist_ok=True)
    cmd = command(name, out, evals=evals, codec=codec, more=more)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    t0 = time.time()
    with open(out / f"{name}.log", "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    print(f"[study] {name}: exit {rc} after {(time.time() - t0) / 60:.1f} min", flush=True)
    return rc


COST_STEPS = 24  # a cost run's steps; the median of the step times from step 8 on (the first pay warm-up)


def step_cost(name: str, out: Path, *, codec: Path | None = None, more: Sequence[str] = ()) -> float:
    """Seconds per training step of ``name`` on this machine: ``COST_STEPS`` steps, no evaluation, in
    ``out/cost-<name>`` (a fresh directory each time); run two at a time, one thread each, as the study does."""
    run = out / f"cost-{name}"
    shutil.rmtree(run, ignore_errors=True)
    cmd = [a for a in command(name, out, codec=codec) if not a.startswith(("trainer.", "hydra.run.dir="))]
    cmd += [f"trainer.max_steps={COST_STEPS}", "trainer.log_every=1", "trainer.sample_every=0", "eval.enabled=false"]
    cmd += ["logger.progress_bar=false", f"hydra.run.dir={run}", *more]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    times = [(r["step"], r["perf/step_time_s"]) for r in rows if "perf/step_time_s" in r]
    # a run shortened below the warm-up (--set trainer.max_steps=...) is costed on all its steps
    return float(np.median([t for s, t in times if s >= 8] or [t for _, t in times]))


def training_minutes(run: Path) -> dict[int, float]:
    """step -> training minutes: the step times the run logged, each step costed at their median (another
    process that shares the cores for a while inflates a sum of the logged times, not their median)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "perf/step_time_s" in r]
    if not rows:
        return {}
    per_step = float(np.median([r["perf/step_time_s"] for r in rows]))
    return {int(r["step"]): int(r["step"]) * per_step / 60 for r in rows}


def collect(out: Path) -> dict:
    study = {}
    for name in RECIPES:
        run = out / name
        if not (run / "metrics.jsonl").is_file():
            continue
        minutes = training_minutes(run)
        points = []
        rows = (
            [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
            if (run / "eval.jsonl").is_file()
            else []
        )
        if (run / "eval.json").is_file() and (run / "results.json").is_file():
            final = json.loads((run / "eval.json").read_text())
            rows.append({"step": json.loads((run / "results.json").read_text())["step"], **final})
        if any("epe_strict_" in k for r in rows for k in r):
            print(
                f"[study] {name}: figures from before the one EPE protocol (epe_* by the re-acquiring lk "
                "tracker; epe_strict_* ignored)",
                flush=True,
            )
        for row in rows:
            step = int(row["step"])
            near = min(minutes, key=lambda s: abs(s - step)) if minutes else None
            points.append(
                {
                    "step": step,
                    "minutes": minutes.get(near, float("nan")),
                    "num_samples": row.get("num_samples"),
                    **{
                        k: v
                        for k, v in row.items()
                        if k.startswith(("epe_", "psnr_", "ssim_"))
                        and "epe_strict_" not in k
                        and not isinstance(v, (list, dict))
                    },
                }
            )
        threads = None
        if (run / "config.yaml").is_file():
            from omegaconf import OmegaConf

            threads = OmegaConf.load(run / "config.yaml").trainer.get("num_threads")
        study[name] = {
            "overrides": list(RECIPES[name][0]),
            "steps": RECIPES[name][1],
            "threads": threads,
            "points": points,
        }
    return study


def plot(study: dict, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dest.mkdir(parents=True, exist_ok=True)
    (dest / "study.json").write_text(json.dumps({"common": list(COMMON), "recipes": study}, indent=2))
    panels = [
        ("epe_ratio_with_over_without", "EPE with / without tracks"),
        ("epe_with_tracks", "EPE with tracks (px)"),
        ("psnr_with_tracks", "PSNR frames 1.. (dB)"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (key, title) in zip(axes, panels):
        for name, rec in study.items():
            pts = [p for p in rec["points"] if key in p]
            if pts:
                ax.plot([p["minutes"] for p in pts], [p[key] for p in pts], "o-", label=name)
        if key == "epe_with_tracks":
            frozen = [p["epe_frozen_video"] for r in study.values() for p in r["points"] if "epe_frozen_video" in p]
            if frozen:
                ax.axhline(sum(frozen) / len(frozen), color="grey", ls="--", label="frozen first frame")
        if key == "psnr_with_tracks":
            frozen = [p["psnr_frozen_video"] for r in study.values() for p in r["points"] if "psnr_frozen_video" in p]
            if frozen:
                ax.axhline(sum(frozen) / len(frozen), color="grey", ls="--", label="frozen first frame")
        if "ratio" in key:
            ax.axhline(0.3, color="red", ls=":", label="target 0.3")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training wall minutes (threads: see the table)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(dest / "study.png", dpi=110)
    (dest / "study.md").write_text(table(study))
    print(f"[study] wrote {dest / 'study.json'}, {dest / 'study.md'} and {dest / 'study.png'}")


def table(study: dict) -> str:
    """The study's points as a markdown table (what docs/teacher_study.md quotes)."""
    head = [
        "recipe",
        "threads",
        "step",
        "train wall min",
        "held-out clips",
        "EPE with / without",
        "ratio",
        "with / frozen",
        "PSNR (frozen)",
        "SSIM (frozen)",
    ]
    rows = []
    for name, rec in study.items():
        for p in rec["points"]:
            if "epe_with_tracks" not in p:
                continue
            rows.append(
                [
                    name,
                    # str: threads (a run without config.yaml) and num_samples (an eval that did not write it)
                    # may be None, which study.md writes "None", not the blank markdown_table makes of None
                    str(rec.get("threads")),
                    p["step"],
                    f"{p['minutes']:.1f}",
                    str(p.get("num_samples", "")),
                    f"{p['epe_with_tracks']:.2f} / {p['epe_without_tracks']:.2f}",
                    f"{p['epe_ratio_with_over_without']:.2f}",
                    f"{p['epe_with_tracks'] / p['epe_frozen_video']:.2f}",
                    f"{p['psnr_with_tracks']:.2f} ({p['psnr_frozen_video']:.2f})",
                    f"{p['ssim_with_tracks']:.3f} ({p['ssim_frozen_video']:.3f})",
                ]
            )
    lines = markdown_table(head, rows)
    # a study with no evaluated point yet still ends in a blank line after the rule, as study.md always has
    return "\n".join(lines) + "\n" + ("" if rows else "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="directory of the recipe runs")
    ap.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated subset of {list(RECIPES)}")
    ap.add_argument("--parallel", type=int, default=2, help="recipes trained at once (one thread each)")
    ap.add_argument("--evals", type=int, default=2, help="held-out evaluations per run (the curve's points)")
    ap.add_argument("--codec", type=Path, default=None, help="a fitted codec.pt every recipe shares (no fit per run)")
    ap.add_argument("--plot", type=Path, default=None, help="only collect the runs and write study.json/png here")
    ap.add_argument(
        "--cost",
        action="store_true",
        help=f"only measure each recipe's seconds per step here ({COST_STEPS} steps each) into OUT/cost.json: "
        "curves trained on other machines, or beside other jobs, are compared on these costs",
    )
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="an override for every run, after its own"
    )
    args = ap.parse_args(argv)
    # the runs' stages start in the repository (ROOT): a relative --out names a folder here, where the line runs
    args.out = args.out.resolve()
    if args.plot is not None:
        plot(collect(args.out), args.plot)
        return
    names = [n for n in args.recipes.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"--recipes: unknown {unknown}; choose from {list(RECIPES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cost:
        with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
            costs = dict(zip(names, pool.map(lambda n: step_cost(n, args.out, codec=args.codec, more=args.set), names)))
        path = args.out / "cost.json"
        known = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**known, **{n: round(c, 3) for n, c in costs.items()}}, indent=2))
        print(json.dumps(costs, indent=1))
        return
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        codes = list(
            pool.map(lambda n: run_recipe(n, args.out, evals=args.evals, codec=args.codec, more=args.set), names)
        )
    if any(codes):
        raise SystemExit(f"[study] failed recipes: {[n for n, c in zip(names, codes) if c]}")


if __name__ == "__main__":
    main()
