"""Ship make run's distilled student as a small release folder (``assets/tiny-student`` is normally the whole
chain's, ``pipeline.student_chain``; this one stands in while a chain on a new teacher is still running).

    make run                                                     # RUN_DIR=runs/make-run
    python -m lab.ship_student --run-dir runs/make-run --dest DIR   # -> DIR/

The folder is what the demo's browser test and a person without the time for ``make run`` stream
from: ``student/`` (the DMD export: Wan DiT files, heads, network.json), ``config.yaml`` (the DMD
stage's resolved config: the world the scenes come from) and ``manifest.json``: the command, the
commit the run was made from, steps and wall time per stage, seeds, the run's held-out figures, its floors,
its long-horizon windows, the project's targets judged on its figures (``lab.targets``) and the sha256 of every
file (``trackstream.pipeline.releases.verify_asset`` checks them). The codec is the teacher release's
(``assets/tiny-teacher/codec.pt``, recorded by its sha256), not copied.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from lab.ship_teacher import git_commit
from lab.targets import targets
from trackstream.models.formats.files import sha256
from trackstream.pipeline.releases import ASSET_DIR, MAX_BYTES, STUDENT_DIR, AssetError

__all__ = ["STUDENT_DIR", "ship_student", "fill_release", "write_manifest"]

ROOT = Path(__file__).resolve().parents[1]
# held-out figures of the run worth carrying (report.json keys)
FIGURES = (
    "student_epe_with_tracks",
    "student_epe_without_tracks",
    "student_psnr_with_tracks",
    "student_ssim_with_tracks",
    "teacher_epe_with_tracks",
    "teacher_epe_without_tracks",
    "epe_frozen_video",
    "epe_tracker",
    "student_nfe_per_video",
    "latency_ratio_last_over_early",
    "num_heldout",
    "num_frames",
)


def ship_student(run_dir: Path, dest: Path = STUDENT_DIR, *, commit: str | None = None) -> dict:
    """Copy ``run_dir``'s DMD student and its config into ``dest`` and write the manifest."""
    run_dir = Path(run_dir)
    report = run_dir / "report.json"
    export = run_dir / "dmd" / "export" / "student"
    if not report.is_file() or not (export / "network.json").is_file():
        raise AssetError(
            f"{run_dir}: no finished make run there (report.json and dmd/export/student); run "
            f"`make run RUN_DIR={run_dir}` first"
        )
    figures = json.loads(report.read_text())
    if any("epe_strict_" in k for k in figures):  # its epe_* are the retired re-acquiring tracker's
        print(
            f"[ship_student] {report} predates the one EPE protocol: re-run make run there to re-measure "
            "(finished stages are reused)",
            file=sys.stderr,
        )
    stages = figures.get("stages", {})
    results = {s: json.loads((run_dir / s / "results.json").read_text()) for s in ("teacher", "ode_init", "dmd")}
    fill_release(dest, {"student": export, "config.yaml": run_dir / "dmd" / "config.yaml"})
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / "dmd" / "config.yaml")
    manifest = {
        "name": "tiny-student",
        "command": f"make run RUN_DIR=<run>  (python -m trackstream.pipeline --run-dir <run> --sizes {figures.get('sizes', 'full')}), "
        "then python -m lab.ship_student --run-dir <run>",
        "git_commit": commit or git_commit(),
        "teacher_release": {"dir": "assets/tiny-teacher", "manifest_sha256": sha256(ASSET_DIR / "manifest.json")},
        "codec": {"path": "assets/tiny-teacher/codec.pt", "sha256": sha256(ASSET_DIR / "codec.pt")},
        "steps": {s: r.get("step") for s, r in results.items()},
        "generator_updates": results["dmd"].get("generator_updates"),
        "wall_time_s": {s: v.get("seconds") for s, v in stages.items()} | {"total": figures.get("total_seconds")},
        "seeds": {"data.seed": cfg.data.seed, "data.eval_seed": cfg.data.eval_seed, "trainer.seed": cfg.trainer.seed},
        "held_out": {k: figures[k] for k in FIGURES if k in figures},
        "floors": figures.get("floors"),
        "long_horizon": {  # per student and stream: the windows (report.json keeps per-clip and per-chunk detail)
            name: {k: {"windows": r["windows"], "num_clips": r["num_clips"]} for k, r in streams.items()}
            for name, streams in (figures.get("long_horizon") or {}).items()
        },
        "targets": {
            k: {"value": v.get("value"), "threshold": v.get("threshold"), "met": v.get("met")}
            for k, v in targets(figures).items()
        },
    }
    return write_manifest(dest, manifest)


def fill_release(dest: Path, copies: dict[str, Path], *, max_bytes: int | None = MAX_BYTES) -> None:
    """``dest`` emptied, then filled with ``copies`` (name in the folder -> the file or folder to copy);
    refused when the files come to more than ``max_bytes`` (a tiny release's whole folder; None: the caller
    checks each file, as the small world's release does)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name, source in copies.items():
        (shutil.copytree if Path(source).is_dir() else shutil.copy2)(source, dest / name)
    total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    if max_bytes is not None and total > max_bytes:
        raise AssetError(f"the student folder is {total / 2**20:.1f} MiB; shipped folders stay under 20 MiB")


def write_manifest(dest: Path, manifest: dict) -> dict:
    """``manifest`` + the sha256 of every file in ``dest`` (what ``verify_asset`` checks) -> manifest.json."""
    files = sorted(p for p in dest.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {
        **manifest,
        "sha256": {str(p.relative_to(dest)): sha256(p) for p in files},
        "bytes": sum(p.stat().st_size for p in files),
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.ship_student", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, required=True, help="a finished make run's directory")
    ap.add_argument(
        "--dest",
        type=Path,
        required=True,
        help="the release folder to write (assets/tiny-student is normally the whole chain's: student_chain ship)",
    )
    ap.add_argument("--commit", default=None, help="the commit the run was made from (default: this checkout's HEAD)")
    args = ap.parse_args(argv)
    try:
        m = ship_student(args.run_dir, args.dest, commit=args.commit)
    except AssetError as e:
        print(f"[ship_student] error: {e}", file=sys.stderr)
        return 2
    print(
        f"[ship_student] {args.dest}: {len(m['sha256'])} files, {m['bytes'] / 2**20:.1f} MiB, "
        f"student EPE with tracks {m['held_out'].get('student_epe_with_tracks')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
