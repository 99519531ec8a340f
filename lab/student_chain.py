"""The shipped student's whole recipe: ODE init -> Self-Forcing DMD -> AR-Drag's RL.

    python -m lab.long_dmd run --run-dir RUN --updates 200 --snapshot-every 25  # teacher, ODE init, DMD (hours)
    python -m lab.student_chain rl --run-dir RUN               # RL from the DMD export
    python -m lab.student_chain ship --run-dir RUN             # -> assets/tiny-student/

``rl`` runs ``experiment=rl_tiny`` through the real CLI in ``RUN/rl`` on the DMD export, its conditions from
the run's ODE pairs and the teacher's world settings (exactly as make run's RL stage does), with the
settings of ``CHAIN_RL`` (the second RL pilot's: docs/distillation-study.md); ``--set KEY=VALUE`` adds
overrides. It resumes from its checkpoints like every stage.
``ship`` scores the RL student, its DMD start and the ODE-init student with make run's evaluation
(``eval.stream_eval.run_evaluation``: the floors, the teacher, 16 held-out clips of the run's world by the one
EPE protocol, PSNR, SSIM; then every student's long streams per window of the horizon, on the panning and the
knowable world, with and without the sink), in ``RUN/score/`` (report.md, videos,
the long-horizon strip), and writes ``assets/tiny-student/``: ``student/`` (the RL export), ``dmd/`` (the DMD
export it started from), ``config.yaml``
(the DMD stage's resolved config: the world the demo's scenes come from), ``rl_config.yaml`` and
``manifest.json`` (commands, commit, steps, compute time per stage, seeds, the floors, every model's figures,
the long-horizon windows, the project's targets judged on them (``lab.targets``), sha256 of each file). The shipped student is the recipe's product
whether or not a stage helped; the manifest says which figures each stage moved and how far.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lab.ship_student import fill_release, write_manifest
from lab.ship_teacher import ROOT, git_commit
from lab.targets import targets
from trackstream.models.formats.files import sha256
from trackstream.pipeline.releases import ASSET_DIR, STUDENT_DIR, AssetError
from trackstream.pipeline.report import json_safe, read_metrics
from trackstream.pipeline.run import DISTILL
from trackstream.pipeline.stage_calls import PipelineError, train_stage

__all__ = ["CHAIN_RL", "rl_stage", "score_chain", "ship_chain", "add_scoring_args", "scoring_options", "main"]

# The second RL pilot's settings (the first: rl_tiny's defaults for 200 steps from 300 updates, every
# figure worse): a larger group, full-strength SDE noise on the one stochastic step, the motion reward
# alone and a lower rate, for 120 policy updates. The reward reaches 0 at 32 px RMS: the student's rollouts
# of two horizons re-track at ~20 px RMS, so rl_tiny's 16 px zeroes nearly every group (no advantage).
CHAIN_RL = (
    "stage.group_size=8",
    "stage.rewards.motion.alpha=1024.0",
    "stage.rewards.motion.scale=0.0009765625",
    "stage.noise_level=1.0",
    "stage.rewards.appearance.weight=0.0",
    "stage.optim.lr=3e-5",
    "trainer.max_steps=120",
    "trainer.ckpt_every=40",
)
COMMANDS = (
    "python -m lab.long_dmd run --run-dir <run> --updates 200 --snapshot-every 25",
    "python -m lab.student_chain rl --run-dir <run>",
    "python -m lab.student_chain ship --run-dir <run>",
)


def _need(path: Path, what: str, fix: str) -> Path:
    if not path.exists():
        raise PipelineError(f"{path}: no {what}; {fix}")
    return path


def rl_stage(run_dir: Path, extra: list[str] = ()) -> dict:
    """AR-Drag's RL stage on the run's DMD export (``RUN/rl``); resumes, and is reused once done."""
    run_dir = Path(run_dir).resolve()
    dmd = json.loads(
        _need(run_dir / "dmd" / "results.json", "finished DMD stage", "run `long_dmd run --run-dir` first").read_text()
    )
    if dmd.get("status") != "done":
        raise PipelineError(f"{run_dir / 'dmd'}: DMD stopped at step {dmd.get('step')}; finish `long_dmd run` first")
    t0 = time.perf_counter()
    summary = train_stage(
        run_dir,
        "rl",
        [
            "experiment=rl_tiny",
            *DISTILL,
            f"stage.student={run_dir / 'dmd' / 'export' / 'student'}",
            f"stage.pairs={run_dir / 'ode_init' / 'ode_pairs'}",
            *CHAIN_RL,
            *extra,
        ],
    )
    wall = _stage_seconds(run_dir / "rl" / "metrics.jsonl")
    print(f"[student_chain] RL done in {time.perf_counter() - t0:.0f} s: {summary['export']}", flush=True)
    return {k: summary.get(k) for k in ("export", "policy_updates", "reward_seconds", "step")} | {"seconds": wall}


def _stage_seconds(metrics: Path) -> float | None:
    """A stage's compute time from its log: each logged interval's mean step time x its steps (a run
    continued across several processes or machines has no single wall-clock time)."""
    if not metrics.is_file():
        return None
    total, last = 0.0, 0
    for row in read_metrics(metrics):
        if "perf/step_time_s" in row and row["step"] > last:
            total += row["perf/step_time_s"] * (row["step"] - last)
            last = row["step"]
    return round(total, 1)


def _stage_overrides(stage_dir: Path) -> list[str]:
    """The stage's own settings as it ran (its Hydra overrides of ``stage.*`` and ``trainer.*``)."""
    from omegaconf import OmegaConf

    path = stage_dir / ".hydra" / "overrides.yaml"
    lines = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else []
    return [x for x in lines if x.split("=")[0].lstrip("+").startswith(("stage.", "trainer.", "experiment"))]


# the held-out figures a manifest carries per model (report.json keys, prefix left out)
HELD_OUT = ("epe_with_tracks", "epe_without_tracks", "psnr_with_tracks", "ssim_with_tracks")


def score_chain(
    run_dir: Path,
    exports: dict[str, Path],
    *,
    clips: int = 16,
    long_clips: int = 8,
    long_factor: int = 10,
    teacher_steps: int = 48,
    device: str = "auto",
    dtype: str = "auto",
) -> dict:
    """make run's evaluation (``eval.stream_eval.run_evaluation``: floors, teacher, the students side by side,
    every student's long streams per window) of the chain's ODE-init, DMD and RL exports, on the run's teacher,
    codec and world; writes ``RUN/score/`` (report.md, report.json, videos, plots)."""
    from omegaconf import OmegaConf

    from trackstream.data.clips import DataConfig
    from trackstream.eval.stream_eval import run_evaluation
    from trackstream.eval.stream_scoring import StreamEvalConfig
    from trackstream.pipeline.report import write_report

    cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "dmd" / "config.yaml"), resolve=True)
    teacher_cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "teacher" / "config.yaml"), resolve=True)
    ev = StreamEvalConfig(
        long_factor=long_factor,
        long_clips=long_clips,
        timing_repeats=5,
        num_tracks=teacher_cfg["eval"]["num_tracks"],
        long_students="all",
    )
    score_dir = run_dir / "score"
    score_dir.mkdir(exist_ok=True)
    figures = run_evaluation(
        score_dir,
        teacher=str(run_dir / "teacher" / "export" / "teacher"),
        students={"ode_init": str(exports["ode_init"]), "dmd": str(exports["dmd"]), "student": str(exports["rl"])},
        data=DataConfig(**{**cfg["data"], "eval_samples": clips}),
        teacher_steps=teacher_steps,
        cfg=ev,
        device=device,
        dtype=dtype,
        student_stage="rl",
    )
    figures["protocol"] = {
        "clips": clips,
        "long_clips": long_clips,
        "long_factor": long_factor,
        "num_frames": figures["num_frames"],
        "long_frames": figures["long_rollout_frames"],
        "teacher_steps": teacher_steps,
        "input_tracks_per_clip": ev.num_tracks,
        "tracker": ev.tracker,
        "device": device,
        "dtype": dtype,
    }
    return write_report(score_dir, figures)


def _windows(streams: dict) -> dict:
    """A student's long-horizon figures without the per-clip and per-chunk detail (report.json keeps those)."""
    return {k: {"windows": r["windows"], "num_clips": r["num_clips"]} for k, r in streams.items()}


def ship_chain(run_dir: Path, dest: Path = STUDENT_DIR, **scoring) -> dict:
    """Score the chain's three students (``scoring``: ``score_chain``'s options) and ship the RL one to ``dest``
    (see the module docstring)."""
    from omegaconf import OmegaConf

    run_dir = Path(run_dir).resolve()
    exports = {
        "ode_init": run_dir / "ode_init" / "export" / "student",
        "dmd": run_dir / "dmd" / "export" / "student",
        "rl": run_dir / "rl" / "export" / "student",
    }
    for stage, path in exports.items():
        _need(path / "network.json", f"{stage} export", f"run the chain's commands first: {'; '.join(COMMANDS)}")
    results = {s: json.loads((run_dir / s / "results.json").read_text()) for s in ("teacher", "ode_init", "dmd", "rl")}
    report = score_chain(run_dir, exports, **scoring)
    recorded = run_dir / "teacher_asset.txt"  # the release the chain started from (lab.long_dmd --teacher-asset)
    teacher = recorded.read_text().strip() if recorded.is_file() else str(ASSET_DIR.relative_to(ROOT))

    # the DMD export beside the RL one: the intermediate checkpoint a short run can continue distilling from
    copies = {"student": exports["rl"], "dmd": exports["dmd"], "config.yaml": run_dir / "dmd" / "config.yaml"}
    fill_release(dest, copies | {"rl_config.yaml": run_dir / "rl" / "config.yaml"})
    cfg = OmegaConf.load(run_dir / "dmd" / "config.yaml")
    rl_cfg = OmegaConf.load(run_dir / "rl" / "config.yaml")
    models = {"teacher": "teacher", "ode_init": "ode_init", "dmd": "dmd", "rl": "student"}
    manifest = {
        "name": Path(dest).name,
        "recipe": "ODE init -> Self-Forcing DMD (rolled past the teacher's horizon) -> AR-Drag RL (GRPO)",
        "command": "; ".join(COMMANDS),
        "git_commit": git_commit(),
        "teacher_release": {"dir": teacher, "manifest_sha256": sha256(ROOT / teacher / "manifest.json")},
        "codec": {"path": f"{teacher}/codec.pt", "sha256": sha256(ROOT / teacher / "codec.pt")},
        "steps": {s: r.get("step") for s, r in results.items()},
        "generator_updates": results["dmd"].get("generator_updates"),
        "policy_updates": results["rl"].get("policy_updates"),
        "rl_overrides": _stage_overrides(run_dir / "rl"),
        "compute_s": {s: _stage_seconds(run_dir / s / "metrics.jsonl") for s in ("teacher", "ode_init", "dmd", "rl")},
        "seeds": {
            "data.seed": cfg.data.seed,
            "data.eval_seed": cfg.data.eval_seed,
            "trainer.seed (dmd)": cfg.trainer.seed,
            "trainer.seed (rl)": rl_cfg.trainer.seed,
        },
        "protocol": report["protocol"],
        "floors": report["floors"],
        "epe_frozen_video": report["epe_frozen_video"],
        "held_out": {stage: {k: report.get(f"{prefix}_{k}") for k in HELD_OUT} for stage, prefix in models.items()}
        | {"num_heldout": report["num_heldout"], "num_frames": report["num_frames"]},
        "long_horizon": {
            stage: _windows(report["long_horizon"][prefix])
            for stage, prefix in models.items()
            if prefix in report["long_horizon"]
        },
        "targets": {
            k: {"value": v["value"], "threshold": v["threshold"], "met": v["met"]}
            for k, v in targets(report).items()
            if v["role"] == "target" and k != "total_time"
        },
        "report": "RUN/score/report.md (videos, plots, the long-horizon strip)",
    }
    return write_manifest(dest, json_safe(manifest))


def add_scoring_args(ap: argparse.ArgumentParser, *, long_clips: int = 8) -> None:
    """The options of scoring students when shipping them (``scoring_options``)."""
    ap.add_argument("--clips", type=int, default=16, help="ship: held-out clips at the training horizon")
    ap.add_argument(
        "--long-clips", type=int, default=long_clips, help="ship: clips per long-stream world (>= 8: proxy FVD)"
    )
    ap.add_argument("--long-factor", type=int, default=10)
    ap.add_argument("--device", default="auto", help="ship: where the students are scored (auto: CUDA if present)")
    ap.add_argument("--dtype", default="auto", help="ship: auto (bf16 on CUDA, fp32 on CPU), bfloat16 or float32")


def scoring_options(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in ("clips", "long_clips", "long_factor", "device", "dtype")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lab.student_chain",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(COMMANDS),
    )
    ap.add_argument("command", choices=("rl", "ship"))
    ap.add_argument("--run-dir", type=Path, required=True, help="a long_dmd run directory (teacher/, ode_init/, dmd/)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="rl: an extra Hydra override")
    ap.add_argument("--dest", type=Path, default=STUDENT_DIR, help="ship: the release folder")
    add_scoring_args(ap)
    ap.add_argument("--teacher-steps", type=int, default=48, help="ship: the teacher's Euler steps in its evaluation")
    args = ap.parse_args(argv)
    try:
        if args.command == "rl":
            print(json.dumps(rl_stage(args.run_dir, args.set), indent=2))
        else:
            m = ship_chain(args.run_dir, args.dest, teacher_steps=args.teacher_steps, **scoring_options(args))
            print(f"[student_chain] {args.dest}: {len(m['sha256'])} files, {m['bytes'] / 2**20:.1f} MiB")
            for stage, f in m["held_out"].items():
                if isinstance(f, dict):
                    print(
                        f"[student_chain]   {stage:9s} "
                        + " ".join(f"{k}={v:.3f}" for k, v in f.items() if v is not None)
                    )
            for k, t in m["targets"].items():
                print(
                    f"[student_chain]   target {k}: {t['value']} vs {t['threshold']}: {'met' if t['met'] else 'NOT met'}"
                )
    except (PipelineError, AssetError) as e:
        print(f"[student_chain] error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
