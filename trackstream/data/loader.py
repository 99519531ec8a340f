"""Webdataset training loader with a shuffle buffer, track subsampling and exact resume.

Design (see trackstream/data/batching.py for the worker/rank ordering and the consumer-side position):
* Slots. A rank with W DataLoader workers has W slots; the job has world_size * W slots. Each
  epoch the shard list is permuted with derive_seed(seed, "shards", epoch) and dealt to slots
  greedily by sample count (largest deficit first), so slots get near-equal work from whole shards:
  every worker reads only its own shards, exactly once (plain webdataset I/O cost).
* Equal length. Every slot yields the same number of batches per epoch, L_e = min over all slots
  of floor(samples / batch_size), so all ranks take the same number of steps (DDP needs that) and
  the DataLoader's round-robin over workers never meets an exhausted worker. Samples beyond L_e
  batches are left out of that epoch only; the next permutation deals different shards.
* Shuffle buffer, replayable. The slot's shards form one stream; a buffer of `shuffle_buffer`
  samples emits a random element per incoming one (webdataset's scheme). The emission order is
  first computed on sample *indices* (counts are known from index.json), which costs nothing, and
  the reader then streams the tars and releases samples in that order. Resuming at batch l of an
  epoch therefore skips the first l * batch_size emissions without decoding them, and skips whole
  shards none of whose samples are still to come.
* Track subsampling uses derive_seed(seed, "tracks", rank, batch index, item): replayable too.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from trackstream.data.batching import ResumableBatchStream, collate_samples, derive_seed, subsample_tracks
from trackstream.data.placements import Placement, place_tracks
from trackstream.data.shards import DamagedSample, ShardInfo, decode_sample, list_shards, tracks_per_clip


@dataclass
class EpochPlan:
    slot_shards: list[list[int]]  # per global slot: shard indices in reading order
    batches_per_slot: int


def buffer_shuffle_order(n: int, buffer_size: int, rng: np.random.Generator) -> np.ndarray:
    """Emission order of a streaming shuffle buffer over items 0..n-1 (a permutation of range(n)).

    Fill the buffer; then each new item replaces a random buffered one, which is emitted; at the
    end the remaining buffer is emitted in random order.
    """
    if buffer_size <= 1:
        return np.arange(n)
    out = np.empty(n, dtype=np.int64)
    buf: list[int] = []
    m = 0
    for item in range(n):
        if len(buf) < buffer_size:
            buf.append(item)
            continue
        j = int(rng.integers(buffer_size))
        out[m], buf[j] = buf[j], item
        m += 1
    tail = rng.permutation(len(buf))
    out[m:] = np.asarray(buf, dtype=np.int64)[tail]
    return out


def check_track_count(shards, num_tracks: int | tuple[int, int] | None) -> None:
    """A track count the shards cannot give is a user error, not a silent cap at what each clip holds
    (read from the first shard's tracks header)."""
    if num_tracks is None:
        return
    shards = list_shards(shards)
    hi = num_tracks if isinstance(num_tracks, int) else num_tracks[1]
    held = tracks_per_clip(shards[0])
    if held is not None and hi > held:
        asked = num_tracks if isinstance(num_tracks, int) else list(num_tracks)
        raise ValueError(
            f"data.num_tracks={asked} asks for up to {hi} tracks, but the shards hold {held} per clip "
            f"({shards[0].url}): lower it to at most {held} (null: all of them), or prepare the videos with a "
            "larger grid_size (tracks = grid_size²)"
        )


class ShardStream(ResumableBatchStream):
    """Resumable batch stream over webdataset shards (see the module docstring).

    shards: anything `data.shards.list_shards` accepts. num_tracks: None keeps all tracks;
    an int or (lo, hi) subsamples per sample (pad + `track_mask` in the batch).
    """

    workers_define_order = True

    def __init__(
        self,
        shards,
        *,
        batch_size: int,
        seed: int = 0,
        shuffle_buffer: int = 256,
        num_tracks: int | tuple[int, int] | None = None,
        placement: Placement | None = None,
        num_frames: int | None = None,
        decode_video: bool = True,
        height: int | None = None,
        width: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        num_workers: int = 0,
    ):
        super().__init__(batch_size=batch_size, seed=seed, rank=rank, world_size=world_size, num_workers=num_workers)
        self.shards: list[ShardInfo] = list_shards(shards)
        self.shuffle_buffer, self.num_tracks, self.placement = shuffle_buffer, num_tracks, placement
        self.num_frames, self.decode_video = num_frames, decode_video
        self.size = (height, width) if height and width else None  # the loaders never resize: checked instead
        self.slots_per_rank = max(1, num_workers)
        total_slots = self.world_size * self.slots_per_rank
        if len(self.shards) < total_slots:
            raise ValueError(
                f"{len(self.shards)} shard(s) cannot feed {self.world_size} process(es) x data.num_workers="
                f"{self.slots_per_rank} = {total_slots} readers: lower data.num_workers, or write more, smaller "
                "shards (trackstream prepare ... samples_per_shard=N)"
            )
        if placement is None:  # a placement draws its own counts
            check_track_count(self.shards, num_tracks)
        self._plans: dict[int, EpochPlan] = {}
        if self.plan(0).batches_per_slot == 0:
            total = sum(s.num_samples for s in self.shards)
            least = min(sum(self.shards[i].num_samples for i in slot) for slot in self.plan(0).slot_shards)
            fix = f"set data.batch_size={least} or lower, " if least else ""
            raise ValueError(
                f"data.batch_size={batch_size} is larger than the {least} samples one reader gets per epoch "
                f"(data.shards holds {total} in {len(self.shards)} shard(s), read by {total_slots} reader(s)): "
                f"{fix}lower data.num_workers, or prepare more videos"
            )

    # -- planning (pure functions of counts, seed and layout) --------------------------------------

    def plan(self, epoch: int) -> EpochPlan:
        if epoch not in self._plans:
            total_slots = self.world_size * self.slots_per_rank
            order = np.random.default_rng(derive_seed(self.seed, "shards", epoch)).permutation(len(self.shards))
            load = np.zeros(total_slots, dtype=np.int64)
            slot_shards: list[list[int]] = [[] for _ in range(total_slots)]
            for idx in order:
                s = int(np.argmin(load))  # ties -> lowest slot: deterministic
                slot_shards[s].append(int(idx))
                load[s] += self.shards[idx].num_samples
            self._plans[epoch] = EpochPlan(slot_shards, int(load.min()) // self.batch_size)
        return self._plans[epoch]

    def locate(self, index: int) -> tuple[int, int]:
        """Rank-local batch index -> (epoch, batch index within the epoch)."""
        epoch = 0
        while True:
            per_epoch = self.plan(epoch).batches_per_slot * self.slots_per_rank
            if index < per_epoch:
                return epoch, index
            index, epoch = index - per_epoch, epoch + 1

    # -- iteration ---------------------------------------------------------------------------------

    def _iter_batches(self, start: int, worker_id: int, num_workers: int):
        w = self.slots_per_rank
        assert num_workers == w
        first = start + worker_id  # this worker's first batch; it then serves every w-th batch
        epoch, g = self.locate(first)
        slot = first % w  # epochs hold a multiple of w batches, so the slot is fixed per worker
        local = g // w
        for e in itertools.count(epoch):
            yield from self._slot_epoch(e, slot, local, first_index=first)
            first += (self.plan(e).batches_per_slot - local) * w
            local = 0

    def _slot_epoch(self, epoch: int, slot: int, start_local: int, *, first_index: int):
        plan = self.plan(epoch)
        gslot = self.rank * self.slots_per_rank + slot
        shard_ids = plan.slot_shards[gslot]
        counts = [self.shards[i].num_samples for i in shard_ids]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        rng = np.random.default_rng(derive_seed(self.seed, "shuffle", epoch, gslot))
        order = buffer_shuffle_order(int(offsets[-1]), self.shuffle_buffer, rng)
        b = self.batch_size
        wanted = order[start_local * b : plan.batches_per_slot * b]  # stream indices, emission order
        if len(wanted) == 0:
            return
        needed = np.zeros(int(offsets[-1]), dtype=bool)
        needed[wanted] = True
        pending: dict[int, dict] = {}
        emit = 0
        batch: list[dict] = []
        index = first_index
        for k, sid in enumerate(shard_ids):
            lo, hi = int(offsets[k]), int(offsets[k + 1])
            if not needed[lo:hi].any():
                continue  # nothing still to come from this shard: do not even open it
            for j, raw in enumerate(read_tar_shard(self.shards[sid].url)):
                if j >= hi - lo:
                    raise RuntimeError(
                        f"shard {self.shards[sid].url} holds more samples than its index says ({hi - lo})"
                    )
                if needed[lo + j]:
                    pending[lo + j] = raw
                while emit < len(wanted) and int(wanted[emit]) in pending:
                    batch.append(self._prepare(pending.pop(int(wanted[emit])), index, len(batch)))
                    emit += 1
                    if len(batch) == b:
                        out = collate_samples(batch)
                        out["stream_index"], out["epoch"] = index, epoch
                        yield out
                        batch, index = [], index + self.slots_per_rank
            if j + 1 != hi - lo:
                raise RuntimeError(f"shard {self.shards[sid].url} holds {j + 1} samples, its index says {hi - lo}")
        assert emit == len(wanted) and not batch, "shuffle replay lost samples"

    def _prepare(self, raw: dict, batch_index: int, item: int) -> dict:
        sample = decode_sample(raw, decode_video_frames=self.decode_video, num_frames=self.num_frames)
        sample["meta"]["key"] = raw["__key__"]
        where = f"sample {raw['__key__']} of {raw.get('__url__', 'its shard')}"
        if self.num_frames and sample["tracks"].shape[0] < self.num_frames:  # else a collate error, later
            raise ValueError(
                f"{where} has {sample['tracks'].shape[0]} frames; data.num_frames={self.num_frames} needs that "
                "many (prepare longer clips or lower data.num_frames)"
            )
        video = sample.get("video")  # [3, T, H, W]
        if self.size and video is not None and tuple(video.shape[-2:]) != self.size:
            raise ValueError(
                f"{where}: videos are {video.shape[-2]} high x {video.shape[-1]} wide but data.height={self.size[0]} "
                f"data.width={self.size[1]}; set data.height / data.width to the shards' size or prepare them at that "
                "size"
            )
        rng = np.random.default_rng(derive_seed(self.seed, "tracks", self.rank, batch_index, item))
        if self.placement is not None:  # a shard holds its tracker's grid: subsets of it (data.placements)
            return place_tracks(sample, self.placement, rng)
        if self.num_tracks is not None:
            sample = subsample_tracks(sample, self.num_tracks, rng)
        return sample


def read_tar_shard(url: str):
    """Raw samples of one shard in tar order (webdataset's tar expander: local paths, pipe:, http); a tar that
    is truncated or not a tar is a ``DamagedSample`` naming the shard and the last sample read whole."""
    import tarfile

    import webdataset as wds

    last = None
    try:
        for raw in wds.tarfile_to_samples()([{"url": url}]):
            last = raw.get("__key__")
            yield raw
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        if isinstance(err, DamagedSample):
            raise
        after = f"after sample {last}" if last else "before its first sample"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DamagedSample(
            f"shard {url} is damaged {after} ({reason}); re-run `trackstream prepare` on its source (it rewrites "
            "the shard) or remove the shard"
        ) from None
