"""Webdataset loader: exact resume (workers, ranks, epochs), shuffling, track subsampling, collation."""

import numpy as np
import pytest
import torch

from trackstream.data.batching import StreamLoader, collate_samples, subsample_tracks
from trackstream.data.loader import ShardStream, buffer_shuffle_order
from trackstream.data.shards import decode_sample, encode_sample, list_shards, write_synthetic_shards
from trackstream.data.synthetic import SyntheticWorld

WORLD = SyntheticWorld(height=32, width=32, num_frames=5, grid_size=8)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(WORLD, str(folder), num_samples=26, samples_per_shard=4)  # 6 x 4 + 1 x 2
    return str(folder)


def _make(shards, **kw):
    args = dict(batch_size=2, seed=3, shuffle_buffer=5, num_tracks=(8, 30))
    args.update(kw)
    return ShardStream(shards, **args)


def _run(shards, *, n, stop_at=None, **kw):
    loader = StreamLoader(_make(shards, **kw))
    it, out = iter(loader), []
    for i in range(n):
        b = next(it)
        out.append(b)
        if stop_at is not None and i + 1 == stop_at:
            state = loader.state_dict()
            del it
            loader = StreamLoader(_make(shards, **kw))  # what a restarted job does
            loader.load_state_dict(state)
            it = iter(loader)
    return out


def _assert_same(a, b):
    assert [x["stream_index"] for x in a] == [x["stream_index"] for x in b]
    for x, y in zip(a, b):
        assert [m["key"] for m in x["meta"]] == [m["key"] for m in y["meta"]]
        for k in ("video", "tracks", "visibility", "track_mask"):
            assert torch.equal(x[k], y[k]), k


@pytest.fixture(scope="module")
def uninterrupted(shards):
    """num_workers -> the first 16 batches read without a stop: one run per loader, shared by its cases."""
    runs = {}

    def get(num_workers):
        if num_workers not in runs:
            runs[num_workers] = _run(shards, n=16, num_workers=num_workers)
        return runs[num_workers]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("num_workers,stop_at", [(0, 4), (0, 13), (2, 3), (2, 12), (2, 13)])
def test_resume_equals_uninterrupted(shards, uninterrupted, num_workers, stop_at):
    # 26 samples, batch 2: an epoch is 13 batches with one reader; with 2 workers the slots get
    # 14 and 12 samples, so 2 x 6 = 12 batches. stop_at 12/13 resumes at / after the boundary.
    assert _make(shards, num_workers=num_workers).plan(0).batches_per_slot * max(1, num_workers) == (
        13 if num_workers == 0 else 12
    )
    _assert_same(uninterrupted(num_workers), _run(shards, n=16, num_workers=num_workers, stop_at=stop_at))


@pytest.mark.slow
def test_epochs_cover_data_once_and_reshuffle(shards):
    ds = _make(shards)
    per_epoch = ds.plan(0).batches_per_slot
    batches = _run(shards, n=2 * per_epoch)
    keys = [[m["key"] for b in batches if b["epoch"] == e for m in b["meta"]] for e in (0, 1)]
    assert len(keys[0]) == len(set(keys[0])) == 2 * per_epoch  # no repeats within an epoch
    assert keys[0] != keys[1]  # a new order every epoch
    b = batches[0]
    assert b["video"].shape == (2, 3, 5, 32, 32) and b["tracks"].shape[:2] == (2, 5)
    n = b["track_mask"].sum(1)
    assert (n >= 8).all() and (n <= 30).all()
    # Subsampled tracks are only those visible at least once; padding is invisible.
    for i in range(2):
        assert b["visibility"][i][:, b["track_mask"][i]].any(0).all()
        assert not b["visibility"][i][:, ~b["track_mask"][i]].any()


@pytest.mark.slow
def test_ranks_split_each_epoch(shards):
    streams = [_make(shards, rank=r, world_size=2, num_workers=1) for r in range(2)]
    lengths = [s.plan(0).batches_per_slot for s in streams]
    assert lengths[0] == lengths[1] > 0  # DDP ranks take the same number of steps
    keys = []
    for s in streams:
        batches = list(_take(s._iter_batches(0, 0, 1), lengths[0]))
        keys.append({m["key"] for b in batches for m in b["meta"]})
    assert not keys[0] & keys[1]


def _take(it, n):
    for _, x in zip(range(n), it):
        yield x


def test_state_mismatch_is_refused(shards):
    state = _make(shards, num_workers=2).state_dict()
    with pytest.raises(ValueError, match="num_workers"):
        _make(shards, num_workers=1).load_state_dict(state)
    with pytest.raises(ValueError, match="shard"):
        _make(shards, rank=0, world_size=8, num_workers=1)


def test_buffer_shuffle_is_a_permutation():
    rng = np.random.default_rng(0)
    order = buffer_shuffle_order(100, 10, rng)
    assert sorted(order.tolist()) == list(range(100))
    assert order.tolist() != list(range(100))
    # A streaming buffer cannot emit an item long before it has been read.
    assert all(order[m] <= m + 10 for m in range(100))


def test_shard_roundtrip_and_listing(shards, tmp_path):
    infos = list_shards(shards)
    assert [i.num_samples for i in infos] == [4] * 6 + [2]
    # Without index.json the counts come from the tar headers.
    assert [i.num_samples for i in list_shards([i.url for i in infos])] == [4] * 6 + [2]
    import webdataset as wds

    raw = next(iter(wds.tarfile_to_samples()([{"url": infos[0].url}])))
    sample = decode_sample(raw)
    clip = WORLD.generate(0)
    assert sample["meta"]["id"] == "synthetic-0" and sample["caption"] == clip["caption"]
    np.testing.assert_array_equal(sample["tracks"].numpy(), clip["tracks"])
    frames = ((sample["video"].permute(1, 2, 3, 0) + 1) * 127.5).numpy()
    assert np.abs(frames - clip["frames"]).mean() < 6  # H.264 at crf 18 on a tiny, busy clip
    with pytest.raises(ValueError, match="video"):
        encode_sample("x", tracks=clip["tracks"], visibility=clip["visibility"], caption="c", meta={})


def test_collate_pads_tracks_and_text():
    def sample(n, length):
        return {
            "video": torch.zeros(3, 4, 8, 8),
            "tracks": torch.ones(4, n, 2),
            "visibility": torch.ones(4, n, dtype=torch.bool),
            "caption": "c",
            "meta": {},
            "text_emb": torch.ones(length, 6),
        }

    batch = collate_samples([sample(3, 5), sample(7, 2)])
    assert batch["tracks"].shape == (2, 4, 7, 2) and batch["track_mask"].sum(1).tolist() == [3, 7]
    assert not batch["visibility"][0, :, 3:].any() and batch["tracks"][0, :, 3:].abs().sum() == 0
    assert batch["text_emb"].shape == (2, 5, 6) and batch["text_len"].tolist() == [5, 2]
    assert batch["text_emb"][1, 2:].abs().sum() == 0
    with pytest.raises(ValueError, match="num_tracks"):
        subsample_tracks(sample(3, 1), (5, 2), np.random.default_rng(0))


def test_shards_of_another_size_or_too_short_are_one_line_errors_naming_the_sample(shards):
    """The loader never resizes or pads: a shard clip of another frame size or fewer frames than
    data.num_frames is refused by name, not stacked into a shape error inside collate."""
    assert next(iter(StreamLoader(_make(shards, height=32, width=32, num_frames=5))))["video"].shape[-2:] == (32, 32)
    with pytest.raises(
        ValueError, match=r"^sample \S+ of .*: videos are 32 high x 32 wide but data.height=64 data.width=64"
    ):
        next(iter(StreamLoader(_make(shards, height=64, width=64))))
    with pytest.raises(ValueError, match=r"^sample \S+ of .* has 5 frames; data.num_frames=9 needs that many"):
        next(iter(StreamLoader(_make(shards, num_frames=9))))


def test_more_tracks_than_the_shards_hold_is_refused_before_reading(shards):
    """data.num_tracks above what a shard clip holds (the world's 8 x 8 grid: 64) would be a silent cap at 64:
    refused in one line naming the field, the count held and the fixes, from the first shard's .npy header."""
    assert _make(shards, num_tracks=(8, 64)).num_tracks == (8, 64)
    with pytest.raises(
        ValueError,
        match=r"^data.num_tracks=\[1000, 2500\] asks for up to 2500 tracks, but the "
        r"shards hold 64 per clip \(.*\): lower it to at most 64 \(null: all of them\), or prepare",
    ):
        _make(shards, num_tracks=(1000, 2500))
    with pytest.raises(ValueError, match=r"^data.num_tracks=65 asks"):
        _make(shards, num_tracks=65)
