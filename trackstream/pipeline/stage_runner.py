"""Run one training stage as a child process with a readable console: one progress bar.

The child (``python -m trackstream.train ...``) writes its own logs to ``<stage_dir>/train.log`` and
``metrics.jsonl``; its console output goes to ``<stage_dir>/console.log`` and its full command line
to the pipeline's log, not to the terminal. The terminal shows one bar per stage that follows the
child's ``metrics.jsonl`` (step of max_steps, loss, time left), and the nested codec fit's when the
stage fits a codec first (off a terminal: a plain line every 30 s instead, ``data.progress``). A failed stage
ends with one line naming its log and the last lines of it.
Every stage of one pipeline run directory gets the same W&B group (``WANDB_RUN_GROUP``, unless set).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from trackstream.data.progress import progress_bar

__all__ = ["StageFailed", "run_logged", "wandb_group"]


class StageFailed(RuntimeError):
    """A stage process exited non-zero (the message names its log)."""


def _last_row(path: Path, key: str = "train/loss") -> dict | None:
    """The last metrics row with ``key`` (reads only the file's tail)."""
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 8192))
        lines = f.read().decode(errors="replace").splitlines()
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        if key in row:
            return row
    return None


def _max_steps(stage_dir: Path, key: tuple[str, ...]) -> int | None:
    cfg = stage_dir / "config.yaml"
    if not cfg.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        node = OmegaConf.load(cfg)
        for k in key:
            node = node[k]
        return int(node)
    except Exception:  # noqa: BLE001 - the file may be half written; try again next poll
        return None


def wandb_group(run_dir: Path) -> str:
    """The W&B group of every stage of one pipeline run directory (stable across re-runs of it)."""
    import hashlib

    path = str(Path(run_dir).resolve())
    return f"{Path(path).name}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def run_logged(
    cmd: list[str],
    *,
    stage_dir: Path,
    label: str,
    env: dict,
    cwd: Path,
    pipeline_log: Path,
    show_bar: bool = True,
    poll_s: float = 1.0,
) -> None:
    """Run ``cmd`` with its output in ``<stage_dir>/console.log``; a progress bar on stderr follows it."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    console = stage_dir / "console.log"
    env = {**env, "WANDB_RUN_GROUP": env.get("WANDB_RUN_GROUP") or wandb_group(pipeline_log.parent)}
    with open(pipeline_log, "a") as log:
        log.write(f"[{time.strftime('%H:%M:%S')}] {label}: $ {' '.join(cmd)}\n")
    phases = [
        ("codec fit", stage_dir / "codec" / "metrics.jsonl", ("codec", "fit", "steps")),
        ("train", stage_dir / "metrics.jsonl", ("trainer", "max_steps")),
    ]
    bar = progress_bar(
        total=1,
        desc=f"{label:9s}",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not show_bar,
        bar_format="{desc} {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}",
    )
    totals: dict[str, int] = {}  # a phase's step count, read once: parsing config.yaml every poll costs CPU
    with open(console, "a") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        current = None
        while proc.poll() is None:
            time.sleep(poll_s)
            for name, metrics, key in reversed(phases):  # the latest phase that has started
                row = _last_row(metrics)
                if row is None:
                    continue
                total = totals[name] if name in totals else _max_steps(stage_dir, key)
                if total is None:
                    continue
                totals[name] = total
                if current != name:
                    current = name
                    bar.reset(total=total)
                bar.n = min(int(row["step"]), total)
                bar.set_postfix_str(f"{name} loss {float(row['train/loss']):.4f}", refresh=False)
                bar.refresh()
                break
            else:
                bar.set_postfix_str("preparing (data, encoders)")
    if proc.returncode == 0 and current is not None:
        bar.n = bar.total
        bar.refresh()
    bar.close()
    if proc.returncode != 0:
        tail = console.read_text(errors="replace").strip().splitlines()[-1:] if console.is_file() else []
        raise StageFailed(
            f"stage {label} failed (exit {proc.returncode}): {tail[0] if tail else ''} "
            f"-- see {console} and {stage_dir / 'train.log'}"
        )
