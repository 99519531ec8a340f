"""Held-out figures of DMD generator snapshots against generator updates: where DMD helps.

    python -m lab.dmd_curve --run-dir RUN --out docs/dmd_curve
    python -m lab.dmd_curve --run-dir RUN --out docs/dmd_curve \\
        --compare self_rollout=SR_RUN

Each snapshot (``gen_XXXXX.pt`` of ``stage.snapshot_every``: the EMA weights the stage's export would
ship after that many generator updates; ``gen_00000`` is the ODE-init student DMD starts from) is
turned into a network folder with the run's streaming conventions and evaluated exactly as
``make run``'s stream stage evaluates its students (``eval.stream_eval``):
* at the training horizon: the held-out clips of the run's world (``--clips``, 16 by default, the
  teacher's ``eval.num_tracks`` input tracks), EPE with and without tracks by the one protocol
  (``eval.metrics.motion_epe``), PSNR and SSIM against the ground truth;
* at ``--long-factor`` x the horizon (10): ``--long-clips`` long clips streamed with the input
  tracks and the attention sink: the whole rollout's EPE, PSNR and SSIM, and drift = the last
  chunks' latent error relative to an unrelated video's (make run's drift figure, ``drift_summary``).
``--compare NAME=RUN_DIR`` evaluates another run's snapshots at the update counts it has (e.g. the
Self-Rollout run against the Self-Forcing one at equal generator updates); ``--network NAME=FOLDER``
scores any exported student the same way (e.g. the RL stage's export against its DMD start), listed
apart from the curves. Writes ``curve.json``,
``curve.png`` (one panel per figure against generator updates) and ``curve.md`` (the table) to
``--out``; snapshots already in ``curve.json`` are not evaluated again.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from lab.student_score import SCORE_FIGURES, StudentScorer
from trackstream.eval.tables import markdown_table
from trackstream.pipeline.report import read_metrics
from trackstream.train.snapshots import SNAPSHOT_DIR, list_snapshots, snapshot_to_network

ROOT = Path(__file__).resolve().parents[1]
FIGURES = SCORE_FIGURES


def rl_training_summary(network_dir: Path) -> dict | None:
    """For an RL stage's export (``<run>/export/student``): the run's logged reward spreads averaged over
    its logged steps (within a group of one condition's rollouts, and over all rollouts of a round) and
    its KL to the start at the first and last logged step; None for other exports."""
    metrics = Path(network_dir).parents[1] / "metrics.jsonl"
    if not metrics.is_file():
        return None
    rows = read_metrics(metrics)
    rows = [r for r in rows if "train/rl/reward_group_std" in r]
    if not rows:
        return None
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    return {
        "logged_steps": len(rows),
        "reward_group_std_mean": mean("train/rl/reward_group_std"),
        "reward_std_mean": mean("train/rl/reward_std"),
        "kl_first": rows[0]["train/rl/kl"],
        "kl_last": rows[-1]["train/rl/kl"],
    }


def plot_rl_training(network_dir: Path, out_png: Path, title: str) -> Path | None:
    """An RL stage's logged curves against policy updates (its metrics.jsonl): reward mean, the reward's
    spread within a group and over a round, the rollouts' re-tracked motion error and the KL to the start;
    None for other exports. Where the held-out figures say RL did not help, this shows where it stopped."""
    metrics = Path(network_dir).parents[1] / "metrics.jsonl"
    if not metrics.is_file():
        return None
    rows = read_metrics(metrics)
    rows = [r for r in rows if "train/rl/reward" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    panels = (
        ("reward (mean of a round)", [("train/rl/reward", "mean")]),
        (
            "reward spread",
            [("train/rl/reward_group_std", "within a group"), ("train/rl/reward_std", "over a round")],
        ),
        ("rollouts' motion error (px, re-tracked)", [("train/rl/motion_epe_px", "EPE")]),
        ("KL to the start", [("train/rl/kl", "KL")]),
    )
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (label, series) in zip(axes, panels):
        for key, name in series:
            if key in rows[0]:
                ys = [r.get(key, float("nan")) for r in rows]
                line = ax.plot(steps, ys, ".-", label=name, lw=1, alpha=0.35)[0]
                # each logged value is one round's (2 conditions): the trend is the running mean of 10
                run = [sum(ys[max(0, i - 9) : i + 1]) / len(ys[max(0, i - 9) : i + 1]) for i in range(len(ys))]
                ax.plot(steps, run, "-", color=line.get_color(), lw=2)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("policy updates")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png


def evaluate_run(name: str, run_dir: Path, evaluator: StudentScorer, done: dict, *, updates: list[int] | None) -> dict:
    """{updates: figures} for the run's snapshots (those in ``done`` reused)."""
    snaps = list_snapshots(run_dir / "dmd" / SNAPSHOT_DIR)
    if not snaps:
        raise ValueError(f"{run_dir}/dmd/{SNAPSHOT_DIR}: no snapshots (run the DMD stage with stage.snapshot_every=N)")
    like = run_dir / "ode_init" / "export" / "student"
    rows = {int(k): v for k, v in done.items()}
    for n, path in sorted(snaps.items()):
        if (updates and n not in updates) or n in rows:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            folder = snapshot_to_network(path, Path(tmp) / "net", like=like)
            rows[n] = evaluator(folder)
        print(f"[dmd_curve] {name} {n:4d} updates: " + json.dumps(rows[n]), flush=True)
    return rows


def write_outputs(out: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps(result, indent=1))
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for ax, (key, label) in zip(axes.flat, FIGURES):
        for name, rows in result["runs"].items():
            xs = sorted(int(n) for n in rows)
            ax.plot(xs, [rows[str(x)][key] for x in xs], "o-", label=name)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("generator updates")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    p = result["protocol"]
    fig.suptitle(
        f"DMD snapshots (EMA): {p['clips']} held-out clips at {p['num_frames']} frames, "
        f"{p['long_clips']} long clips at {p['long_frames']} frames ({p['long_factor']}x)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=90)
    plt.close(fig)
    cells = []
    for name, rows in result["runs"].items():
        for n in sorted(int(k) for k in rows):
            r = rows[str(n)]
            cells.append([name, n, *(f"{r[k]:.3f}" for k, _ in FIGURES)])
    # a finished network has no update count: a blank that does not apply
    for name, r in result.get("networks", {}).items():
        cells.append([f"{name} (`{r['folder']}`)", None, *(f"{r[k]:.3f}" for k, _ in FIGURES)])
    lines = markdown_table(["run", "updates", *(label for _, label in FIGURES)], cells)
    (out / "curve.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, required=True, help="a long_dmd run directory (teacher/, ode_init/, dmd/)")
    ap.add_argument("--name", default="self_forcing", help="the run's label in the table and the plot")
    ap.add_argument("--compare", action="append", default=[], help="NAME=RUN_DIR: another run's snapshots")
    ap.add_argument("--network", action="append", default=[], help="NAME=FOLDER: an exported student to score too")
    ap.add_argument("--out", type=Path, required=True, help="folder for curve.json / curve.png / curve.md")
    ap.add_argument("--updates", default=None, help="comma-separated update counts to evaluate (default: all)")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--long-clips", type=int, default=4)
    ap.add_argument("--long-factor", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args(argv)
    runs = {args.name: args.run_dir}
    for item in args.compare:
        if "=" not in item:
            ap.error(f"--compare {item!r}: give NAME=RUN_DIR")
        name, path = item.split("=", 1)
        runs[name] = Path(path)
    for name, path in runs.items():
        if not (path / "dmd" / "config.yaml").is_file():
            ap.error(f"{name}: {path}/dmd/config.yaml not found: give a long_dmd run directory")
    updates = [int(x) for x in args.updates.split(",")] if args.updates else None
    evaluator = StudentScorer(
        args.run_dir,
        clips=args.clips,
        long_clips=args.long_clips,
        long_factor=args.long_factor,
        device=args.device,
        dtype=args.dtype,
    )
    old = json.loads((args.out / "curve.json").read_text()) if (args.out / "curve.json").is_file() else {}
    if old and old.get("protocol") != evaluator.protocol:
        old = {}  # another protocol: evaluate everything again
    result = {
        "protocol": evaluator.protocol,
        "command": "python -m lab.dmd_curve",
        "runs": {},
        "networks": dict(old.get("networks", {})),
    }
    for item in args.network:
        if "=" not in item or not (Path(item.split("=", 1)[1]) / "network.json").is_file():
            ap.error(f"--network {item!r}: give NAME=FOLDER of an exported student (with network.json)")
        name, folder = item.split("=", 1)
        result["networks"][name] = {"folder": folder, **evaluator(Path(folder))}
        training = rl_training_summary(Path(folder))
        if training:
            result["networks"][name]["rl_training"] = training
            plot = plot_rl_training(Path(folder), args.out / f"rl_{name}.png", f"RL stage: {name}")
            result["networks"][name]["rl_training_plot"] = plot.name
        print(f"[dmd_curve] {name}: " + json.dumps(result["networks"][name]), flush=True)
    for name, path in runs.items():
        rows = evaluate_run(name, path, evaluator, old.get("runs", {}).get(name, {}), updates=updates)
        result["runs"][name] = {str(n): r for n, r in sorted(rows.items())}
        write_outputs(args.out, result)  # after each run: an interrupted study keeps what it measured
    print(f"[dmd_curve] {args.out / 'curve.md'}:\n" + (args.out / "curve.md").read_text(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
