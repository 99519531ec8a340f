"""Training data for the stages: the synthetic world as a cached pool or as an endless stream.

* ``ClipPool``: ``pool_size`` synthetic clips rendered once (in ``num_workers`` processes) and
  kept as uint8 frames + tracks + captions. The CPU-sized stages use it: rendering a clip costs
  more than a tiny training step, so the codec fit and the teacher revisit a fixed pool, and the
  teacher trains on its latents, each encoded once by the frozen codec on its first use
  (``train.encoders.EncodedPool``).
* ``PoolStream``: the exactly resumable, rank-aware batch stream over a pool (a fresh
  permutation per epoch, random track subsets keyed by stream coordinates: ``data.batching``'s
  rules), ``state_dict() == {"position": ...}``.
* ``pool_size: null`` streams new clips forever through ``data.synthetic.SyntheticVideoDataset``
  (raw videos, encoded on the fly by the objective): the layout for real data.
Held-out evaluation clips (``heldout_clips``) come from a different seed namespace than any
training clip; with ``source: shards`` they are the first samples of ``eval_shards``, a held-out shard
set the user prepares, so that training-time figures and sample videos are of their data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from trackstream.data.batching import StreamLoader, derive_seed
from trackstream.data.placements import placement_from
from trackstream.data.synthetic import SyntheticVideoDataset, SyntheticWorld

__all__ = [
    "DataConfig",
    "make_world",
    "ClipPool",
    "heldout_clips",
    "check_heldout",
    "build_raw_stream",
]

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    source: str = "synthetic"
    height: int = 64
    width: int = 64
    num_frames: int = 17
    fps: int = 16
    world: dict = field(default_factory=dict)  # extra data.synthetic.SyntheticWorld fields (speeds, ...)
    grid_size: int = 16  # ground-truth tracks on a grid_size^2 grid
    num_tracks: list[int] | None = None  # [lo, hi] tracks drawn per training sample; null: all
    # where a sample's track start points lie and how many (data.placements.Placement's fields; {} its
    # defaults): a mixture of random points, grids of any spacing, clusters, the lattice and none. It
    # supersedes num_tracks. null: the world's grid (num_tracks of it), the one lattice every point starts on
    placement: Any = None
    batch_size: int = 8  # per rank, per micro-batch
    num_workers: int = 0
    seed: int = 0
    pool_size: int | None = 512  # synthetic: fixed pool (cached latents); null: endless stream; shards: not used
    eval_seed: int = 1_000_003
    eval_samples: int = 16
    shards: str | None = None  # source=shards: a folder (index.json), a glob or a brace pattern
    shuffle_buffer: int = 256  # source=shards
    # source=shards: held-out shards (same forms as shards) for the evaluation during training
    eval_shards: str | None = None

    def __post_init__(self) -> None:
        if self.source not in ("synthetic", "shards"):
            raise ValueError(f"data.source={self.source!r}; choose 'synthetic' or 'shards'")
        if self.source == "shards" and not self.shards:
            raise ValueError("data.source=shards needs data.shards (a shard folder, glob or brace pattern)")
        if self.eval_shards and self.source != "shards":
            raise ValueError(
                "data.eval_shards is read with data.source=shards only (the synthetic world renders its own "
                "held-out clips); unset it or set data.source=shards"
            )
        if self.source == "shards":
            # the pool caches rendered synthetic clips; shards stream from disk. An experiment written for the
            # synthetic world sets a pool, and data.source=shards on its line must not need a second word to undo it
            self.pool_size = None
        if self.height % 16 or self.width % 16:
            raise ValueError(
                f"data.height/width={self.height}x{self.width} must be multiples of 16 (codec 8 x patch 2)"
            )
        if self.num_frames < 5 or (self.num_frames - 1) % 4:
            raise ValueError(f"data.num_frames={self.num_frames} must be 1 + 4k with k >= 1")
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size={self.batch_size} must be >= 1")
        if not self.fps >= 1:
            raise ValueError(f"data.fps={self.fps} must be >= 1 (frames per second of the clips)")
        if self.grid_size < 1:
            raise ValueError(f"data.grid_size={self.grid_size} must be >= 1")
        check_clip_memory(self)
        if self.pool_size is not None and self.pool_size < self.batch_size:
            raise ValueError(f"data.pool_size={self.pool_size} must be >= data.batch_size={self.batch_size} (or null)")
        if self.num_tracks is not None and (
            len(self.num_tracks) != 2 or not 1 <= self.num_tracks[0] <= self.num_tracks[1]
        ):
            raise ValueError(f"data.num_tracks={self.num_tracks} must be [lo, hi] with 1 <= lo <= hi (or null)")
        placement_from(self.placement)  # its one-line errors, now
        known = set(SyntheticWorld.__dataclass_fields__) - {"height", "width", "num_frames", "fps", "grid_size"}
        unknown = set(self.world) - known
        if unknown:
            raise ValueError(f"data.world has unknown SyntheticWorld fields {sorted(unknown)}; known: {sorted(known)}")


def check_clip_memory(cfg: DataConfig, *, fraction: float = 0.5) -> None:
    """What the clips take at once (the synthetic world's pool as uint8 frames, a batch as float32) must fit
    in ``fraction`` of this machine's memory: an absurd size is refused here, not by the allocator mid-setup."""
    pixels = cfg.num_frames * cfg.height * cfg.width * 3
    pool = (cfg.pool_size or 0) if cfg.source == "synthetic" else 0
    need = pool * pixels + cfg.batch_size * pixels * 4
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX machine: nothing to compare with
        return
    if need > fraction * total:
        raise ValueError(
            f"data.num_frames={cfg.num_frames} x data.height={cfg.height} x data.width={cfg.width}: the clips held "
            f"at once ({f'a pool of {pool} and ' if pool else ''}a batch of {cfg.batch_size}) need "
            f"{need / 2**30:.1f} GiB, more than {fraction:.0%} of this machine's {total / 2**30:.0f} GiB; lower "
            "the size or the frames" + (" (or data.pool_size)" if pool else "")
        )


def make_world(cfg: DataConfig) -> SyntheticWorld:
    extra = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in cfg.world.items()}
    return SyntheticWorld(
        height=cfg.height, width=cfg.width, num_frames=cfg.num_frames, fps=cfg.fps, grid_size=cfg.grid_size, **extra
    )


class _Render(torch.utils.data.Dataset):
    def __init__(self, world: SyntheticWorld, seeds: list[int]):
        self.world, self.seeds = world, seeds

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, i: int) -> dict:
        return self.world.generate(self.seeds[i])


class _RenderedOnUse(Sequence):
    """``world.generate(seeds[i])`` rendered on first access and kept: a run of a few steps draws a few clips of
    its pool, not all of them (a 512-clip pool takes seconds to render)."""

    def __init__(self, world: SyntheticWorld, seeds: list[int]):
        self._world, self._seeds, self._done = world, list(seeds), {}

    def __len__(self) -> int:
        return len(self._seeds)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self._seeds))[i]  # negative indices; IndexError past the end
        if i not in self._done:
            self._done[i] = self._world.generate(self._seeds[i])
        return self._done[i]


class ClipPool:
    """Clips in memory: ``clips[i]`` = {frames uint8 [T,H,W,3], tracks [T,N,2], visibility [T,N], caption, meta}.

    ``world``: the synthetic world that rendered them; None for clips read from shards (``of``).
    """

    def __init__(self, world: SyntheticWorld, seeds: list[int], *, num_workers: int = 0):
        loader = torch.utils.data.DataLoader(
            _Render(world, seeds),
            batch_size=None,
            num_workers=num_workers,
            collate_fn=lambda x: x,
            prefetch_factor=4 if num_workers else None,
        )
        self.clips = list(loader)
        self.world: SyntheticWorld | None = world

    @classmethod
    def of(cls, clips: list[dict], *, world: SyntheticWorld | None = None) -> "ClipPool":
        """A pool of clips already in memory (nothing rendered)."""
        pool = cls.__new__(cls)
        pool.clips, pool.world = list(clips), world
        return pool

    def head(self, n: int) -> "ClipPool":
        """The first ``n`` clips (the same entries)."""
        return ClipPool.of(self.clips[:n], world=self.world)

    def __len__(self) -> int:
        return len(self.clips)

    def video(self, i: int) -> torch.Tensor:
        """[3, T, H, W] float32 in [-1, 1]."""
        frames = torch.from_numpy(self.clips[i]["frames"])  # [T, H, W, 3] uint8
        return frames.permute(3, 0, 1, 2).float().div(127.5).sub(1.0)

    def videos(self, idx: list[int]) -> torch.Tensor:
        return torch.stack([self.video(i) for i in idx])

    @classmethod
    def training(cls, cfg: DataConfig, *, num_workers: int | None = None) -> "ClipPool":
        """The training pool: ``cfg.pool_size`` clips; in this process (``num_workers`` 0) each is rendered on its
        first use, with loader workers all up front."""
        seeds = [derive_seed(cfg.seed, "clip", i) for i in range(cfg.pool_size)]
        workers = cfg.num_workers if num_workers is None else num_workers
        if workers:
            return cls(make_world(cfg), seeds, num_workers=workers)
        # the one value a DataLoader iterator draws from the global generator (its workers' base seed): a run
        # consumes the global stream as it did when the pool was rendered through a loader, so it trains the same
        torch.empty((), dtype=torch.int64).random_()
        pool, world = cls.__new__(cls), make_world(cfg)
        pool.clips, pool.world = _RenderedOnUse(world, seeds), world
        return pool


def heldout_clips(cfg: DataConfig) -> ClipPool:
    """``eval_samples`` held-out clips of ``num_frames`` frames.

    Synthetic: clips no training stream can draw (a separate seed namespace). Shards: the first
    ``eval_samples`` samples of ``eval_shards`` in ``list_shards`` order, then tar order, never
    shuffled, so every evaluation, rank and resumed job scores the same clips; each is decoded by
    ``decode_sample`` as the training loader decodes a shard sample (``ShardSamples.clip``).
    """
    if cfg.source == "shards":
        return _shard_heldout(cfg)
    seeds = [derive_seed(cfg.eval_seed, "heldout", i) for i in range(cfg.eval_samples)]
    # the loader draws its base seed from the global RNG: forked, so that a run trains the same with its
    # evaluation on or off (the teacher renders these before it fits its codec)
    with torch.random.fork_rng(devices=[]):
        return ClipPool(make_world(cfg), seeds, num_workers=cfg.num_workers)


def check_heldout(cfg: DataConfig, *, disable: str = "eval.enabled=false") -> None:
    """Refuse, before any step is trained, a training-time evaluation that has no held-out clips of the
    user's data: ``source=shards`` needs ``eval_shards`` holding at least ``eval_samples`` samples.
    ``disable``: the override that turns that evaluation off (named in the error)."""
    if cfg.source != "shards":
        return
    if not cfg.eval_shards:
        # the synthetic world's sprites would be scored instead, silently: refuse
        raise ValueError(
            "data.source=shards with data.eval_shards=null: the evaluation during training needs held-out "
            "clips of your data; run `python -m trackstream.data.prepare` on held-out videos and set "
            f"data.eval_shards=<that folder>, or set {disable}"
        )
    from trackstream.data.shards import list_shards

    available = sum(s.num_samples for s in list_shards(cfg.eval_shards))
    if available < cfg.eval_samples:
        raise ValueError(
            f"data.eval_shards={cfg.eval_shards} holds {available} samples but the evaluation reads "
            f"{cfg.eval_samples} (data.eval_samples / eval.periodic_clips): lower them or add held-out clips"
        )


def _shard_heldout(cfg: DataConfig) -> ClipPool:
    from trackstream.data.shard_samples import ShardSamples

    check_heldout(cfg)
    samples = ShardSamples(cfg.eval_shards, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width)
    clips = []
    for i in range(cfg.eval_samples):
        clip = samples.clip(i)
        # the evaluation seeds each clip's input-track subset by meta["seed"] (synthetic clips carry
        # theirs); a prepared video has none, so it gets the one its held-out index has in the seed namespace
        clip["meta"].setdefault("seed", derive_seed(cfg.eval_seed, "heldout", i))
        clip["meta"].setdefault("id", clip["meta"]["key"])
        clips.append(clip)
    return ClipPool.of(clips)


def build_raw_stream(cfg: DataConfig, *, rank: int, world_size: int) -> StreamLoader:
    """Endless stream of raw clips, encoded by the objective: new synthetic clips
    (``pool_size: null``) or webdataset shards written by ``data.prepare`` (``source: shards``)."""
    if cfg.source == "shards":
        from trackstream.data.loader import ShardStream

        ds = ShardStream(
            cfg.shards,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            shuffle_buffer=cfg.shuffle_buffer,
            num_tracks=tuple(cfg.num_tracks) if cfg.num_tracks else None,
            placement=placement_from(cfg.placement),
            num_frames=cfg.num_frames,
            height=cfg.height,
            width=cfg.width,
            rank=rank,
            world_size=world_size,
            num_workers=cfg.num_workers,
        )
        return StreamLoader(ds)
    ds = SyntheticVideoDataset(
        make_world(cfg),
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        num_tracks=tuple(cfg.num_tracks) if cfg.num_tracks else None,
        placement=placement_from(cfg.placement),
        rank=rank,
        world_size=world_size,
        num_workers=cfg.num_workers,
    )
    return StreamLoader(ds)
