"""What a release run logged, read from its ``metrics.jsonl``: its losses and its training seconds (the
manifests of ``lab.ship_teacher`` and ``lab.small_world_ship``, and their tests); and an earlier release as the
git history holds it (a fine-tune's base, replaced in the tree by the fine-tune)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

__all__ = ["logged_losses", "training_seconds", "release_in_history"]


def logged_losses(metrics: Path, key: str = "train/loss", limit: int | None = None) -> list[tuple[int, float]]:
    """(step, value) of ``key`` from a metrics.jsonl, in step order, each step once (a resumed run
    re-logs nothing before its checkpoint, but a crash between a log and a checkpoint can)."""
    seen: dict[int, float] = {}
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if key in row:
                seen[int(row["step"])] = float(row[key])
    out = sorted(seen.items())
    return out[:limit] if limit else out


def training_seconds(metrics: Path) -> float:
    """Wall seconds of training steps, summed from the logged mean step times (resume-proof)."""
    total, last = 0.0, 0
    if metrics.is_file():
        rows = {}
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if "perf/step_time_s" in row:
                rows[int(row["step"])] = float(row["perf/step_time_s"])
        for step in sorted(rows):
            total += rows[step] * (step - last)
            last = step
    return total


def _git(root: Path, *args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, check=True).stdout


def release_in_history(root: Path, folder: str, match: dict, dest: Path) -> tuple[str, dict]:
    """The release folder ``folder`` (``assets/tiny-teacher``) as the git history of ``root`` last shipped it with a
    manifest whose fields equal ``match`` (a fine-tune's ``fine_tuned_from.release``: name, command, commit,
    steps), extracted into ``dest``: (that commit, its manifest). A ValueError names what is missing."""
    try:
        commits = _git(root, "log", "--format=%H", "--", f"{folder}/manifest.json").decode().split()
    except (OSError, subprocess.CalledProcessError) as e:
        raise ValueError(f"{root}: no git history to find the release {match.get('name')} in ({e})") from e
    for commit in commits:
        try:
            manifest = json.loads(_git(root, "show", f"{commit}:{folder}/manifest.json"))
        except (subprocess.CalledProcessError, json.JSONDecodeError):
            continue  # the commit that removed or broke it
        if all(manifest.get(k) == v for k, v in match.items()):
            with tarfile.open(fileobj=io.BytesIO(_git(root, "archive", commit, folder))) as tar:
                tar.extractall(dest, filter="data")
            return commit, manifest
    raise ValueError(f"{root}: no commit ships {folder} with {match}; a shallow clone lacks it (git fetch --unshallow)")
