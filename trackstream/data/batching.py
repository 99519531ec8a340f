"""Exactly resumable batch streams for multi-worker, multi-rank training, plus track subsampling and collation.

Design (why it is exact):
* A stream is an infinite sequence of *batches* numbered 0, 1, 2, ... per rank; batch i is a pure
  function of (seed, rank, i) and of the stream's data. Datasets build whole batches themselves and
  the DataLoader runs with batch_size=None, so no sample ever crosses a worker boundary.
* With W DataLoader workers, physical worker p produces batches start + p, start + p + W, ... . The
  DataLoader hands out worker outputs round-robin starting at worker 0, so the consumer receives
  start, start + 1, start + 2, ... in order; `start` is the saved position, which is why the
  rotation also holds right after a resume that stops mid-round.
* The position is counted on the consumer side (`StreamLoader`): the dataset object in the main
  process never sees worker-side progress. Each batch carries `stream_index`, which StreamLoader
  checks against the expected position, so an ordering bug fails loudly instead of silently.
* All randomness (shuffles, track subsets) comes from `derive_seed(seed, ...)` keyed by stream
  coordinates, never from global RNG state, so it replays identically after a restart.
* Loader workers ignore the signals that stop a training (``WORKER_IGNORES``): a preemption signal sent to
  every process of a job (Slurm), to a process group (``kill -- -PGID``) or relayed by torchrun (which
  signals each rank's whole process group) would otherwise kill them, and the training would fail on
  its next batch instead of saving. The main process ends its workers itself when it stops reading.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from abc import abstractmethod

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


def derive_seed(*parts) -> int:
    """Stable 63-bit seed from ints/strings (Python's hash() is salted per process, so not that)."""
    digest = hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size) from the arguments, else torch.distributed, else RANK/WORLD_SIZE env vars."""
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    return rank, world_size


class ResumableBatchStream(IterableDataset):
    """Base class: an infinite, deterministic stream of batch dicts with a saved position.

    Subclasses implement `_iter_batches(start, worker_id, num_workers)` yielding the batches
    start + worker_id, start + worker_id + num_workers, ... each with batch["stream_index"] set.
    `workers_define_order = True` marks streams whose content depends on num_workers (then a resume
    must use the same num_workers, which load_state_dict checks).
    """

    workers_define_order = False

    def __init__(self, *, batch_size: int, seed: int, rank: int | None, world_size: int | None, num_workers: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.rank, self.world_size = dist_info(rank, world_size)
        self.position = 0  # batches delivered to the consumer on this rank

    def state_dict(self) -> dict:
        return {
            "position": self.position,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_workers": self.num_workers,
        }

    def load_state_dict(self, state: dict) -> None:
        fields = ["seed", "batch_size", "rank", "world_size"] + (["num_workers"] if self.workers_define_order else [])
        for f in fields:
            if state[f] != getattr(self, f):
                raise ValueError(
                    f"cannot resume this stream exactly: saved {f}={state[f]} but this run has {f}={getattr(self, f)}; "
                    f"use the same {f} as the saved run (or start the stream from scratch)"
                )
        self.position = int(state["position"])

    def __iter__(self):
        info = get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.workers_define_order and num_workers != max(1, self.num_workers):
            raise ValueError(
                f"{type(self).__name__} was built for num_workers={self.num_workers} but runs under "
                f"{num_workers} worker(s); iterate it through StreamLoader or pass the same num_workers"
            )
        yield from self._iter_batches(self.position, worker_id, num_workers)

    @abstractmethod
    def _iter_batches(self, start: int, worker_id: int, num_workers: int): ...


class StreamLoader:
    """DataLoader over a ResumableBatchStream that tracks the consumed position.

    `state_dict()` after consuming k batches restores a loader whose next batch is batch k.
    """

    def __init__(
        self,
        dataset: ResumableBatchStream,
        *,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
        multiprocessing_context: str | None = None,
    ):
        self.dataset = dataset
        self.pin_memory, self.prefetch_factor, self.mp_context = pin_memory, prefetch_factor, multiprocessing_context

    def __iter__(self):
        nw = self.dataset.num_workers
        loader = DataLoader(
            self.dataset,
            batch_size=None,  # datasets emit whole batches (see module docstring)
            num_workers=nw,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor if nw > 0 else None,
            multiprocessing_context=self.mp_context if nw > 0 else None,
            worker_init_fn=ignore_stop_signals if nw > 0 else None,
        )
        with _stop_signals_held():  # the workers start here
            batches = iter(loader)
        try:
            for batch in batches:
                assert batch["stream_index"] == self.dataset.position, (
                    f"stream out of order: got batch {batch['stream_index']}, expected {self.dataset.position}"
                )
                self.dataset.position += 1
                yield batch
        finally:  # also when the consumer closes this generator (the training loop does when it stops)
            _end_workers(batches)

    def state_dict(self) -> dict:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.dataset.load_state_dict(state)


# the signals a training saves on (trainer.checkpoint.PreemptionHandler) and Ctrl-C: the main process handles them
WORKER_IGNORES = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


@contextlib.contextmanager
def _stop_signals_held():
    """Hold (block) ``WORKER_IGNORES`` while the loader forks its workers: a worker inherits the mask, so a
    signal sent before its init has set them ignored waits instead of killing it; here they arrive on release."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_IGNORES)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A loader worker's ``worker_init_fn``: ignore ``WORKER_IGNORES`` (those pending since the fork included)."""
    for sig in WORKER_IGNORES:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_IGNORES)


def _end_workers(batches) -> None:
    """Stop a DataLoader iterator's workers. They ignore SIGTERM, which is what the DataLoader's own shutdown
    falls back on for a worker that does not leave when asked: one still alive after it is killed here."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # absent without workers
    if shutdown is not None:
        shutdown()
    for worker in getattr(batches, "_workers", ()):
        if worker.is_alive():
            worker.kill()
            worker.join()


def subsample_tracks(sample: dict, num_tracks: int | tuple[int, int], rng: np.random.Generator) -> dict:
    """Keep a random subset of tracks (count drawn uniformly in [lo, hi]) among tracks visible at least once.

    Tracks never visible carry no signal for the track head, so they are never drawn; if fewer
    candidates exist than requested, all candidates are kept. Order follows the original indices.
    """
    lo, hi = (num_tracks, num_tracks) if isinstance(num_tracks, int) else tuple(num_tracks)
    if not 1 <= lo <= hi:
        raise ValueError(f"num_tracks must be an int >= 1 or (lo, hi) with 1 <= lo <= hi, got {num_tracks}")
    vis = sample["visibility"]
    candidates = np.nonzero(np.asarray(vis).any(axis=0))[0]
    n = int(rng.integers(lo, hi + 1))
    keep = candidates if n >= len(candidates) else np.sort(rng.choice(candidates, size=n, replace=False))
    idx = torch.from_numpy(keep.astype(np.int64))
    out = dict(sample)
    out["tracks"] = torch.as_tensor(sample["tracks"])[:, idx]
    out["visibility"] = torch.as_tensor(vis)[:, idx]
    return out


def collate_samples(samples: list[dict]) -> dict:
    """Batch schema samples. Tracks are padded to the batch's largest N with `track_mask` [B, N]
    (True = real track); text embeddings are padded to the longest with `text_len` [B]."""
    if not samples:
        raise ValueError("collate_samples needs at least one sample")
    frames = {tuple(torch.as_tensor(s["tracks"]).shape[:1]) for s in samples}
    if len(frames) != 1:
        raise ValueError(f"all samples in a batch need the same number of frames, got {sorted(frames)}")
    b = len(samples)
    out: dict = {"caption": [s["caption"] for s in samples], "meta": [s["meta"] for s in samples]}
    for key in ("video", "latents"):
        if all(key in s for s in samples):
            out[key] = torch.stack([torch.as_tensor(s[key]) for s in samples])  # [B, ...]
    n_max = max(int(torch.as_tensor(s["tracks"]).shape[1]) for s in samples)
    t = next(iter(frames))[0]
    tracks = torch.zeros(b, t, n_max, 2)
    vis = torch.zeros(b, t, n_max, dtype=torch.bool)
    mask = torch.zeros(b, n_max, dtype=torch.bool)
    for i, s in enumerate(samples):
        tr = torch.as_tensor(s["tracks"])
        n = tr.shape[1]
        tracks[i, :, :n], vis[i, :, :n], mask[i, :n] = tr, torch.as_tensor(s["visibility"]), True
    out.update(tracks=tracks, visibility=vis, track_mask=mask)
    if all("text_emb" in s for s in samples):
        embs = [torch.as_tensor(s["text_emb"]) for s in samples]
        lens = [int(s.get("text_len", e.shape[0])) for s, e in zip(samples, embs)]
        text = torch.zeros(b, max(lens), embs[0].shape[-1], dtype=embs[0].dtype)
        for i, (e, n) in enumerate(zip(embs, lens)):
            text[i, :n] = e[:n]
        out.update(text_emb=text, text_len=torch.tensor(lens, dtype=torch.long))
    return out
