"""Samples of a webdataset shard set by global index, read on demand (never the whole set in memory).

The distillation stages take their conditions (first frame, tracks, caption or cached text
embedding) from the shards ``data.prepare`` writes. Sample ``i`` is the ``j``-th sample (tar order)
of shard ``k`` in ``list_shards`` order, where ``i = offset(k) + j``: a pure function of the shard
set, so every rank and every resumed job sees the same sample under the same index.

Reads are sequential: consecutive indices stream through one open shard; a jump backwards (or to
another shard) reopens it. Only the members a condition needs are decoded: the first video frame,
the tracks of the first ``num_frames`` frames, the caption and, if present, the cached text
embedding. A sample whose video cannot be decoded is replaced by the next readable one (counted in
``skipped``), so a corrupt file costs one condition, not the job.

``clip(i)`` reads sample ``i`` whole (every frame, through ``decode_sample`` as the training loader
does) for the held-out evaluation during training (``data.clips.heldout_clips``); there a corrupt or
short clip is an error, since replacing or padding it would change what the figures measure.
"""

from __future__ import annotations

import logging
from typing import Iterator, Optional

import numpy as np

from trackstream.data.shards import ShardInfo, decode_sample, list_shards
from trackstream.data.video_io import VideoDecodeError, decode_video, tensor_to_frames

__all__ = ["ShardSamples"]

log = logging.getLogger(__name__)


class ShardSamples:
    """Random access by global index over a shard set (see the module docstring).

    ``get(i)`` -> {first_frame uint8 [H, W, 3], tracks float32 [T, N, 2], visibility bool [T, N],
    caption str, meta dict (with ``key`` and ``shard``), optionally text_emb [L, D] + text_len}.
    """

    def __init__(
        self,
        shards,
        *,
        num_frames: Optional[int],
        height: Optional[int] = None,
        width: Optional[int] = None,
        needed_by: Optional[str] = None,
    ):
        """``num_frames`` None: every frame a sample holds. ``needed_by``: what asks for ``num_frames`` (named
        when a clip is shorter; default data.num_frames)."""
        self.needed_by = needed_by or f"data.num_frames={num_frames}"
        self.shards: list[ShardInfo] = list_shards(shards)
        self.offsets = np.concatenate([[0], np.cumsum([s.num_samples for s in self.shards])]).astype(np.int64)
        self.num_frames, self.height, self.width = num_frames, height, width
        self.skipped: list[str] = []
        self._open: Optional[tuple[int, int, Iterator[dict]]] = None  # (shard, next position, iterator)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} outside the shard set of {len(self)} samples")
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return k, index - int(self.offsets[k])

    def _raw(self, index: int) -> dict:
        from trackstream.data.loader import read_tar_shard

        k, j = self.locate(index)
        if self._open is None or self._open[0] != k or self._open[1] > j:
            self._open = (k, 0, iter(read_tar_shard(self.shards[k].url)))
        shard, pos, it = self._open
        raw = None
        while pos <= j:
            raw = next(it, None)
            if raw is None:
                raise ValueError(
                    f"shard {self.shards[k].url} ends after {pos} samples; its index says "
                    f"{self.shards[k].num_samples}: rewrite the index (python -m trackstream.data.prepare)"
                )
            pos += 1
        self._open = (shard, pos, it)
        return raw

    def _decode(self, raw: dict, index: int) -> dict:
        url = self.shards[self.locate(index)[0]].url
        if "mp4" not in raw:
            raise ValueError(
                f"sample {raw.get('__key__')} of {url} has no video (cached latents only); the "
                "distillation conditions need the first frame: prepare the shards with videos"
            )
        sample = decode_sample(raw, decode_video_frames=False)
        if self.num_frames is not None and sample["tracks"].shape[0] < self.num_frames:
            raise ValueError(
                f"sample {raw['__key__']} of {url} has {sample['tracks'].shape[0]} frames of tracks; "
                f"{self.needed_by} needs at least {self.num_frames} (prepare the shards with num_frames="
                f"{self.num_frames} or more: stages at a shorter data.num_frames use the first frames)"
            )
        frames, _ = decode_video(bytes(raw["mp4"]), max_frames=1)  # [1, H, W, 3] uint8
        self._check_size(url, *frames.shape[1:3])
        sample["first_frame"] = frames[0]
        sample["tracks"] = sample["tracks"][: self.num_frames]
        sample["visibility"] = sample["visibility"][: self.num_frames]
        sample["meta"] = {**sample["meta"], "key": raw["__key__"], "shard": url}
        return sample

    def _check_size(self, url: str, H: int, W: int) -> None:
        # the loaders never resize: data.prepare wrote the shards at their training size
        if self.height is not None and (H, W) != (self.height, self.width):
            raise ValueError(
                f"{url}: videos are {H} high x {W} wide but data.height={self.height} data.width={self.width}; "
                "set data.height / data.width to the shards' size or prepare them at that size"
            )

    def clip(self, index: int) -> dict:
        """Sample ``index`` whole: {frames uint8 [T, H, W, 3], tracks float32 [T, N, 2], visibility bool
        [T, N], caption, meta (with ``key`` and ``shard``)}, T = ``num_frames``. A clip with fewer frames,
        no video or an undecodable one is a ValueError naming it (see the module docstring)."""
        raw = self._raw(index)
        url, key = self.shards[self.locate(index)[0]].url, raw.get("__key__")
        if "mp4" not in raw:
            raise ValueError(
                f"held-out sample {key} of {url} has no video (cached latents only): prepare the held-out "
                "shards with videos (python -m trackstream.data.prepare ... store_video=true)"
            )
        try:
            sample = decode_sample(raw, num_frames=self.num_frames)
        except VideoDecodeError as err:
            raise ValueError(f"held-out sample {key} of {url}: {err}; prepare it again or remove it") from err
        if self.num_frames is not None and sample["tracks"].shape[0] < self.num_frames:
            raise ValueError(
                f"held-out sample {key} of {url} has {sample['tracks'].shape[0]} frames but the evaluation "
                f"asks for {self.num_frames}: lower eval.num_frames (null: data.num_frames) or prepare longer "
                "held-out clips"
            )
        frames = tensor_to_frames(sample["video"])  # exact: the video was uint8 / 127.5 - 1
        self._check_size(url, *frames.shape[1:3])
        return {
            "frames": frames,
            "tracks": sample["tracks"].numpy(),
            "visibility": sample["visibility"].numpy(),
            "caption": sample["caption"],
            "meta": {**sample["meta"], "key": key, "shard": url},
        }

    def get(self, index: int) -> dict:
        """Sample ``index``; an undecodable video is replaced by the next readable sample (wrapping)."""
        for step in range(len(self)):
            i = (index + step) % len(self)
            raw = self._raw(i)
            try:
                return self._decode(raw, i)
            except VideoDecodeError as err:
                name = f"{self.shards[self.locate(i)[0]].url}:{raw.get('__key__')}"
                if name not in self.skipped:
                    self.skipped.append(name)
                    log.warning("skipped %s (%s); %d skipped so far", name, err, len(self.skipped))
        raise ValueError(f"no sample of {len(self.shards)} shard(s) has a decodable video")
