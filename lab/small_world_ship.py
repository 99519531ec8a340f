"""Ship the small world model's chain as ``assets/small-world/``, scored by the project's protocol.

    python -m lab.small_world ship --run-dir RUN [--dest assets/small-world] [--device cuda]

``ship_small_world`` needs every stage of the chain done (``small_world run``). It scores
* the teacher: its run's final held-out evaluation (``teacher/eval.json``: EPE with and without tracks,
  the ground-truth video's and the frozen first frame's, PSNR, SSIM) and the oracle copier's EPE
  (``lab.oracle_copy``) on the same clips;
* the ODE-init, DMD and RL students: ``eval.student_score.StudentScorer`` (the held-out clips of the run's world
  by the one EPE protocol, then clips at ``long_factor`` x the horizon: EPE, PSNR, SSIM, drift);
* the small world's targets from those figures (``targets``: value, threshold, met);
and writes the release: ``teacher/`` and ``student/`` (the RL export) with their weights in bf16 and every
file under 20 MB (the DiT sharded with an index), ``codec.pt`` (the run's fitted codec), the stages'
resolved configs (``config.yaml``: DMD's, whose world the demo's scenes come from) and ``manifest.json`` (commands, commit, the device calls' GPU / torch / CUDA from
``calls.jsonl``, steps, compute seconds, seeds, first losses, figures, sha256 of every file).

The device brings back at most 8 files of 16 MiB a call: ``pack_release`` writes the release as one tar in
``release-NNN.part`` pieces of 15 MiB (4 a call: 60 of the 64 MiB, from ``first_part``) beside ``release.json``, and
``unpack_release`` joins the pieces of one or more calls' folders, checks them and extracts the folder.

``first_losses(release, out, steps)`` re-runs the recipe's first steps (the codec fit's warm-up, then the
teacher from the shipped codec) and returns their losses: what a CPU test compares with the manifest's.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import torch

from lab.release_records import logged_losses, training_seconds
from lab.ship_student import fill_release, write_manifest
from lab.ship_teacher import FIRST_LOSSES, git_commit
from lab.small_world_state import EXPORTS, STAGES, stage_done
from trackstream.pipeline.stage_calls import PipelineError

__all__ = [
    "SMALL_DIR",
    "MAX_FILE_BYTES",
    "release_network",
    "targets",
    "ship_small_world",
    "pack_release",
    "unpack_release",
    "first_losses",
]

ROOT = Path(__file__).resolve().parents[1]
SMALL_DIR = ROOT / "assets" / "small-world"
MAX_FILE_BYTES = 19 * 2**20  # under the 20 MB (10^6) a shipped file may have, index and config included
COMMANDS = (
    "python -m lab.small_world run --run-dir <run> --budget-min 9 --text-encoder-path .minilm",
    "python -m lab.small_world ship --run-dir <run>",
)
RELEASE_PART, PARTS_PER_CALL = 15 * 2**20, 4  # + release.json: <= 16 MiB a file, 64 MiB a call
TEACHER_FIGURES = (
    "epe_with_tracks",
    "epe_without_tracks",
    "epe_ground_truth_video",
    "epe_frozen_video",
    "epe_ratio_with_over_without",
    "psnr_with_tracks",
    "psnr_without_tracks",
    "psnr_frozen_video",
    "ssim_with_tracks",
    "ssim_without_tracks",
    "ssim_frozen_video",
    "num_samples",
)


def release_network(
    source: Path, dest: Path, *, dtype: torch.dtype = torch.bfloat16, max_shard_bytes: int = MAX_FILE_BYTES - 2**20
) -> Path:
    """An export rewritten with its floating weights in ``dtype`` and the DiT sharded so that no file is
    over ``MAX_FILE_BYTES`` (a shard's header and the index stay under it too);
    ``models.motion_wan.load_network`` reads it back in float32."""
    from trackstream.models.motion_wan import load_network, read_network_json, save_network

    meta = read_network_json(source)
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_network(source).state_dict().items()}
    save_network(
        sd,
        dest,
        model_cfg=meta["model"],
        text_encoder_dim=int(meta["text_encoder_dim"]),
        ema=bool(meta.get("ema")),
        conventions=meta.get("conventions"),
        max_shard_bytes=max_shard_bytes,
    )
    return dest


def targets(teacher: dict, students: dict[str, dict]) -> dict:
    """The small world's held-out targets (the drag benchmark's are measured by ``drag-bench`` on the release)."""
    t, dmd = teacher, students["dmd"]

    def row(value: float, threshold: float, *, below: bool = True) -> dict:
        return {"value": value, "threshold": threshold, "met": bool(value <= threshold if below else value > threshold)}

    return {
        "teacher_epe_with_over_without": row(t["epe_with_tracks"] / t["epe_without_tracks"], 0.3),
        "teacher_epe_with_over_frozen": row(t["epe_with_tracks"] / t["epe_frozen_video"], 0.45),
        "teacher_psnr_above_frozen": row(t["psnr_with_tracks"], t["psnr_frozen_video"], below=False),
        "teacher_ssim_above_frozen": row(t["ssim_with_tracks"], t["ssim_frozen_video"], below=False),
        "dmd_epe_over_teacher": row(dmd["epe_with_tracks"] / t["epe_with_tracks"], 1.3),
        "dmd_epe_with_over_without": row(dmd["epe_with_tracks"] / dmd["epe_without_tracks"], 0.5),
    }


def _calls(run_dir: Path) -> list[dict]:
    path = run_dir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def score_students(run_dir: Path, exports: dict[str, Path], *, tag: str, **options) -> tuple[dict, object]:
    """Each export scored by the student-scoring protocol (``trackstream.eval.student_score.StudentScorer`` on
    the run's teacher, codec and held-out world; ``options``: ``student_chain.scoring_options``'s); the figures
    per stage and the scorer (its ``protocol``, device and dtype go into the manifest)."""
    from lab.student_score import StudentScorer

    evaluator = StudentScorer(run_dir, **options)
    figures = {}
    for stage, path in exports.items():
        figures[stage] = evaluator(path)
        print(f"[{tag}] {stage}: {json.dumps(figures[stage])}", flush=True)
    return figures, evaluator


def ship_small_world(
    run_dir: Path,
    dest: Path = SMALL_DIR,
    *,
    clips: int = 16,
    long_clips: int = 4,
    long_factor: int = 10,
    device: str = "auto",
    dtype: str = "auto",
) -> dict:
    """Score the chain's teacher and students and write the release (see the module docstring)."""
    from omegaconf import OmegaConf

    from lab.oracle_copy import oracle_epe

    run_dir = Path(run_dir).resolve()
    pending = [s for s in STAGES if not stage_done(run_dir / s)]
    if pending:
        raise PipelineError(f"{run_dir}: stage {pending[0]} is not done; continue the chain first: {COMMANDS[0]}")
    eval_json = run_dir / "teacher" / "eval.json"
    if not eval_json.is_file():
        raise PipelineError(f"{eval_json}: the teacher run has no final held-out evaluation; train it with eval on")
    held = json.loads(eval_json.read_text())
    teacher = {k: held[k] for k in TEACHER_FIGURES if k in held}
    frames = OmegaConf.load(run_dir / "teacher" / "config.yaml").eval.get("num_frames")
    oracle = oracle_epe(run_dir / "teacher", samples=int(held.get("num_samples", clips)), num_frames=frames)
    teacher |= {f"oracle_{k}": v for k, v in oracle.items() if k.startswith("epe_copy@")}  # one token / one cell
    exports = {stage: run_dir / stage / EXPORTS[stage] for stage in ("ode_init", "dmd", "rl")}
    opts = dict(clips=clips, long_clips=long_clips, long_factor=long_factor, device=device, dtype=dtype)
    students, evaluator = score_students(run_dir, exports, tag="small_world", **opts)

    # the DMD stage's config as config.yaml: where the demo and generate read the student's world (as in
    # assets/tiny-student); the other stages' beside it
    configs = {("config.yaml" if s == "dmd" else f"{s}_config.yaml"): run_dir / s / "config.yaml" for s in STAGES}
    fill_release(dest, {"codec.pt": run_dir / "teacher" / "codec" / "codec.pt", **configs}, max_bytes=None)
    release_network(run_dir / "teacher" / EXPORTS["teacher"], dest / "teacher")
    release_network(run_dir / "rl" / EXPORTS["rl"], dest / "student")
    too_big = [str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and p.stat().st_size > MAX_FILE_BYTES]
    if too_big:
        raise PipelineError(f"{dest}: {too_big} over {MAX_FILE_BYTES / 2**20:.0f} MiB; shipped files stay under 20 MB")
    cfg = OmegaConf.load(run_dir / "teacher" / "config.yaml")
    results = {s: json.loads((run_dir / s / "results.json").read_text()) for s in STAGES}
    chain = json.loads((run_dir / "chain.json").read_text()) if (run_dir / "chain.json").is_file() else {}
    metrics = {s: run_dir / s / "metrics.jsonl" for s in STAGES}
    manifest = {
        "name": "small-world",
        "recipe": "small teacher -> ODE pairs + ODE init -> Self-Forcing DMD -> AR-Drag RL (GRPO), model=small",
        "command": "; ".join(COMMANDS),
        "chain": chain,
        "git_commit": git_commit(),
        "calls": _calls(run_dir),  # each device call: GPU, torch, CUDA, budget, progress
        "steps": {s: r.get("step") for s, r in results.items()},
        "generator_updates": results["dmd"].get("generator_updates"),
        "policy_updates": results["rl"].get("policy_updates"),
        "compute_s": {s: round(training_seconds(m), 1) for s, m in metrics.items()},
        "seeds": {"data.seed": cfg.data.seed, "data.eval_seed": cfg.data.eval_seed, "trainer.seed": cfg.trainer.seed},
        "first_losses": {
            "codec": [v for _, v in logged_losses(run_dir / "teacher" / "codec" / "metrics.jsonl", limit=FIRST_LOSSES)],
            "teacher": [v for _, v in logged_losses(metrics["teacher"], limit=FIRST_LOSSES)],
        },
        "teacher_overrides": _teacher_overrides(run_dir),
        "dtype": "bfloat16 weights (loaded in float32)",
        "protocol": evaluator.protocol | {"device": str(evaluator.device), "dtype": str(evaluator.dtype)},
        "held_out": {"teacher": teacher, **students},
        "targets": targets(teacher, students),
    }
    return write_manifest(dest, manifest)


def _teacher_overrides(run_dir: Path) -> list[str]:
    """The teacher stage's command-line overrides as it ran (its .hydra/overrides.yaml), run paths left out."""
    from omegaconf import OmegaConf

    path = run_dir / "teacher" / ".hydra" / "overrides.yaml"
    lines = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else []
    return [x for x in lines if not x.startswith(("hydra.", "logger.progress_bar"))]


def first_losses(release: Path, out: Path, *, steps: int = FIRST_LOSSES, extra: list[str] = ()) -> dict:
    """The release's recipe re-run for its first ``steps`` steps in ``out``: the codec fit's (its warm-up:
    the rates do not depend on the fit's length), then the teacher's from the shipped codec."""
    manifest = json.loads((Path(release) / "manifest.json").read_text())
    mine = ("eval.enabled", "trainer.sample_every", "trainer.max_steps", "codec.fit.steps", "codec.checkpoint")
    kept = [x for x in manifest["teacher_overrides"] if x.split("=")[0].lstrip("+") not in mine]  # set here
    base = [*kept, *extra, "eval.enabled=false", "trainer.sample_every=0"]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    got = {}
    for name, more, log in (
        ("codec", [f"codec.fit.steps={steps}", "trainer.max_steps=1"], "codec/metrics.jsonl"),
        (
            "teacher",
            [f"codec.checkpoint={Path(release).resolve() / 'codec.pt'}", f"trainer.max_steps={steps}"],
            "metrics.jsonl",
        ),
    ):
        run = Path(out) / name
        cmd = [sys.executable, "-m", "trackstream.train", "logger.progress_bar=false", *base, *more]
        proc = subprocess.run([*cmd, f"hydra.run.dir={run}"], cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise PipelineError(f"{name} re-run failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        got[name] = [v for _, v in logged_losses(run / log, limit=steps)]
    return got


def pack_release(dest: Path, out: Path, *, first_part: int = 0) -> dict:
    """``dest`` as one tar cut into ``RELEASE_PART`` pieces; ``PARTS_PER_CALL`` of them from ``first_part``
    go to ``out`` with ``release.json`` (the tar's sha256 and every piece's). Files travel byte for byte."""
    dest, out = Path(dest), Path(out)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(p for p in dest.rglob("*") if p.is_file()):
            tar.add(path, arcname=str(path.relative_to(dest)))
    data = buf.getvalue()
    pieces = [data[i : i + RELEASE_PART] for i in range(0, len(data), RELEASE_PART)]
    if not 0 <= first_part < len(pieces):
        raise ValueError(f"--first-part {first_part}: the release has {len(pieces)} parts (0..{len(pieces) - 1})")
    here = list(range(first_part, min(first_part + PARTS_PER_CALL, len(pieces))))
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("release-*.part"):
        old.unlink()
    for k in here:
        (out / f"release-{k:03d}.part").write_bytes(pieces[k])
    meta = {
        "format": "trackstream.small-world-release",
        "sha256": hashlib.sha256(data).hexdigest(),
        "parts": {f"release-{k:03d}.part": hashlib.sha256(p).hexdigest() for k, p in enumerate(pieces)},
        "here": [f"release-{k:03d}.part" for k in here],
    }
    (out / "release.json").write_text(json.dumps(meta, indent=1))
    if here[-1] + 1 < len(pieces):
        print(f"[small_world] parts {here[0]}..{here[-1]} of {len(pieces)}: next call --first-part {here[-1] + 1}")
    return meta


def unpack_release(sources: list[Path], dest: Path) -> dict:
    """Join the pieces found in ``sources`` (each a folder with ``release.json``), check every sha256 and
    extract the release into ``dest`` (replaced only once the whole folder checks against its manifest)."""
    from trackstream.pipeline.releases import verify_asset

    metas = [json.loads((Path(s) / "release.json").read_text()) for s in sources]
    if len({m["sha256"] for m in metas}) != 1:
        raise ValueError(f"{[str(s) for s in sources]} hold parts of different releases: give one release's folders")
    found = {name: Path(s) / name for s, m in zip(sources, metas) for name in m["here"]}
    missing = [n for n in metas[0]["parts"] if n not in found]
    if missing:
        first = int(missing[0].split("-")[1].split(".")[0])
        raise ValueError(
            f"{missing} missing: bring them back with `small_world release --out DIR --first-part {first}`"
        )
    data = b"".join(found[n].read_bytes() for n in metas[0]["parts"])
    if hashlib.sha256(data).hexdigest() != metas[0]["sha256"]:
        raise ValueError(f"the joined parts of {[str(s) for s in sources]} do not match release.json's sha256")
    dest = Path(dest)
    tmp = dest.with_name(f".tmp-{dest.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp, filter="data")
    manifest = verify_asset(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return manifest
