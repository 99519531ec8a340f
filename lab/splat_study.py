"""Which track rasterisation generalises across placements: ``nearest`` (MotionStream's eq. 1) or ``bilinear``.

    python -m lab.splat_study run --out /path/outside/repo/splat --steps 300

Two arms fine-tune the shipped teacher (``assets/tiny-teacher``, trained with ``bilinear``) for ``--steps``
steps on the placement mixture (``experiment=tiny_teacher_placements``), one per rasterisation, everything
else equal (the same steps, batches, seeds). The ``nearest`` arm starts from the same weights with its
``network.json`` saying ``nearest``: on the shipped teacher's own inputs (every frame-0 point at a cell's
centre) the two write the same features, so neither arm starts from inputs it never saw at frame 0. Each
arm's export is then scored by ``lab.placement_table`` (teacher only, every placement, ``--clips`` held-out
clips); ``splat_study.json`` holds both tables and, per arm, each placement's EPE / frozen over its lattice's
(the generalisation figure), and ``splat_study.md`` the comparison. A re-run resumes each arm where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
SPLATS = ("bilinear", "nearest")
EXPERIMENT = "tiny_teacher_placements"

__all__ = ["relabelled_release", "run_arm", "score_arm", "summary", "write_study", "main"]


def relabelled_release(source: Path, dest: Path, splat: str) -> Path:
    """A copy of the teacher release ``source`` whose network and config say ``model.track_splat=splat``."""
    if (dest / "teacher" / "network.json").is_file():
        return dest
    shutil.copytree(source, dest, dirs_exist_ok=True)
    meta_path = dest / "teacher" / "network.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["track_splat"] = splat
    meta_path.write_text(json.dumps(meta, indent=2))
    cfg = OmegaConf.load(dest / "config.yaml")
    cfg.model.track_splat = splat
    cfg.codec.checkpoint = str((dest / "codec.pt").resolve())
    OmegaConf.save(cfg, dest / "config.yaml")
    (dest / "manifest.json").unlink(missing_ok=True)  # no longer the shipped folder's files
    return dest


def run_arm(out: Path, splat: str, *, steps: int, threads: int, source: Path) -> Path:
    """Fine-tune one arm to ``steps`` (resuming); returns its run directory."""
    from lab.ship_teacher import start

    init = relabelled_release(source, out / f"init-{splat}", splat)
    run_dir = out / splat
    code = start(run_dir, [f"model.init_from={init / 'teacher'}"], until=steps, threads=threads, experiment=EXPERIMENT)
    if code:
        raise SystemExit(f"the {splat} arm's training failed (exit {code}); see {run_dir}")
    return run_dir


def score_arm(run_dir: Path, out: Path, *, clips: int, teacher_steps: int) -> dict:
    """An arm's export scored by the placement table (teacher only, every placement, ``clips`` held-out clips)."""
    from lab.placement_table import placement_run
    from trackstream.data.placements import EVAL_PLACEMENTS

    return placement_run(
        run_dir,
        {},
        out=out,
        clips=clips,
        models=["teacher"],
        placements=list(EVAL_PLACEMENTS),
        teacher_steps=teacher_steps,
    )


def write_study(out: Path, stem: str, result: dict, titles: dict[str, str]) -> None:
    """``<stem>.json`` (``result``) and ``<stem>.md`` (each arm's placement table under its title), printed too."""
    from trackstream.eval.placements import placement_table

    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    md = "\n\n".join(f"### {titles[arm]}\n\n{placement_table(fig)}" for arm, fig in result["tables"].items())
    (out / f"{stem}.md").write_text(md + "\n")
    print(md)


def summary(tables: dict[str, dict]) -> dict:
    """Per arm and placement: EPE / frozen, and that over the arm's lattice's."""
    out = {}
    for arm, fig in tables.items():
        rows = fig["models"]["teacher"]
        base = rows["lattice"]["epe_over_frozen"]
        out[arm] = {
            p: {"epe_over_frozen": r["epe_over_frozen"], "over_lattice": r["epe_over_frozen"] / base}
            for p, r in rows.items()
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.splat_study", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["run", "init"])
    ap.add_argument("--out", type=Path, required=True, help="study folder (outside the repository)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teacher-steps", type=int, default=24)
    ap.add_argument("--source", type=Path, default=ROOT / "assets" / "tiny-teacher")
    ap.add_argument("--splats", default=",".join(SPLATS))
    args = ap.parse_args(argv)
    args.out = args.out.resolve()  # the arms train from the repository root (lab.ship_teacher.start)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.action == "init":  # the arms' start folders only: what a packed arm's continuation reads
        for splat in args.splats.split(","):
            print(relabelled_release(args.source, args.out / f"init-{splat}", splat))
        return 0
    tables = {}
    for splat in args.splats.split(","):
        run_dir = run_arm(args.out, splat, steps=args.steps, threads=args.threads, source=args.source)
        tables[splat] = score_arm(
            run_dir, args.out / f"table-{splat}", clips=args.clips, teacher_steps=args.teacher_steps
        )
    result = {"steps": args.steps, "clips": args.clips, "tables": tables, "summary": summary(tables)}
    write_study(args.out, "splat_study", result, {arm: arm for arm in tables})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
