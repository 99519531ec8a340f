"""The exactly resumable batch stream over a clip pool (``PoolStream``) and the teacher's batches of it.

A pool batch has two parts. The input tracks of each sample (a draw of ``data.placement``: new start points and
their exact tracks from the clip's scene, or a subset of its grid) need only the raw clip and the CPU; the
encoded latents and text need the encoders, which live in the training process. ``PoolStream`` runs the first
part (``draw``) in ``num_workers`` loader processes ahead of the consumer, so that on a GPU the next batch's draws
are made while the current step trains, and assembles the batch (``make_batch``) in this process. Batch ``k`` is a
pure function of ``k`` (``data.batching``'s rules), so the batches do not depend on the number of workers and a
resumed stream replays them exactly.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from trackstream.data.batching import (
    ResumableBatchStream,
    StreamLoader,
    collate_samples,
    derive_seed,
    dist_info,
    subsample_tracks,
)
from trackstream.data.placements import Placement, place_tracks, placement_from

__all__ = ["PoolStream", "draw_tracks", "collate_pool"]


class PoolStream:
    """Resumable stream of batches over ``size`` pool entries.

    Sample j of batch k on rank r is global sample g = (k * B + j) * W + r; epoch e = g // size
    visits the pool in the permutation seeded by (seed, "epoch", e). Without ``draw``, ``make_batch(indices,
    gids)`` builds the batch from pool indices and global sample ids (for per-sample randomness). With ``draw``,
    ``draw(indices, gids)`` is the batch's CPU-only part, made in ``num_workers`` loader processes (0: here), and
    ``make_batch(indices, gids, drawn)`` assembles the batch from it here.
    """

    def __init__(
        self,
        size: int,
        *,
        batch_size: int,
        seed: int,
        make_batch: Callable[..., dict],
        rank: int | None = None,
        world_size: int | None = None,
        draw: Callable[[list[int], list[int]], Any] | None = None,
        num_workers: int = 0,
    ):
        if num_workers and draw is None:
            raise ValueError(f"num_workers={num_workers} needs a draw: without one the whole batch is made here")
        self.size, self.batch_size, self.seed, self.make_batch = size, batch_size, seed, make_batch
        self.draw, self.num_workers = draw, num_workers
        self.rank, self.world_size = dist_info(rank, world_size)
        self.position = 0
        self._perm_cache: tuple[int, np.ndarray] | None = None

    def _index(self, g: int) -> int:
        epoch, pos = divmod(g, self.size)
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            perm = np.random.default_rng(derive_seed(self.seed, "epoch", epoch)).permutation(self.size)
            self._perm_cache = (epoch, perm)
        return int(self._perm_cache[1][pos])

    def batch_ids(self, k: int) -> tuple[list[int], list[int]]:
        """Batch ``k``'s pool indices and global sample ids."""
        gids = [(k * self.batch_size + j) * self.world_size + self.rank for j in range(self.batch_size)]
        return [self._index(g) for g in gids], gids

    def _parts(self):
        """(k, indices, gids, drawn) for k = position, position + 1, ...; drawn is None without a draw."""
        if self.num_workers:  # the loader's stream is endless, as the one below
            for item in StreamLoader(_PoolDraws(self)):
                yield item["stream_index"], item["indices"], item["gids"], item["drawn"]
        k = self.position
        while True:
            idx, gids = self.batch_ids(k)
            yield k, idx, gids, (None if self.draw is None else self.draw(idx, gids))
            k += 1

    def __iter__(self):
        for k, idx, gids, drawn in self._parts():
            batch = self.make_batch(idx, gids) if self.draw is None else self.make_batch(idx, gids, drawn)
            batch["stream_index"] = k
            self.position += 1
            yield batch

    def state_dict(self) -> dict:
        return {
            "position": self.position,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "rank": self.rank,
            "world_size": self.world_size,
            "size": self.size,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "batch_size", "rank", "world_size", "size"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"cannot resume the data stream exactly: saved {key}={state[key]}, "
                    f"this run has {key}={getattr(self, key)}"
                )
        self.position = int(state["position"])


class _PoolDraws(ResumableBatchStream):
    """A pool stream's draws from its position on, batch k in worker k mod W (``data.batching``'s rotation)."""

    def __init__(self, stream: PoolStream):
        super().__init__(
            batch_size=stream.batch_size,
            seed=stream.seed,
            rank=stream.rank,
            world_size=stream.world_size,
            num_workers=stream.num_workers,
        )
        self.stream, self.position = stream, stream.position

    def _iter_batches(self, start: int, worker_id: int, num_workers: int):
        k = start + worker_id
        while True:
            idx, gids = self.stream.batch_ids(k)
            yield {"stream_index": k, "indices": idx, "gids": gids, "drawn": self.stream.draw(idx, gids)}
            k += num_workers


def draw_tracks(
    sample: dict, gid: int, *, seed: int, num_tracks: list[int] | None, placement: Placement | dict | None = None
) -> dict:
    """One sample's input tracks, keyed by its global sample id (replays exactly on resume): a draw of
    ``placement`` (new start points from the sample's ``scene``), else a random subset of ``num_tracks`` of its
    grid, else all. {tracks, visibility} (and the placement kind drawn)."""
    placement = placement_from(placement)
    rng = np.random.default_rng(derive_seed(seed, "tracks", gid))
    if placement is not None:
        sample = place_tracks(sample, placement, rng)
    elif num_tracks is not None:
        sample = subsample_tracks(sample, tuple(num_tracks), rng)
    return {key: sample[key] for key in ("tracks", "visibility", "placement") if key in sample}


def collate_pool(entries: list[dict], drawn: list[dict]) -> dict:
    """Collate pool entries (each with caption and cached tensors) with their drawn tracks."""
    samples = [{**entry, **d} for entry, d in zip(entries, drawn, strict=True)]
    batch = collate_samples(samples)
    for key in ("image", "image_features"):
        if all(key in s for s in samples):
            batch[key] = torch.stack([s[key] for s in samples])
    return batch
