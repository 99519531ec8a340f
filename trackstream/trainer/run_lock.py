"""One training per run directory: an advisory lock (``flock``) on ``<run_dir>/run.lock``.

Two trainings on one run directory would interleave their checkpoints, metrics lines and exports. The
main process of a run takes the lock before anything of the run touches the directory (``train.app``: before
Hydra writes its records); a second run is refused in one line naming the holder (host and pid, written into
the lock file) and removes nothing: the lock file stays, whoever created it. The lock is the kernel's: it goes
with the process that held it (a crash or a kill frees it; no stale lock to delete). A process that runs
several stages in turn on one directory (tests, the embedded pipeline) re-enters its own lock.

A holder refused later (a config error) removes what it made (``made_dir``, ``unlock_run_dir(remove=True)``)
while it still holds the lock; a process that opened the lock file before it was removed finds, once it has
the lock, that the file it holds is no longer the directory's, and starts over on the directory's new one.
"""

from __future__ import annotations

import fcntl
import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOCK_NAME", "lock_run_dir", "unlock_run_dir", "holds_lock", "made_dir"]

LOCK_NAME = "run.lock"


@dataclass
class _Lock:
    fd: int  # the open descriptor holding the lock
    made_dir: bool  # this process created the run directory
    made_file: bool  # this process created the lock file


_HELD: dict[Path, _Lock] = {}  # run directory -> its lock, held by this process


def _make_dir(run_dir: Path) -> bool:
    """Create ``run_dir`` if it is missing; True when this call created it."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(run_dir)
    except FileExistsError:
        return False
    return True


def _open_lock_file(path: Path) -> tuple[int, bool]:
    """The lock file's descriptor, and whether this call created it."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        pass
    try:
        return os.open(path, os.O_RDWR), False
    except FileNotFoundError:  # removed in between by a holder that was refused: create it anew
        return _open_lock_file(path)


def _still_in_place(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def lock_run_dir(run_dir: Path) -> str | None:
    """Take the run directory's lock: None when this process holds it now, else the refusal (one line)."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _HELD:
        return None
    path, made = run_dir / LOCK_NAME, False
    while True:
        made = _make_dir(run_dir) or made
        fd, created = _open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            return (
                f"run directory {run_dir} is in use by another training ({holder}): wait for it to finish, or "
                "give this run its own hydra.run.dir"
            )
        if _still_in_place(fd, path):
            break
        os.close(fd)  # a lock on a removed file: the directory's lock is its new file
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"host {socket.gethostname()}, pid {os.getpid()}\n".encode(), 0)
    _HELD[run_dir] = _Lock(fd, made, created)
    return None


def holds_lock(run_dir: Path) -> bool:
    return Path(run_dir).resolve() in _HELD


def made_dir(run_dir: Path) -> bool:
    """True when this process holds ``run_dir``'s lock and created the directory when it took it."""
    held = _HELD.get(Path(run_dir).resolve())
    return held is not None and held.made_dir


def unlock_run_dir(run_dir: Path, *, remove: bool = False) -> None:
    """Free the lock (a no-op when this process does not hold it); ``remove``: a refused run also removes the
    lock file if it created it (before freeing it: nobody else can be writing then)."""
    held = _HELD.pop(Path(run_dir).resolve(), None)
    if held is None:
        return
    if remove and held.made_file:
        (Path(run_dir).resolve() / LOCK_NAME).unlink(missing_ok=True)
    fcntl.flock(held.fd, fcntl.LOCK_UN)
    os.close(held.fd)
