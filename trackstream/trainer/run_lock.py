"""One training per run directory: an advisory lock (``flock``) on ``<run_dir>/run.lock``.

Two trainings on one run directory would interleave their checkpoints, metrics lines and exports. The
main process of a run takes the lock before it writes anything; a second run is refused in one line naming
the holder (host and pid, written into the lock file). The lock is the kernel's: it goes with the process
that held it (a crash or a kill frees it; no stale lock to delete). A process that runs several stages in
turn on one directory (tests, the embedded pipeline) re-enters its own lock.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

__all__ = ["LOCK_NAME", "lock_run_dir", "unlock_run_dir"]

LOCK_NAME = "run.lock"
_HELD: dict[Path, int] = {}  # run directory -> the open descriptor holding its lock


def lock_run_dir(run_dir: Path) -> str | None:
    """Take the run directory's lock: None when this process holds it now, else the refusal (one line)."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _HELD:
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        return (
            f"run directory {run_dir} is in use by another training ({holder}): wait for it to finish, or give "
            "this run its own hydra.run.dir"
        )
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"host {socket.gethostname()}, pid {os.getpid()}\n".encode(), 0)
    _HELD[run_dir] = fd
    return None


def unlock_run_dir(run_dir: Path) -> None:
    fd = _HELD.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
