"""Track start points where people put them: exact tracks of any frame-0 point, the training mixture, and the
evaluation's named placements."""

import cv2
import numpy as np
import pytest
import torch

from trackstream.data.batching import collate_samples
from trackstream.data.clips import DataConfig
from trackstream.data.placements import (
    EVAL_PLACEMENTS,
    KINDS,
    Placement,
    demo_grid,
    eval_points,
    max_points,
    place_tracks,
    placement_from,
    scoring_points,
)
from trackstream.data.pool_stream import PoolStream, collate_pool, draw_tracks
from trackstream.data.synthetic import SyntheticVideoDataset, SyntheticWorld
from trackstream.data.tracker_base import grid_queries

NONE = {"none": 1.0, "random": 0, "grid": 0, "cluster": 0, "lattice": 0}
OBJECTS = SyntheticWorld(num_frames=25, object_clips=0.5, objects={"camera_pan_prob": 0.0, "num_sprites": (2, 3)})


def _colour(frame, pts):
    blurred = cv2.GaussianBlur(frame.astype(np.float32), (3, 3), 0.7)
    m = pts.astype(np.float32).reshape(-1, 1, 2)
    return cv2.remap(blurred, m[..., 0], m[..., 1], cv2.INTER_LINEAR).reshape(len(pts), 3)


@pytest.mark.slow
def test_scene_tracks_equal_the_grid_and_follow_any_point():
    """The scene's tracks of the grid are the clip's own; of random sub-pixel points they keep their frame-0 colour
    where visible (a 2-px shift of them does not), so they are exact, not a lattice's."""
    rng = np.random.default_rng(0)
    errs, off = [], []
    for seed in range(4):
        clip = OBJECTS.generate(seed)
        tr, vis = clip["scene"].tracks(grid_queries(64, 64, 16)[:, 1:])
        assert np.array_equal(tr, clip["tracks"]) and np.array_equal(vis, clip["visibility"])
        pts = rng.uniform(2, 61, size=(200, 2)).astype(np.float32)
        tr, vis = clip["scene"].tracks(pts)
        assert tr.shape == (25, 200, 2) and vis[0].all() and np.array_equal(tr[0], pts)
        ref = _colour(clip["frames"][0], pts)
        for t in range(1, 25):
            k = vis[t]
            errs.append(np.abs(_colour(clip["frames"][t], tr[t, k]) - ref[k]).mean())
            off.append(np.abs(_colour(clip["frames"][t], tr[t, k] + 2.0) - ref[k]).mean())
    assert np.mean(errs) < 0.5 * np.mean(off), (np.mean(errs), np.mean(off))


@pytest.mark.slow
def test_mixture_draws_every_kind_off_the_lattice_and_replays():
    clip = OBJECTS.generate(1)
    p = Placement()
    seen, counts = set(), []
    lattice = {tuple(x) for x in np.round(grid_queries(64, 64, 16)[:, 1:], 3)}
    off_lattice = 0
    for i in range(120):
        a = place_tracks(clip, p, np.random.default_rng(i))
        b = place_tracks(clip, p, np.random.default_rng(i))
        assert torch.equal(a["tracks"], b["tracks"]) and a["placement"] == b["placement"]
        seen.add(a["placement"])
        n = a["tracks"].shape[1]
        counts.append(n)
        assert n <= max_points(p, height=64, width=64, lattice=256)
        assert a["visibility"].shape == a["tracks"].shape[:2] and (n == 0 or a["visibility"].any(0).all())
        if a["placement"] in ("random", "grid", "cluster"):
            off_lattice += sum(tuple(x) not in lattice for x in np.round(a["tracks"][0].numpy(), 3)) > 0.9 * n
    assert seen == set(KINDS)
    assert min(counts) == 0 and max(counts) >= 100  # none .. dense
    assert off_lattice >= 60


def test_shards_without_a_scene_draw_subsets_of_their_grid():
    clip = OBJECTS.sample(2)
    clip.pop("scene")
    p = Placement(none=0.5, random=0.5, grid=0, cluster=0, lattice=0, count=(3, 9))
    kinds = set()
    for i in range(20):
        s = place_tracks(clip, p, np.random.default_rng(i))
        kinds.add(s["placement"])
        n = s["tracks"].shape[1]
        assert n == 0 or 3 <= n <= 9
        rows = {tuple(x) for x in clip["tracks"][0].numpy().round(4)}
        assert all(tuple(x) in rows for x in s["tracks"][0].numpy().round(4))
    assert kinds == {"none", "random"}


@pytest.mark.slow
def test_batches_with_the_mixture_collate_and_resume_exactly():
    ds = SyntheticVideoDataset(OBJECTS, batch_size=3, seed=4, placement=Placement())
    b1 = ds.make_batch(5)
    b2 = SyntheticVideoDataset(OBJECTS, batch_size=3, seed=4, placement=Placement()).make_batch(5)
    assert torch.equal(b1["tracks"], b2["tracks"]) and torch.equal(b1["track_mask"], b2["track_mask"])
    pool = [OBJECTS.generate(s) for s in range(4)]
    entries = [
        {**c, "tracks": torch.from_numpy(c["tracks"]), "visibility": torch.from_numpy(c["visibility"])} for c in pool
    ]
    drawn = [draw_tracks(e, g, seed=0, num_tracks=[64, 192], placement=NONE) for g, e in enumerate(entries)]
    batch = collate_pool(entries, drawn)
    assert batch["tracks"].shape[2] == 0  # a whole batch with no tracks collates
    none = collate_samples([place_tracks(pool[0], placement_from(NONE), np.random.default_rng(0))] * 2)
    assert none["track_mask"].shape == (2, 0)


@pytest.mark.slow
def test_the_teachers_pool_stream_draws_in_workers_and_gives_the_same_batches_and_resumes():
    """The pool stream's track draws in loader processes (data.num_workers, as the teacher's training_data makes
    them): the batches equal the ones drawn in this process, in order, and a stream resumed at a position (mid
    round of the workers) continues with the batches the first one gave there."""
    pool = [OBJECTS.generate(s) for s in range(6)]
    entries = [
        {**c, "tracks": torch.from_numpy(c["tracks"]), "visibility": torch.from_numpy(c["visibility"])} for c in pool
    ]

    def stream(workers, position=0):
        def draw(idx, gids):
            return [draw_tracks(pool[i], g, seed=3, num_tracks=None, placement=Placement()) for i, g in zip(idx, gids)]

        s = PoolStream(
            6,
            batch_size=4,
            seed=3,
            make_batch=lambda i, g, d: collate_pool([entries[j] for j in i], d),
            draw=draw,
            num_workers=workers,
            rank=0,
            world_size=1,
        )
        s.load_state_dict({**s.state_dict(), "position": position})
        return s

    def take(s, n):
        it = iter(s)
        out = [next(it) for _ in range(n)]
        it.close()  # ends the loader's workers
        return out

    here = take(stream(0), 5)
    for a, b in zip(here, take(stream(2), 5)):
        assert a["stream_index"] == b["stream_index"]
        for key in ("tracks", "visibility", "track_mask"):
            assert torch.equal(a[key], b[key]), key
        assert a["caption"] == b["caption"]
    # the draws are the ones made from the encoded entries in this process
    idx, gids = stream(0).batch_ids(1)
    drawn = [draw_tracks(entries[i], g, seed=3, num_tracks=None, placement=Placement()) for i, g in zip(idx, gids)]
    one = collate_pool([entries[i] for i in idx], drawn)
    assert torch.equal(one["tracks"], here[1]["tracks"]) and torch.equal(one["track_mask"], here[1]["track_mask"])
    resumed = take(stream(2, position=3), 2)
    assert [b["stream_index"] for b in resumed] == [3, 4]
    assert torch.equal(resumed[0]["tracks"], here[3]["tracks"]) and torch.equal(resumed[1]["tracks"], here[4]["tracks"])
    with pytest.raises(ValueError, match="num_workers=2 needs a draw"):
        PoolStream(6, batch_size=4, seed=3, make_batch=lambda i, g: {}, num_workers=2)


def test_placement_config_errors_name_the_field():
    with pytest.raises(ValueError, match="data.placement has unknown fields"):
        placement_from({"grids": 1.0})
    with pytest.raises(ValueError, match=r"data.placement.count"):
        Placement(count=(0, 5))
    with pytest.raises(ValueError, match="data.placement shares"):
        Placement(random=0, grid=0, cluster=0, lattice=0, none=0)
    with pytest.raises(ValueError, match="data.placement"):
        DataConfig(placement={"jitter": 2.0})


def test_eval_placements_are_fixed_per_clip_and_as_named():
    kw = dict(height=64, width=64, grid_size=16, num_tracks=128)
    for name in EVAL_PLACEMENTS[1:]:
        a, b = eval_points(name, seed=3, **kw), eval_points(name, seed=3, **kw)
        assert np.array_equal(a, b)
        assert ((a >= 0) & (a <= 63)).all()
    assert len(eval_points("none", seed=3, **kw)) == 0
    assert len(eval_points("sparse", seed=3, **kw)) == 24
    assert len(eval_points("random", seed=3, **kw)) == 128
    np.testing.assert_allclose(demo_grid(64, 64)[:2], [[3.5, 3.5], [11.5, 3.5]])  # what demo.js lays
    shifted = eval_points("shifted", seed=3, **kw)
    assert np.allclose((shifted - 3.5) % 4, 0)  # the lattice (1.5 + 4k) moved by half its spacing
    s1, s2 = scoring_points(seed=3, height=64, width=64), scoring_points(seed=4, height=64, width=64)
    assert s1.shape == (64, 2) and not np.array_equal(s1, s2)
    assert not np.array_equal(s1, eval_points("random", seed=3, **kw)[:64])
    with pytest.raises(ValueError, match="eval placement"):
        eval_points("diagonal", seed=0, **kw)
