"""`make run`: the end-to-end job on the embedded default (synthetic world, tiny models).

shipped teacher (assets/tiny-teacher, sha256-checked) -> a short fine-tune with mid-frame masking
-> ODE pairs -> ODE init -> Self-Forcing DMD -> (AR-Drag's RL stage, in the presets that have one:
``long``, ``smoke``) -> streaming generation of held-out first frames + tracks -> report. MotionStream
starts from pretrained Wan weights; the embedded job starts from a teacher trained once for hours of
CPU (``python -m lab.ship_teacher``, a lab tool), and ``--sizes scratch`` trains that teacher from
nothing first (its release recipe, hours). Each training stage is the ordinary Hydra app
(``python -m trackstream.train experiment=...``) in its own sub-directory of the run directory, so
every stage resumes exactly from its checkpoints when ``make run`` is re-run, and a finished stage
(``results.json`` with status done) is not run again, nor is the evaluation of the same models, preset and
code (``stream/figures.json``). The console shows one progress bar per
stage; full commands go to ``<run_dir>/pipeline.log`` and each stage's output to its
``console.log``. The evaluation and the report run in this process and write, in the run directory:
  report.json, report.md (+ PNG plots, side-by-side GIFs)   the figures, beside the floors
  samples/<id>/video.mp4, tracks.npy, visibility.npy, side_by_side.{mp4,gif}   per held-out sample
(the DMD student's; an RL student is evaluated beside it: its ``rl_*`` figures and side-by-side panel).
Sizes (trackstream/pipeline/presets.py) are chosen for minutes on a small CPU; every figure is measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from trackstream.models.network import Network
from trackstream.pipeline.presets import RELEASE_FINETUNE, RELEASE_RECIPE, SIZES, Sizes
from trackstream.pipeline.stage_calls import PipelineError, train_stage
from trackstream.train.dmd.build import STAGE as DMD
from trackstream.train.ode_init.build import STAGE as ODE_INIT
from trackstream.train.rl.build import STAGE as RL
from trackstream.train.teacher.build import STAGE as TEACHER

__all__ = [
    "PIPELINE",
    "check_preset",
    "run",
    "main",
]

NUM_FRAMES = 25  # 7 latents: the first frame + 2 chunks of 3, the smallest clip where c3s1w1 reaches its steady state
DISTILL = [f"data.num_frames={NUM_FRAMES}"]


def stage_foundation(run_dir: Path, state: dict) -> dict:
    """Wan DiT: real flavors on meta with official counts; tiny forward; checkpoint round trip."""
    from trackstream.models.flavors import OFFICIAL_COUNTS, build_wan
    from trackstream.models.wan_io import load_wan, save_wan

    counts = {}
    for name, (expected, _) in OFFICIAL_COUNTS.items():
        n = sum(p.numel() for p in build_wan(name).parameters())
        counts[name] = {"params": n, "official": expected, "match": n == expected}
    torch.manual_seed(0)
    model = build_wan("tiny").eval()
    x, ctx = torch.randn(1, 16, 5, 8, 8), torch.randn(1, 8, model.text_dim)
    t0 = time.perf_counter()
    with torch.no_grad():
        v = model(x, torch.tensor([500.0]), ctx)
    fwd_ms = (time.perf_counter() - t0) * 1e3
    off = save_wan(model, run_dir / "checkpoints" / "tiny-official")
    dif = save_wan(load_wan(off), run_dir / "checkpoints" / "tiny-diffusers", fmt="diffusers")
    back = load_wan(dif)
    lossless = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    return {
        "real_flavor_param_counts": counts,
        "tiny_params": sum(p.numel() for p in model.parameters()),
        "tiny_forward_ms_cpu": round(fwd_ms, 2),
        "tiny_output_shape": list(v.shape),
        "checkpoint_round_trip_official_diffusers_lossless": lossless,
    }


def stage_teacher(run_dir: Path, state: dict) -> dict:
    """The motion-conditioned teacher: the shipped one, briefly fine-tuned (or trained from nothing)."""
    sizes: Sizes = state["sizes"]
    if sizes.teacher_from == "shipped":
        from trackstream.pipeline.releases import AssetError, verify_asset

        asset = Path(state["teacher_asset"]).resolve()
        try:
            manifest = verify_asset(asset)
        except AssetError as e:
            raise PipelineError(str(e)) from None
        # the fine-tune reads the release's network, codec, world, frame size and shift from it
        overrides = ["experiment=tiny_teacher_finetune", f"model.init_from={asset / 'teacher'}", *sizes.teacher]
        release = {
            "release": str(asset),
            "release_steps": manifest.get("steps"),
            "release_commit": manifest.get("git_commit"),
        }
    else:  # the release's two runs: the base recipe from nothing, then its fine-tune on the placement mixture
        base = train_stage(run_dir, f"{TEACHER.name}_base", [*RELEASE_RECIPE, *sizes.teacher])
        init = (run_dir / f"{TEACHER.name}_base" / "export" / "teacher").resolve()
        overrides = [*RELEASE_FINETUNE, f"model.init_from={init}", *sizes.teacher]
        release = {"base": str(init), "base_steps": base.get("step")}
    summary = train_stage(run_dir, TEACHER.name, overrides)
    state["teacher"] = str((run_dir / TEACHER.name / "export" / "teacher").resolve())
    state["codec"] = str(Network.open(state["teacher"], "teacher").codec_file)  # the release's, or the one it fitted
    return {
        "export": state["teacher"],
        "codec": state["codec"],
        "steps": summary.get("step"),
        "from": sizes.teacher_from,
        **release,
        "final_loss": (summary.get("last_metrics") or {}).get("train/loss"),
    }


def stage_ode_init(run_dir: Path, state: dict) -> dict:
    """ODE pairs from the teacher (joint guidance) + causal ODE regression of the student."""
    summary = train_stage(
        run_dir,
        ODE_INIT.name,
        [
            "experiment=tiny_ode_init",
            *DISTILL,
            f"stage.teacher={state['teacher']}",
            *state["sizes"].ode_init,
        ],
    )
    state["pairs"] = summary["pairs"]
    state["ode_student"] = summary["export"]
    return {k: summary.get(k) for k in ("export", "pairs", "num_pairs", "pairs_seconds", "step")} | {
        "final_loss": (summary.get("last_metrics") or {}).get("train/loss")
    }


def stage_dmd(run_dir: Path, state: dict) -> dict:
    """Self-Forcing DMD, real score = teacher with joint guidance, from the ODE-init student or (``dmd_from``
    "shipped") continuing the shipped student's DMD checkpoint made from the same teacher release."""
    start, origin = state["ode_student"], {"from": ODE_INIT.name}
    if "shipped_dmd" in state:  # checked against the teacher release by ``run`` before any training
        path, manifest = state["shipped_dmd"]
        start = str(path.resolve())
        origin = {"from": start, "from_generator_updates": manifest.get("generator_updates")}
    summary = train_stage(
        run_dir,
        DMD.name,
        [
            "experiment=tiny_dmd",
            *DISTILL,
            f"stage.teacher={state['teacher']}",
            f"stage.student={start}",
            f"stage.pairs={state['pairs']}",
            *state["sizes"].dmd,
        ],
    )
    state["student"] = summary["export"]
    return {k: summary.get(k) for k in ("export", "generator_updates", "critic_updates", "step")} | origin


def stage_rl(run_dir: Path, state: dict) -> dict:
    """AR-Drag's RL stage (GRPO, experiment=rl_tiny) on the DMD student, its conditions from the ODE pairs;
    skipped (state unchanged) when the preset has none (``Sizes.rl`` is None)."""
    rl = state["sizes"].rl
    if rl is None:
        return {"status": "skipped", "why": f"--sizes {state['sizes'].name} has no RL stage"}
    summary = train_stage(
        run_dir,
        RL.name,
        [
            "experiment=rl_tiny",
            *DISTILL,
            f"stage.student={state['student']}",
            f"stage.pairs={state['pairs']}",
            *rl,
        ],
    )
    state["rl_student"] = summary["export"]
    from trackstream.pipeline.report import read_metrics

    rows = read_metrics(run_dir / RL.name / "metrics.jsonl")
    step_s = [r["perf/step_time_s"] for r in rows if "perf/step_time_s" in r]  # each: mean over its log window
    rewards = [r["train/rl/reward"] for r in rows if "train/rl/reward" in r]
    return {k: summary.get(k) for k in ("export", "policy_updates", "reward_seconds", "step")} | {
        "seconds_per_step": round(sum(step_s) / len(step_s), 3) if step_s else None,
        "first_reward": rewards[0] if rewards else None,
        "last_reward": rewards[-1] if rewards else None,
    }


def stage_stream(run_dir: Path, state: dict) -> dict:
    """Held-out evaluation (teacher vs streamed students), long rollouts with/without sink, latency."""
    from trackstream.data.clips import DataConfig
    from trackstream.eval.stream_eval import run_evaluation
    from trackstream.eval.stream_scoring import StreamEvalConfig

    sizes: Sizes = state["sizes"]
    trained_on = Network.open(state["student"], "student").recorded("data")  # the DMD run's world, grid, clips
    data = DataConfig(**{**trained_on, "eval_samples": sizes.eval_samples})
    teacher = Network.open(state["teacher"], "teacher")
    ev = StreamEvalConfig(
        long_factor=sizes.long_factor,
        long_clips=sizes.long_clips,
        long_students=sizes.long_students,
        timing_repeats=sizes.timing_repeats,
        num_tracks=teacher.recorded("eval.num_tracks"),
    )
    students = {
        ODE_INIT.name: state["ode_student"],
        **({RL.name: state["rl_student"]} if state.get("rl_student") else {}),
        "student": state["student"],
    }  # the DMD student stays last (samples/<id>/video.mp4, long rollouts and latency are its own); the RL
    # student, when there is one, is an extra row (rl_* figures) and side-by-side panel
    key = evaluation_key({"teacher": state["teacher"], "codec": state["codec"], **students}, sizes)
    saved = run_dir / "stream" / "figures.json"
    if saved.is_file() and json.loads(saved.read_text()).get("key") == key:
        print(f"[pipeline]   stream: already done in {saved.parent} (same models, sizes and code), reused", flush=True)
        state["figures"] = json.loads(saved.read_text())["figures"]
        return {k: v for k, v in state["figures"].items() if isinstance(v, (int, float, str))}
    figures = run_evaluation(
        run_dir,
        teacher=state["teacher"],
        students=students,
        data=data,
        teacher_steps=sizes.teacher_steps,
        cfg=ev,
    )
    state["figures"] = figures
    saved.parent.mkdir(exist_ok=True)
    saved.write_text(json.dumps({"key": key, "figures": figures}, default=str))  # NaN kept: Python's json reads it
    return {k: v for k, v in figures.items() if isinstance(v, (int, float, str))}


def evaluation_key(models: dict[str, str], sizes: Sizes) -> dict:
    """What the evaluation's figures are a function of: the models' files, the preset, the package's code (an
    edited metric is measured again, not reused) and the torch build and device; seeds are fixed inside it."""
    import hashlib

    from trackstream.models.formats.files import sha256

    def tree(path: Path) -> str:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        return hashlib.sha256("".join(f"{p.relative_to(path)}={sha256(p)}" for p in files).encode()).hexdigest()

    package = Path(__file__).resolve().parents[1]
    code = hashlib.sha256()
    for p in sorted(package.rglob("*.py")):
        code.update(p.relative_to(package).as_posix().encode() + p.read_bytes())
    return {
        "models": {name: tree(Path(path)) for name, path in models.items()},
        "sizes": json.loads(json.dumps(asdict(sizes))),
        "code": code.hexdigest(),
        "torch": [torch.__version__, torch.cuda.is_available()],  # the evaluation runs on CUDA when there is one
    }


# (name, function) in order
PIPELINE: list[tuple[str, Callable[[Path, dict], dict]]] = [
    ("foundation", stage_foundation),
    (TEACHER.name, stage_teacher),
    (ODE_INIT.name, stage_ode_init),
    (DMD.name, stage_dmd),
    (RL.name, stage_rl),  # only in presets with an RL stage (LONG, SMOKE)
    ("stream", stage_stream),
]


def check_preset(run_dir: Path, sizes: Sizes) -> None:
    """A run directory keeps the preset it was started with (resuming with another would mix them); one
    recorded by an earlier TrackStream, whose presets said other things, is refused."""
    info = run_dir / "sizes.json"
    if info.is_file():
        old, now = json.loads(info.read_text()), json.loads(json.dumps(asdict(sizes)))
        changed = sorted(k for k in set(old) | set(now) if old.get(k, "<absent>") != now.get(k, "<absent>"))
        if set(old) != set(now):
            missing, extra = sorted(set(now) - set(old)), sorted(set(old) - set(now))
            what = f"without {', '.join(missing)}" if missing else f"with {', '.join(extra)}, gone since"
            raise PipelineError(
                f"{info}: written by an earlier TrackStream ({what}); start a new run directory (--run-dir NEW)"
            )
        if old["name"] != sizes.name:
            raise PipelineError(
                f"{run_dir} was started with --sizes {old['name']}, not --sizes {sizes.name}: re-run with "
                f"--sizes {old['name']} to resume it, or choose a new --run-dir / RUN_DIR"
            )
        if changed:
            raise PipelineError(
                f"{info}: --sizes {sizes.name} recorded with other {', '.join(changed)} (an earlier TrackStream's "
                "preset, or other settings); start a new run directory (--run-dir NEW)"
            )
    info.write_text(json.dumps(asdict(sizes), indent=1))


def run(run_dir: Path, sizes: Sizes, *, teacher_asset: Path | None = None) -> dict:
    """``teacher_asset``: the shipped-teacher folder to start from (default: assets/tiny-teacher)."""
    from trackstream.pipeline.releases import ASSET_DIR

    run_dir.mkdir(parents=True, exist_ok=True)
    check_preset(run_dir, sizes)
    stages: dict = {}
    state: dict = {"sizes": sizes, "teacher_asset": Path(teacher_asset) if teacher_asset else ASSET_DIR}
    if sizes.dmd_from == "shipped":  # refuse a student release of another teacher before any training
        from trackstream.pipeline.releases import AssetError, shipped_dmd_student

        try:
            state["shipped_dmd"] = shipped_dmd_student(state["teacher_asset"])
        except AssetError as e:
            raise PipelineError(str(e)) from None
    t_start = time.perf_counter()
    print(
        f"[pipeline] run directory {run_dir} (--sizes {sizes.name}); commands in {run_dir / 'pipeline.log'}", flush=True
    )
    for name, fn in PIPELINE:
        t0 = time.perf_counter()
        result = fn(run_dir, state)
        if result.get("status") == "skipped":  # not in this preset: neither in the report nor timed
            print(f"[pipeline] {name:10s} skipped ({result.get('why', 'not in this preset')})", flush=True)
            continue
        stages[name] = {"status": "done", "seconds": round(time.perf_counter() - t0, 2), **result}
        print(f"[pipeline] {name:10s} done in {stages[name]['seconds']:7.1f} s", flush=True)
    from trackstream.pipeline.report import read_metrics, write_report

    figures = dict(state.get("figures", {}))
    figures["stages"] = stages
    figures["sizes"] = sizes.name
    figures["total_seconds"] = round(time.perf_counter() - t_start, 2)
    cpu = os.times()  # CPU time of this process and its finished stage processes (context for CPU contention)
    figures["total_cpu_seconds"] = round(cpu.user + cpu.system + cpu.children_user + cpu.children_system, 2)
    trained = (TEACHER.name, ODE_INIT.name, DMD.name) + ((RL.name,) if RL.name in stages else ())
    metrics = {name: read_metrics(run_dir / name / "metrics.jsonl") for name in trained}
    if sizes.teacher_from == "shipped":  # the shipped teacher's own training curve, then its fine-tune here
        from trackstream.pipeline.releases import teacher_training_curve

        metrics = {
            "teacher (shipped)": teacher_training_curve(state["teacher_asset"]),
            "teacher fine-tune": metrics.pop(TEACHER.name),
            **metrics,
        }
    elif (run_dir / f"{TEACHER.name}_base" / "metrics.jsonl").is_file():  # scratch: the base run, then its fine-tune
        metrics = {"teacher (base)": read_metrics(run_dir / f"{TEACHER.name}_base" / "metrics.jsonl"), **metrics}
    report = write_report(run_dir, figures, metrics=metrics)
    print(f"[pipeline] report: {run_dir / 'report.md'} ({figures['total_seconds']:.0f} s in all)")
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default=os.environ.get("RUN_DIR", "runs/make-run"))
    ap.add_argument(
        "--sizes",
        choices=sorted(SIZES),
        default="full",
        help="full: `make run` from the shipped teacher (minutes on a small CPU); long: more student "
        "compute; scratch: train the teacher from nothing first (hours); smoke: a few steps per "
        "stage, checks the wiring, figures mean nothing",
    )
    ap.add_argument("--smoke", action="store_true", help="same as --sizes smoke")
    ap.add_argument(
        "--teacher-asset",
        type=Path,
        default=None,
        help="shipped-teacher folder to start from (manifest.json, teacher/, codec.pt; default: assets/tiny-teacher)",
    )
    args = ap.parse_args(argv)
    sizes = SIZES["smoke" if args.smoke else args.sizes]
    try:
        run(Path(args.run_dir), sizes, teacher_asset=args.teacher_asset)
    except PipelineError as e:
        print(f"[pipeline] error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
