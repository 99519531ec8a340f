"""The shipped release folders (`assets/tiny-teacher`, `assets/tiny-student`): where they live, how
a folder is checked against its ``manifest.json`` (the sha256 of every file) and loaded, and the shipped
teacher's training curve (what a release run logged, its losses and training seconds, is lab/release_records.py).
``load_shipped_teacher`` refuses a folder whose files are missing or altered, naming them.
"""

from __future__ import annotations

import json
from pathlib import Path

from trackstream.models.formats.files import release_mismatches

ROOT = Path(__file__).resolve().parents[2]
ASSET_DIR = ROOT / "assets" / "tiny-teacher"
STUDENT_DIR = ROOT / "assets" / "tiny-student"
MAX_BYTES = 20 * 2**20  # every shipped file, and the folder in total

__all__ = [
    "ASSET_DIR",
    "STUDENT_DIR",
    "MAX_BYTES",
    "AssetError",
    "verify_asset",
    "load_shipped_teacher",
    "shipped_dmd_student",
    "teacher_training_curve",
]


class AssetError(ValueError):
    """A release folder (or a resume bundle) is missing, incomplete or altered."""


def teacher_training_curve(directory: Path | str = ASSET_DIR) -> list[dict]:
    """The shipped teacher's training curve (``curve.json``: mean loss per 25 steps); [] if absent."""
    path = Path(directory) / "curve.json"
    return json.loads(path.read_text()) if path.is_file() else []


def verify_asset(directory: Path | str = ASSET_DIR) -> dict:
    """Check every file the manifest lists against its sha256; returns the manifest."""
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise AssetError(
            f"{directory}: no manifest.json; this is not a release folder (restore it with `git checkout -- {directory}`, "
            f"or, in a source checkout, export one with `python -m lab.ship_teacher export --run-dir <run>`)"
        )
    manifest = json.loads(manifest_path.read_text())
    missing, altered = release_mismatches(directory, manifest)
    if missing or altered:
        parts = ([f"missing {missing}"] if missing else []) + (
            [f"altered (sha256 differs from manifest.json) {altered}"] if altered else []
        )
        raise AssetError(
            f"release {directory} is not intact: {'; '.join(parts)}. Restore it with "
            f"`git checkout -- {directory}` (or `git lfs pull` if your clone used LFS), or re-export it"
        )
    return manifest


def load_shipped_teacher(directory: Path | str = ASSET_DIR, *, device: str = "cpu"):
    """(network, codec path, manifest) of a verified release folder."""
    from trackstream.models.network import Network

    directory = Path(directory)
    manifest = verify_asset(directory)
    net = Network.open(directory / "teacher", "teacher").load(device=device)
    return net, directory / "codec.pt", manifest


def shipped_dmd_student(
    teacher_asset: Path | str = ASSET_DIR, directory: Path | str = STUDENT_DIR
) -> tuple[Path, dict]:
    """(the DMD export, manifest) of the verified student release, refused unless it was distilled from
    ``teacher_asset`` (its manifest names the teacher release's manifest sha256): a DMD checkpoint continued
    with another teacher's scores and codec would be a different model."""
    from trackstream.models.formats.files import sha256

    directory, teacher_asset = Path(directory), Path(teacher_asset)
    manifest = verify_asset(directory)
    if not (directory / "dmd" / "network.json").is_file():
        raise AssetError(
            f"{directory} has no dmd/ (the DMD checkpoint a run continues): re-ship it with "
            "`python -m lab.student_chain ship --run-dir <run>`, or distil from the ODE-init student (--sizes long)"
        )
    want = (manifest.get("teacher_release") or {}).get("manifest_sha256")
    have = sha256(teacher_asset / "manifest.json")
    if want != have:
        raise AssetError(
            f"{directory} was distilled from the teacher release whose manifest.json has sha256 {str(want)[:12]}, "
            f"not {teacher_asset} ({have[:12]}): start from the teacher it was made with, or distil from the "
            "ODE-init student (--sizes long)"
        )
    return directory / "dmd", manifest
