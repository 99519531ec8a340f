"""A staged release pair replaces the shipped one (what make run, the page and every streaming command read):

    python -m lab.promote --teacher assets/tiny-teacher-placements --student assets/tiny-student-placements

Both staged folders are verified first (every file against its manifest, and the student's manifest must name the
staged teacher's manifest by its sha256); nothing moves unless all of it holds. The staged teacher then replaces
``assets/tiny-teacher`` and the staged student ``assets/tiny-student``; the old folders leave the tree (the git
history keeps them: the student's manifest records the commit and manifest sha256 of each folder it replaced).
The student's manifest is re-pointed at the teacher's new folder (``teacher_release.dir``, ``codec.path``) and
takes the shipped folder's name; its figures, files and the teacher's manifest are unchanged.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from lab.ship_teacher import git_commit
from trackstream.models.formats.files import sha256
from trackstream.pipeline.releases import ASSET_DIR, STUDENT_DIR, AssetError, verify_asset

__all__ = ["promote", "main"]


def _relative(path: Path, base: Path) -> str:
    """``path`` as the manifests name release folders: relative to the folder holding ``assets/``."""
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        raise ValueError(f"{path}: not inside {base}, where the manifests' release paths start") from None


def _check_pair(teacher: Path, student: Path) -> dict:
    """The staged student's manifest, once both folders are intact and the student names this teacher."""
    verify_asset(teacher)
    manifest = verify_asset(student)
    want = (manifest.get("teacher_release") or {}).get("manifest_sha256")
    if want != sha256(teacher / "manifest.json"):
        raise AssetError(
            f"{student}/manifest.json names the teacher release {str(want)[:12]}, not {teacher}: promote the "
            "student together with the teacher it was distilled from"
        )
    return manifest


def _replaced(folder: Path, commit: str) -> dict | None:
    """What the history holds of a shipped folder about to be replaced (None where there is none)."""
    if not (folder / "manifest.json").is_file():
        return None
    return {"manifest_sha256": sha256(folder / "manifest.json"), "git_commit": commit}


def promote(teacher: Path, student: Path, *, teacher_dest: Path = ASSET_DIR, student_dest: Path = STUDENT_DIR) -> dict:
    """Move a staged (teacher, student) pair into the shipped folders; returns the student's new manifest."""
    teacher, student = Path(teacher), Path(student)
    teacher_dest, student_dest = Path(teacher_dest), Path(student_dest)
    if teacher.resolve() == teacher_dest.resolve() or student.resolve() == student_dest.resolve():
        raise ValueError("--teacher / --student: give the staged folders, not the shipped ones they replace")
    manifest = _check_pair(teacher, student)
    base = teacher_dest.resolve().parent.parent  # the folder holding assets/: the manifests' paths start there
    commit = git_commit()
    # every path the record names, before anything moves: a folder outside base is refused with nothing lost
    staged = {"teacher": _relative(teacher, base), "student": _relative(student, base)}
    teacher_dir = _relative(teacher_dest, base)
    replaced = {_relative(dest, base): _replaced(dest, commit) for dest in (teacher_dest, student_dest)}
    for folder, dest in ((teacher, teacher_dest), (student, student_dest)):
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(folder), str(dest))

    manifest["name"] = student_dest.name
    manifest["teacher_release"] = {"dir": teacher_dir, "manifest_sha256": sha256(teacher_dest / "manifest.json")}
    manifest["codec"] = {"path": f"{teacher_dir}/codec.pt", "sha256": sha256(teacher_dest / "codec.pt")}
    manifest["promoted"] = {
        "from": staged,
        "replaced": {k: v for k, v in replaced.items() if v is not None},
        "command": f"python -m lab.promote --teacher {staged['teacher']} --student {staged['student']}",
    }
    (student_dest / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    verify_asset(student_dest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.promote", description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", type=Path, required=True, help="the staged teacher release folder")
    ap.add_argument("--student", type=Path, required=True, help="the staged student release distilled from it")
    ap.add_argument("--teacher-dest", type=Path, default=ASSET_DIR, help="default: assets/tiny-teacher")
    ap.add_argument("--student-dest", type=Path, default=STUDENT_DIR, help="default: assets/tiny-student")
    args = ap.parse_args(argv)
    try:
        m = promote(args.teacher, args.student, teacher_dest=args.teacher_dest, student_dest=args.student_dest)
    except (AssetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{args.teacher_dest} and {args.student_dest} now hold the promoted pair; replaced: {m['promoted']['replaced']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
