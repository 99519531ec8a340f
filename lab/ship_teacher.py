"""The shipped tiny teacher: train it (resumably, across machines), export it, verify it.

    python -m lab.ship_teacher start  --run-dir /tmp/release      # the release command, recorded first
    python -m lab.ship_teacher pack   --run-dir /tmp/release      # -> assets/tiny-teacher-resume.tar.gz
    python -m lab.ship_teacher unpack --run-dir /tmp/release      # a new machine continues from it
    python -m lab.ship_teacher export --run-dir /tmp/release      # -> assets/tiny-teacher/ + manifest.json
    python -m lab.ship_teacher verify                             # sha256 of every shipped file

``start`` takes Hydra overrides after its options (recorded with the recipe on the first start) and ``--set
KEY=VALUE`` (repeatable) for one session only, as ``--until`` and ``--threads`` (not part of the recipe).

A release checkpoint is what a user starts from, as MotionStream starts from Wan: the exported
network (official Wan DiT files + heads), the codec it was trained with and the resolved config,
with a ``manifest.json`` that says how it was made (command, git commit, steps, wall time, seeds),
the sha256 of every file, the first logged losses (lab/tests/test_ship_teacher.py re-runs the command's
first steps and compares) and the held-out figures of its own evaluation. ``load_shipped_teacher``
refuses a folder whose files are missing or altered, naming them.

The long run spans sessions whose processes end and whose machines may change, so its latest
resumable state travels as ONE tar in the repository (``pack`` overwrites it): the newest
checkpoint directory, the fitted codec, the run's config, its logs and ``release_run.json`` (the
command and the commit it was started from). ``unpack`` lays it out again and ``start`` resumes. The tar
is gzipped (the 4-layer teacher's checkpoint with its EMA and Adam moments is 18 MB, the tar 22 MB; gzip
brings it under the 20 MB a repository file may have) and ``pack`` refuses to write one over that.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

from lab.release_records import logged_losses, training_seconds
from trackstream.models.formats.files import sha256
from trackstream.pipeline.releases import (
    ASSET_DIR,
    MAX_BYTES,
    AssetError,
    verify_asset,
)

ROOT = Path(__file__).resolve().parents[1]
RESUME_TAR = ROOT / "assets" / "tiny-teacher-resume.tar.gz"
EXPERIMENT = "tiny_teacher_release"
FIRST_LOSSES = 20

__all__ = [
    "teacher_command",
    "git_commit",
    "export_teacher",
    "fine_tune_base",
    "release_floors",
    "pack_resume",
    "unpack_resume",
    "start",
    "session_command",
]


def teacher_command(
    run_dir: Path | str, extra: list[str] | tuple[str, ...] = (), *, experiment: str = EXPERIMENT
) -> list[str]:
    """The command that trains the release teacher into ``run_dir`` (resumes if it holds checkpoints)."""
    return ["python", "-m", "trackstream.train", f"experiment={experiment}", *extra, f"hydra.run.dir={run_dir}"]


def git_commit(root: Path = ROOT) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _windowed(points: list[tuple[int, float]], window: int = 25) -> list[tuple[int, float]]:
    """Mean loss per ``window`` logged steps (the last step of each window): a light training curve."""
    out = []
    for i in range(0, len(points), window):
        chunk = points[i : i + window]
        out.append((chunk[-1][0], round(sum(v for _, v in chunk) / len(chunk), 5)))
    return out


def _eval_curve(path: Path) -> list[dict]:
    """The run's periodic held-out evaluations (its eval.jsonl), scalar figures only."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in rows]


# ----------------------------------------------------------------------------------------------
# verify / load


# ----------------------------------------------------------------------------------------------
# export


def export_teacher(
    run_dir: Path,
    dest: Path = ASSET_DIR,
    *,
    figures: dict | None = None,
    floors: dict | None = None,
    placements: dict | None = None,
    base: Path | None = None,
) -> dict:
    """Copy a finished release run's export, codec and config into ``dest`` and write its manifest (with the
    codec's ``floors``, measured here unless given, and ``placements``: ``lab.placement_table``'s figures).

    A fine-tune of a release (``model.init_from``) ships with its lineage (``fine_tuned_from``: the release it
    started from, when ``base`` (default ``dest``) holds it, with that release's command, commit and steps) and a config that names
    no file of the machine it ran on (``model.init_from`` and ``codec.checkpoint`` cleared: the release's own
    ``codec.pt`` is its codec)."""
    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").is_file() else {}
    if results.get("status") != "done":
        raise AssetError(
            f"{run_dir}: the release run has not finished (results.json status "
            f"{results.get('status')!r}); resume it with `python -m lab.ship_teacher start --run-dir {run_dir}`"
        )
    record = json.loads((run_dir / "release_run.json").read_text()) if (run_dir / "release_run.json").is_file() else {}
    base = fine_tune_base(run_dir, base or dest)  # read before dest is replaced: it may be the run's start
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "teacher").mkdir(parents=True)
    shutil.copytree(run_dir / "export" / "teacher", dest / "teacher", dirs_exist_ok=True)
    codec = run_dir / "codec" / "codec.pt"  # fitted by the run; a fine-tune uses the codec it was given
    if not codec.is_file():
        from omegaconf import OmegaConf

        given = OmegaConf.load(run_dir / "config.yaml").codec.get("checkpoint")
        if not given or not Path(given).is_file():
            raise AssetError(f"{run_dir}: no fitted codec (codec/codec.pt) and no codec.checkpoint file in its config")
        codec = Path(given)
    shutil.copy2(codec, dest / "codec.pt")
    shutil.copy2(run_dir / "config.yaml", dest / "config.yaml")
    if base is not None:
        _detach_config(dest / "config.yaml")
    curve = [{"step": step, "train/loss": loss} for step, loss in _windowed(logged_losses(run_dir / "metrics.jsonl"))]
    (dest / "curve.json").write_text(json.dumps(curve) + "\n")
    files = sorted(p for p in dest.rglob("*") if p.is_file())
    too_big = [
        f"{p.relative_to(dest)} ({p.stat().st_size / 2**20:.1f} MiB)" for p in files if p.stat().st_size > MAX_BYTES
    ]
    total = sum(p.stat().st_size for p in files)
    if too_big or total > MAX_BYTES:
        raise AssetError(f"release files must stay under 20 MiB each and in total ({total / 2**20:.1f} MiB): {too_big}")
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / "config.yaml")
    eval_json = run_dir / "eval.json"
    held_out = figures if figures is not None else (json.loads(eval_json.read_text()) if eval_json.is_file() else {})
    manifest = {
        "name": "tiny-teacher",
        "command": " ".join(record.get("command") or teacher_command("<run-dir>")),
        "git_commit": record.get("git_commit"),
        "steps": results.get("step"),
        "wall_time_s": {
            "teacher_training": round(training_seconds(run_dir / "metrics.jsonl"), 1),
            "codec_fit": round(training_seconds(run_dir / "codec" / "metrics.jsonl"), 1),
            "sessions": record.get("sessions", []),
        },
        "seeds": {"data.seed": cfg.data.seed, "data.eval_seed": cfg.data.eval_seed, "trainer.seed": cfg.trainer.seed},
        "first_losses": {
            "codec": [v for _, v in logged_losses(run_dir / "codec" / "metrics.jsonl", limit=FIRST_LOSSES)],
            "teacher": [v for _, v in logged_losses(run_dir / "metrics.jsonl", limit=FIRST_LOSSES)],
        },
        "held_out": {k: v for k, v in held_out.items() if not isinstance(v, (dict, list))},
        "floors": release_floors(dest, cfg) if floors is None else floors,
        "held_out_during_training": _eval_curve(run_dir / "eval.jsonl"),
        **({"fine_tuned_from": base} if base is not None else {}),
        **({"placements": placements} if placements is not None else {}),
        "sha256": {str(p.relative_to(dest)): sha256(p) for p in files},
        "bytes": total,
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def fine_tune_base(run_dir: Path, release: Path) -> dict | None:
    """The lineage of a fine-tune (None for a run trained from scratch): where it started, and the release in
    folder ``release`` when its network files are the ones the run started from (same sha256)."""
    from omegaconf import OmegaConf

    init = OmegaConf.select(OmegaConf.load(run_dir / "config.yaml"), "model.init_from", default=None)
    if not init:
        return None
    base: dict = {"init_from": str(init)}
    manifest = release / "manifest.json"
    if manifest.is_file() and Path(init).is_dir():
        shipped = json.loads(manifest.read_text())
        weights = [k for k in shipped.get("sha256", {}) if k.startswith("teacher/") and not k.endswith(".json")]
        if weights and all(
            (Path(init).parent / k).is_file() and sha256(Path(init).parent / k) == shipped["sha256"][k] for k in weights
        ):
            base["release"] = {k: shipped.get(k) for k in ("name", "command", "git_commit", "steps")}
    return base


def _detach_config(path: Path) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(path)
    cfg.model.init_from = None
    cfg.codec.checkpoint = None
    OmegaConf.save(cfg, path)


def release_floors(dest: Path, cfg) -> dict:
    """``eval.floors`` of the release's codec on its run's held-out clips (make run's length, 25 frames, and
    its input-track density): ground truth, codec round trip, pixel-space oracle copier, frozen frame."""
    from omegaconf import OmegaConf

    from trackstream.data.clips import DataConfig, heldout_clips
    from trackstream.eval.floors import floor_figures
    from trackstream.models.codecs import build_codec

    c = OmegaConf.to_container(cfg, resolve=True)
    frames = (c.get("eval") or {}).get("num_frames") or c["data"]["num_frames"]
    data = DataConfig(**{**c["data"], "num_frames": frames})
    codec = build_codec(c["codec"]["name"], checkpoint=str(dest / "codec.pt")).eval()
    return floor_figures(heldout_clips(data).clips, codec, num_tracks=(c.get("eval") or {}).get("num_tracks"))


# ----------------------------------------------------------------------------------------------
# resume bundle


def _bundle_members(run_dir: Path) -> list[Path]:
    from trackstream.trainer.checkpoint import latest_readable

    # the newest checkpoint whose meta.pt reads (a damaged newer one is skipped, with a warning): what a
    # resume would take; its files are all tensors and plain containers (weights_only=True), as unpacked
    found = latest_readable(run_dir / "checkpoints")
    if found is None:
        raise AssetError(f"{run_dir}/checkpoints holds no complete readable checkpoint to pack")
    latest = found[0]
    members = [p for p in sorted(latest.rglob("*")) if p.is_file()]
    for rel in (
        "codec/codec.pt",
        "codec/metrics.jsonl",
        "config.yaml",
        "metrics.jsonl",
        "release_run.json",
        "eval.jsonl",
    ):
        if (run_dir / rel).is_file():
            members.append(run_dir / rel)
    if not (run_dir / "codec" / "codec.pt").is_file() and not _given_codec(run_dir):
        raise AssetError(f"{run_dir}/codec/codec.pt is missing: the run has not fitted its codec yet")
    return members


def _given_codec(run_dir: Path) -> bool:
    """Whether the run trains on a codec it was given (a fine-tune of a release: ``codec.checkpoint`` names a file
    outside the run), which a continuation finds where the config says, as it finds ``model.init_from``."""
    from omegaconf import OmegaConf

    if not (run_dir / "config.yaml").is_file():
        return False
    given = OmegaConf.select(OmegaConf.load(run_dir / "config.yaml"), "codec.checkpoint", default=None)
    return bool(given) and Path(str(given)).is_file() and run_dir.resolve() not in Path(str(given)).resolve().parents


def pack_resume(run_dir: Path, tar_path: Path = RESUME_TAR) -> Path:
    """One gzipped tar (written atomically, the same bytes for the same run) with what ``unpack_resume``
    needs to continue; over ``MAX_BYTES`` it is refused, naming its size, and the old bundle is kept."""
    run_dir = Path(run_dir)
    tmp = tar_path.with_name(tar_path.name + ".tmp")
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    # gzip's header holds a time and a file name unless told otherwise: both fixed for reproducible bytes
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", filename="", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in _bundle_members(run_dir):
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(run_dir)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""  # reproducible bytes
                with open(path, "rb") as f:
                    tar.addfile(info, f)
    size = tmp.stat().st_size
    if size > MAX_BYTES:
        tmp.unlink()
        raise AssetError(
            f"{tar_path.name}: the bundle is {size / 2**20:.1f} MiB, over the {MAX_BYTES / 2**20:.0f} MiB a "
            "repository file may have: leave older checkpoints or logs out of the run directory"
        )
    os.replace(tmp, tar_path)
    return tar_path


def unpack_resume(run_dir: Path, tar_path: Path = RESUME_TAR) -> Path:
    run_dir = Path(run_dir)
    if not tar_path.is_file():
        raise AssetError(f"no resume bundle at {tar_path}")
    run_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
        if any(n.startswith(("/", "..")) or "/../" in n for n in names):
            raise AssetError(f"{tar_path}: refusing a bundle with paths outside the run directory")
        tar.extractall(run_dir, filter="data")
    return run_dir


# ----------------------------------------------------------------------------------------------
# CLI


def start(
    run_dir: Path,
    extra: list[str],
    *,
    until: int | None = None,
    threads: int | None = None,
    experiment: str = EXPERIMENT,
    more: Sequence[str] = (),
) -> int:
    """Run (or resume) the release command in ``run_dir``; record the command, commit and session.

    ``until``: stop (evaluate and export) at this step instead of the recipe's last. The schedule's
    horizon is ``optim.decay_steps``, not the stop, so a later ``start`` continues exactly.
    ``threads``: CPU threads for this session only (not part of the recorded recipe: the same
    steps on 1 or 2 threads differ only in float rounding). ``more``: overrides for this session only, after
    everything else (``--set``; not recorded either)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record_path = run_dir / "release_run.json"
    record = (
        json.loads(record_path.read_text())
        if record_path.is_file()
        else {
            "command": teacher_command(run_dir, extra, experiment=experiment),
            "git_commit": git_commit(),
            "sessions": [],
        }
    )
    if extra and record_path.is_file() and list(extra) != record["command"][4 : 4 + len(extra)]:
        raise AssetError(
            f"{run_dir} was started as `{' '.join(record['command'])}`; extra overrides cannot "
            "change a run half-way (start a new --run-dir)"
        )
    record["sessions"].append(
        {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": git_commit(),
            "until": until,
            "threads": threads,
            **({"set": list(more)} if more else {}),
        }
    )
    record_path.write_text(json.dumps(record, indent=2))
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    cmd = session_command(record, run_dir, until=until, threads=threads, more=more)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def session_command(
    record: dict, run_dir: Path, *, until: int | None, threads: int | None, more: Sequence[str] = ()
) -> list[str]:
    """The recorded release command for this session, run in ``run_dir`` (an unpacked bundle on another
    machine has another path than the one recorded: the run directory is never part of the recipe)."""
    args = [a for a in record["command"][1:] if not a.startswith("hydra.run.dir=")]
    if args[:2] == ["-m", "trackstream.stages"]:  # recorded while the application was trackstream.stages
        args[1] = "trackstream.train"
    cmd = [sys.executable, *args, f"hydra.run.dir={run_dir}"]
    cmd += [f"trainer.max_steps={until}"] if until else []
    return cmd + ([f"trainer.num_threads={threads}"] if threads else []) + list(more)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lab.ship_teacher", description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["start", "pack", "unpack", "export", "verify"])
    ap.add_argument("--run-dir", type=Path, help="the release run's directory (outside the repository)")
    ap.add_argument("--dest", type=Path, default=ASSET_DIR, help="release folder (export / verify)")
    ap.add_argument("--tar", type=Path, default=RESUME_TAR, help="resume bundle (pack / unpack)")
    ap.add_argument(
        "--placements",
        type=Path,
        default=None,
        help="`export`: lab.placement_table's placements.json, into the manifest",
    )
    ap.add_argument(
        "--base", type=Path, default=None, help="`export`: the release a fine-tune started from (default: --dest)"
    )
    ap.add_argument("--until", type=int, default=None, help="`start`: stop, evaluate and export at this step")
    ap.add_argument(
        "--threads", type=int, default=None, help="`start`: CPU threads for this session (not recorded in the recipe)"
    )
    ap.add_argument(
        "--experiment", default=EXPERIMENT, help="`start`: the recipe of a new run (a resumed run keeps its own)"
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="`start`: an override for this session only, after the recipe's (not recorded, as --until / --threads)",
    )
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for `start` (recorded on the first start)")
    args = ap.parse_intermixed_args(argv)  # overrides may follow the options
    try:
        if args.action == "verify":
            m = verify_asset(args.dest)
            print(
                f"{args.dest}: {len(m['sha256'])} files intact (steps {m.get('steps')}, commit {m.get('git_commit')})"
            )
            return
        if args.run_dir is None:
            raise AssetError(f"`{args.action}` needs --run-dir")
        if args.action == "start":
            sys.exit(
                start(
                    args.run_dir.resolve(),
                    args.overrides,
                    until=args.until,
                    threads=args.threads,
                    experiment=args.experiment,
                    more=args.set,
                )
            )
        if args.action == "pack":
            print(pack_resume(args.run_dir, args.tar))
        elif args.action == "unpack":
            print(unpack_resume(args.run_dir, args.tar))
        else:
            placements = None if args.placements is None else json.loads(args.placements.read_text())
            m = export_teacher(args.run_dir, args.dest, placements=placements, base=args.base)
            print(f"exported {args.dest} ({m['bytes'] / 2**20:.1f} MiB, {len(m['sha256'])} files)")
    except AssetError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
