"""The conditions of the ODE pairs (``train.pair_data.obtain_ode_pairs``): the first frame,
tracks and caption of each training clip, from the synthetic world or from ``data.prepare``'s shards, encoded
with the teacher's conditioner (codec, text encoder, image features)."""

from __future__ import annotations

import torch

from trackstream.data.batching import derive_seed
from trackstream.data.clips import ClipPool, DataConfig, make_world
from trackstream.models.conditioner import Conditioner

__all__ = ["PairConditions"]


def _pair_tracks(items: list[dict], seeds: list[int], data: DataConfig) -> dict:
    """Tracks [B, T, N, 2] + visibility [B, T, N] of the pair conditions: as the teacher's training drew them,
    a draw of ``data.placement`` per item (new start points from a synthetic clip's scene) or a random subset
    of ``data.num_tracks`` (seeded by ``seeds``), padded with invisible points to the most a draw can give (one
    N for all); invisible points write nothing."""
    import numpy as np

    from trackstream.data.batching import subsample_tracks
    from trackstream.data.placements import max_points, place_tracks, placement_from

    as_tensor = lambda v: v if torch.is_tensor(v) else torch.from_numpy(np.asarray(v))  # noqa: E731
    placement, num_tracks = placement_from(data.placement), data.num_tracks
    if placement is None and not num_tracks:
        return {
            "tracks": torch.stack([as_tensor(c["tracks"]).float() for c in items]),
            "visibility": torch.stack([as_tensor(c["visibility"]).bool() for c in items]),
        }
    if placement is not None:
        subs = [place_tracks(c, placement, np.random.default_rng(seed)) for c, seed in zip(items, seeds)]
        lattice = max(as_tensor(c["tracks"]).shape[1] for c in items)
        n = max_points(placement, height=data.height, width=data.width, lattice=lattice)
    else:
        subs = [subsample_tracks(c, tuple(num_tracks), np.random.default_rng(seed)) for c, seed in zip(items, seeds)]
        n = int(num_tracks[1])  # one N for every batch: the shards stack batches
    T = subs[0]["tracks"].shape[0]
    tracks, vis = torch.zeros(len(subs), T, n, 2), torch.zeros(len(subs), T, n, dtype=torch.bool)
    for b, s in enumerate(subs):
        k = s["tracks"].shape[1]
        tracks[b, :, :k], vis[b, :, :k] = as_tensor(s["tracks"]), as_tensor(s["visibility"]).bool()
    return {"tracks": tracks, "visibility": vis}


def _cached_text(items: list[dict], dim: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The shards' pre-computed text embeddings [B, L, D] (zero-padded) + lengths, if every item has one."""
    if not items or not all("text_emb" in c for c in items):
        return None
    embs = [torch.as_tensor(c["text_emb"]).float() for c in items]
    if embs[0].shape[-1] != dim:
        raise ValueError(
            f"the shards' cached text embeddings have {embs[0].shape[-1]} dims but the teacher's text "
            f"encoder gives {dim}: re-prepare them with the teacher's model.text_encoder"
        )
    L = max(e.shape[0] for e in embs)
    text = torch.stack([torch.nn.functional.pad(e, (0, 0, 0, L - e.shape[0])) for e in embs])
    return text, torch.tensor([e.shape[0] for e in embs])


class PairConditions:
    """``conditions(indices)`` for ``generate_ode_pairs``: condition ``i`` is the first frame, tracks and
    caption of training clip ``i % n``, from the synthetic world (the teacher's training clips) or,
    with ``data.source=shards``, streamed from the shards ``data.prepare`` wrote (their cached text
    embeddings when present, else the text encoder; only the first video frame is decoded)."""

    def __init__(
        self, data: DataConfig, conditioner: Conditioner, *, count: int, text_dim: int, needed_by: str | None = None
    ):
        self.data, self.conditioner, self.text_dim = data, conditioner, text_dim
        if data.source == "shards":
            from trackstream.data.shard_samples import ShardSamples

            self.samples = ShardSamples(
                data.shards,
                num_frames=data.num_frames,
                height=data.height,
                width=data.width,
                needed_by=needed_by,
            )
            self.n = min(count, len(self.samples))
            self.pool = None
        else:
            seeds = [derive_seed(data.seed, "clip", i) for i in range(count)]  # the teacher's training clips
            self.pool = ClipPool(make_world(data), seeds, num_workers=data.num_workers)
            self.n = count

    def describe(self) -> str:
        return (
            f"{self.n} training clips of the synthetic world"
            if self.pool is not None
            else f"{self.n} samples of {len(self.samples.shards)} shard(s) in {self.data.shards}"
        )

    def _items(self, idx: list[int]) -> tuple[list[dict], list[int]]:
        if self.pool is not None:
            clips = [self.pool.clips[i % self.n] for i in idx]
            items = [{**c, "first_frame": c["frames"][0]} for c in clips]
            return items, [int(c["meta"]["seed"]) for c in clips]
        items = [self.samples.get(i % self.n) for i in idx]
        return items, [derive_seed(self.data.seed, "pair-tracks", i % self.n) for i in idx]

    def __call__(self, idx: list[int]) -> dict:
        import numpy as np

        items, seeds = self._items(idx)
        first_u8 = torch.stack(
            [torch.from_numpy(np.ascontiguousarray(c["first_frame"])).permute(2, 0, 1) for c in items]
        )  # [B, 3, H, W] uint8
        first = first_u8.float().div(127.5).sub(1.0)
        captions = [c["caption"] for c in items]
        cached = _cached_text(items, self.text_dim)
        text, lens = cached if cached is not None else self.conditioner.text(captions)
        features = self.conditioner.image_features(first)
        return {
            **({} if features is None else {"image_features": features}),
            "image": self.conditioner.image(first, num_frames=self.data.num_frames),
            "image_latent": self.conditioner.first_latent(first),
            "first_frame": first_u8,
            **_pair_tracks(items, seeds, self.data),
            "text_emb": text,
            "text_len": lens,
            "caption": captions,
            "seeds": seeds,
        }
