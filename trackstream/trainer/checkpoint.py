"""Exact-resume checkpoints: atomic directories, keep-last-k, automatic resume, preemption.

Layout of ``<run_dir>/checkpoints/step_00001000/``:
  meta.pt            rank 0: step, loop counters, per-network schedule/counters, a config
                     fingerprint; written LAST, so a directory with meta.pt is complete
  rank_00000.pt ...  per rank: data-stream position, objective state (its generators are per
                     rank) and RNG states (python, numpy, torch, cuda)
  <network>.pt | <network>/ | deepspeed/   model + optimizer (+ EMA), per strategy (trainer/trained_network.py)
Atomicity: everything goes to ``.tmp-step_...`` first; after a barrier rank 0 renames it into
place (``os.replace`` of a directory is atomic on POSIX) and prunes old ones. A crash mid-save
leaves only a ``.tmp-*`` directory, which resume ignores and the next save removes; pruning renames before
it removes (``.del-*``), so a kill there leaves no half-removed ``step_*``. A full disk ends the save with
one line (``DiskFull``) naming the last complete checkpoint, which stays intact.

Every file holds tensors, numbers, strings and plain containers only (numpy RNG state as a tensor:
``models.formats.files.plain_state``) and is read with ``weights_only=True`` (``read_torch_file``); a checkpoint
written before that is refused with the opt-in (``TRACKSTREAM_ALLOW_PICKLE=1``) named. DeepSpeed's own
files under ``deepspeed/`` are read by DeepSpeed itself.

Resume (``trainer.resume=auto``) takes the newest checkpoint that can be read: one whose meta.pt, rank
file or network file (an FSDP network's shards and index too: trackstream/trainer/sharded.py) is missing,
truncated or garbage is skipped with a warning naming it and why, and the next older one is used
(:meth:`CheckpointManager.resume_latest`). A checkpoint of another config is refused, not skipped: that
run directory holds another run.

Preemption: SIGTERM, SIGUSR1 (Slurm's ``--signal=USR1@120``) and SIGUSR2 (submitit) set a flag; the loop checks it
every step (agreeing across ranks), saves, and exits cleanly, status 0 (optionally ``scontrol requeue``: the exit
status requeues nothing). Loader workers ignore these signals (``data.batching``), so one sent to a process group,
to every process of a Slurm step or relayed by torchrun (to each rank's group; it SIGKILLs ranks still running
``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` seconds later) does not fail the step before the save.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import torch

from trackstream.models.formats.files import UnreadableFile, plain_state, read_torch_file
from trackstream.trainer.dist import Runtime, load_rng_state, rng_state
from trackstream.trainer.sharded import agree_readable
from trackstream.trainer.trained_network import TrainedNetwork

__all__ = [
    "CheckpointManager",
    "DiskFull",
    "TrainingStopped",
    "PreemptionHandler",
    "check_resumable",
    "complete_checkpoints",
    "find_latest",
    "latest_readable",
    "read_meta",
    "refuse_foreign_run",
]

log = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step_(\d{8})$")


def complete_checkpoints(directory: Path) -> list[Path]:
    """The complete ``step_*`` checkpoints in ``directory`` (those with a meta.pt), newest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    done = [p for p in directory.iterdir() if _STEP_DIR.match(p.name) and (p / "meta.pt").is_file()]
    return sorted(done, key=lambda p: int(_STEP_DIR.match(p.name).group(1)), reverse=True)


def find_latest(directory: Path) -> Path | None:
    """The highest complete ``step_*`` checkpoint in ``directory`` (None if there is none); whether its
    files can be read is :func:`latest_readable`'s question."""
    done = complete_checkpoints(directory)
    return done[0] if done else None


_RESAVE = "resume from it once (the next checkpoint is written in the safe format) or start a new run directory"


def read_meta(path: Path, *, allow_pickle: bool = False) -> dict:
    """A checkpoint's meta.pt (``weights_only=True``; see :func:`trackstream.models.formats.files.read_torch_file`)."""
    return read_torch_file(
        Path(path) / "meta.pt", old_format="a training checkpoint", fix=_RESAVE, allow_pickle=allow_pickle
    )


def latest_readable(directory: Path, *, allow_pickle: bool = False) -> tuple[Path, dict] | None:
    """The newest complete checkpoint whose meta.pt can be read, with its meta (None if there is none);
    each newer unreadable one is logged as a warning with the reason."""
    for path in complete_checkpoints(directory):
        try:
            return path, read_meta(path, allow_pickle=allow_pickle)
        except UnreadableFile as err:
            log.warning("checkpoint %s cannot be read, trying an older one: %s", path, err)
    return None


def _changes(saved, now, prefix: str) -> list[str]:
    """``field: saved A now B`` for every leaf that differs (fingerprint entries hold JSON dumps of configs:
    compared field by field, so the error names ``model.flavor``, not two pages of JSON)."""
    import json

    def parsed(v):
        if isinstance(v, str) and v[:1] in "{[":
            try:
                return json.loads(v)
            except ValueError:
                return v
        return v

    saved, now = parsed(saved), parsed(now)
    if isinstance(saved, dict) and isinstance(now, dict):
        return [c for k in sorted(set(saved) | set(now)) for c in _changes(saved.get(k), now.get(k), f"{prefix}.{k}")]
    return [] if saved == now else [f"{prefix}: saved {saved!r} now {now!r}"]


def check_resumable(path: Path, meta: dict, *, fingerprint: dict, world_size: int) -> None:
    """Refuse (one-line ValueError naming the changed fields and the fix) to resume checkpoint ``path`` (its
    ``meta.pt`` read as ``meta``) under a config whose ``fingerprint`` or world size differs."""
    if meta["world_size"] != world_size:
        raise ValueError(
            f"checkpoint {path} was written by {meta['world_size']} processes, this run has "
            f"{world_size}: exact resume needs the same world size (data streams are per rank)"
        )
    saved = meta["fingerprint"]
    changed = [
        c for k in fingerprint if saved.get(k) != fingerprint[k] for c in _changes(saved.get(k), fingerprint[k], k)
    ]
    if changed:
        shown = ", ".join(changed[:6]) + (f" (+{len(changed) - 6} more)" if len(changed) > 6 else "")
        raise ValueError(
            f"cannot resume {path} exactly, the config changed ({shown}): this run directory holds another "
            "run; use a new run directory (hydra.run.dir=... or RUN_DIR=...) or the config it was started with"
        )


def refuse_foreign_run(directory: Path, *, fingerprint: dict, world_size: int) -> None:
    """Before a run writes anything into its run directory: if ``directory`` (its checkpoints) holds a
    complete checkpoint this config cannot resume, refuse now, while the old run's record is intact."""
    found = latest_readable(Path(directory))  # the one a resume would take
    if found is not None:
        check_resumable(found[0], found[1], fingerprint=fingerprint, world_size=world_size)


class TrainingStopped(RuntimeError):
    """A run that cannot go on truthfully (a non-finite loss, a full disk): the command prints the message,
    one line naming what happened and what is kept, and exits 1; the run directory stays, resumable."""


class DiskFull(TrainingStopped):
    pass


def _latest_name(directory: Path) -> str:
    latest = find_latest(directory)
    return f"the last complete checkpoint {latest} is intact" if latest else "no complete checkpoint was written yet"


class CheckpointManager:
    def __init__(self, directory: Path, runtime: Runtime, *, keep_last: int, fingerprint: dict):
        if keep_last < 1:
            raise ValueError(f"trainer.keep_last={keep_last} must be >= 1")
        self.directory, self.runtime, self.keep_last = Path(directory), runtime, keep_last
        self.fingerprint = fingerprint  # config fields that must match for an exact resume

    def save(
        self, step: int, *, networks: dict[str, TrainedNetwork], objective, loop_state: dict, data_state: dict
    ) -> Path:
        try:
            return self._save(
                step, networks=networks, objective=objective, loop_state=loop_state, data_state=data_state
            )
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            shutil.rmtree(self.directory / f".tmp-step_{step:08d}", ignore_errors=True)
            free = shutil.disk_usage(self.directory).free / 2**30
            raise DiskFull(
                f"disk full writing checkpoint step {step} to {self.directory} ({free:.2f} GiB free): "
                f"{_latest_name(self.directory)}; free space (or lower trainer.keep_last) and run again to resume"
            ) from None

    def _save(
        self, step: int, *, networks: dict[str, TrainedNetwork], objective, loop_state: dict, data_state: dict
    ) -> Path:
        final = self.directory / f"step_{step:08d}"
        tmp = self.directory / f".tmp-step_{step:08d}"
        if self.runtime.is_main:
            self.directory.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        self.runtime.barrier()
        for net in networks.values():
            net.save(tmp)
        rank_state = {"data": data_state, "objective": objective.state_dict(), "rng": rng_state()}
        rank_state = plain_state(rank_state, f"rank {self.runtime.rank} state")  # loadable with weights_only=True
        torch.save(rank_state, tmp / f"rank_{self.runtime.rank:05d}.pt")
        self.runtime.barrier()
        if self.runtime.is_main:
            meta = {
                "step": step,
                "loop": loop_state,
                "networks": {name: net.meta_state() for name, net in networks.items()},
                "world_size": self.runtime.world_size,
                "fingerprint": self.fingerprint,
            }
            torch.save(plain_state(meta, "meta"), tmp / "meta.pt")
            _fsync_dir(tmp)
            if final.exists():  # re-saving the same step (e.g. preemption right after a periodic save)
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.directory)
            self._prune()
        self.runtime.barrier()
        return final

    def _prune(self) -> None:
        """Keep the newest ``keep_last``. A checkpoint leaves by an atomic rename to ``.del-step_*`` first, so
        a kill mid-removal leaves a name the next prune removes, never a ``step_*`` folder without its
        meta.pt; such folders (and ``.tmp-`` / ``.del-`` leftovers) older than the newest save go too."""
        steps = sorted((p for p in self.directory.iterdir() if _STEP_DIR.match(p.name)), key=lambda p: p.name)
        done = [p for p in steps if (p / "meta.pt").is_file()]
        newest = done[-1].name if done else ""
        leaving = done[: max(0, len(done) - self.keep_last)]
        leaving += [p for p in steps if p not in done and p.name < newest]  # incomplete: a removal cut short
        for old in leaving:
            gone = old.with_name(".del-" + old.name)
            shutil.rmtree(gone, ignore_errors=True)  # an earlier removal of the same name, cut short
            os.replace(old, gone)
        _fsync_dir(self.directory)
        for stale in [*self.directory.glob(".del-step_*"), *self.directory.glob(".tmp-step_*")]:
            shutil.rmtree(stale, ignore_errors=True)

    def load(self, path: Path, *, networks: dict[str, TrainedNetwork], objective) -> tuple[int, dict, dict]:
        """Restore everything; returns (step, loop_state, data_state of this rank). A missing, truncated
        or garbage file is an :class:`UnreadableFile` (a ValueError naming it)."""
        path = Path(path)
        reason = None
        try:
            meta = read_meta(path)
            check_resumable(path, meta, fingerprint=self.fingerprint, world_size=self.runtime.world_size)
            if set(meta["networks"]) != set(networks):
                raise ValueError(
                    f"checkpoint {path} has networks {sorted(meta['networks'])}, this stage trains {sorted(networks)}"
                )
            # this rank's small file first: a damaged one is found before any network is touched
            rank_file = path / f"rank_{self.runtime.rank:05d}.pt"
            rank_state = read_torch_file(rank_file, old_format="a training checkpoint", fix=_RESAVE)
        except UnreadableFile as err:
            reason = str(err)
        # a rank that could not read its own file must not leave the others inside a sharded network's
        # collective load: every rank goes on, or every rank raises (trainer.sharded)
        agree_readable(self.runtime, reason)
        for name, net in networks.items():
            net.load(path)
            net.load_meta_state(meta["networks"][name])
        objective.load_state_dict(rank_state["objective"])
        load_rng_state(rank_state["rng"])
        return int(meta["step"]), meta["loop"], rank_state["data"]

    def resume_latest(self, *, networks: dict[str, TrainedNetwork], objective) -> tuple[Path, int, dict, dict] | None:
        """Load the newest checkpoint that can be read (see the module docstring): (path, step, loop_state,
        data_state), or None when the directory holds no complete checkpoint. Every rank skips the same
        ones (a file damaged on one rank's disk makes all ranks go back). A refusal that is not about a
        damaged file (another config, other networks, the pickle opt-in) is raised as is."""
        tried = []
        for path in complete_checkpoints(self.directory):
            reason = None
            try:
                step, loop_state, data_state = self.load(path, networks=networks, objective=objective)
            except UnreadableFile as err:  # networks half-loaded from it are overwritten by the older one
                reason = str(err)
            if self.runtime.any_flag(reason is not None):
                reason = reason or "another rank could not read its part"
                log.warning("checkpoint %s cannot be read (%s): resuming from the one before it", path, reason)
                tried.append(f"{path.name} ({reason})")
                continue
            return path, step, loop_state, data_state
        if tried:
            raise ValueError(
                f"no checkpoint in {self.directory} can be read: {'; '.join(tried)}; restore one or resume from "
                "scratch (trainer.resume=never, or a new run directory)"
            )
        return None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some filesystems do not support fsync on directories
        pass


class PreemptionHandler:
    """Context manager: SIGTERM/SIGUSR1/SIGUSR2 set ``requested`` instead of killing the process.

    USR1 is what slurm/teacher.sbatch asks for, TERM what torchrun forwards, USR2 what submitit
    sends before a time limit (handled here so the step finishes and a checkpoint is written).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.requested, self.signum = True, signum
        log.warning("received %s: saving a checkpoint and exiting at the end of this step", signal.Signals(signum).name)

    def __enter__(self) -> "PreemptionHandler":
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread (e.g. inside a test runner thread)
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)

    @staticmethod
    def requeue() -> None:
        """Ask Slurm to requeue this job (the sbatch template sets --requeue)."""
        job = os.environ.get("SLURM_JOB_ID")
        if not job:
            return
        try:
            subprocess.run(["scontrol", "requeue", job], check=False, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("scontrol requeue %s failed: %s", job, e)
