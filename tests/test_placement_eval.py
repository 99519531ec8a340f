"""The evaluation's placements: every video of a clip scored on the same points, a mosaic caught, shards served."""

import cv2
import numpy as np
import pytest

from trackstream.data.placements import EVAL_PLACEMENTS
from trackstream.data.synthetic import SyntheticWorld
from trackstream.data.trackers import build_tracker
from trackstream.eval.placements import (
    blockiness,
    evaluate_placements,
    placement_table,
    placement_tracks,
    scoring_tracks,
    sprite_masks,
)

WORLD = SyntheticWorld(
    num_frames=13, camera_pan_prob=1.0, object_clips=0.5, objects={"camera_pan_prob": 0.0, "num_sprites": (2, 3)}
)


@pytest.fixture(scope="module")
def clips():
    return [WORLD.generate(s) for s in range(3)]


def mosaic(frames: np.ndarray, token: int = 4) -> np.ndarray:
    """Each token's cell filled with its mean colour: the block mosaic a lattice-bound network paints."""
    T, H, W, _ = frames.shape
    small = frames.reshape(T, H // token, token, W // token, token, 3).mean(axis=(2, 4))
    return np.repeat(np.repeat(small, token, 1), token, 2).round().astype(np.uint8)


def test_blockiness_catches_a_mosaic_that_texture_energy_keeps(clips):
    gt = clips[0]["frames"]
    assert 0.8 < blockiness(gt, 4) < 1.25
    assert blockiness(mosaic(gt), 4) > 3 * blockiness(gt, 4)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 1.0) for f in gt])
    assert blockiness(blurred, 4) < 1.25  # blur is not a mosaic


def test_placements_lay_their_points_and_score_on_fixed_ones(clips):
    sizes = {}
    for name in EVAL_PLACEMENTS:
        tr, vi, counts = placement_tracks(clips, name, grid_size=16, num_tracks=128)
        sizes[name] = counts
        assert tr.shape[:2] == (3, 13) and vi.shape == tr.shape[:3]
    assert sizes["none"] == [0, 0, 0] and sizes["demo"] == [64, 64, 64] and sizes["sparse"] == [24, 24, 24]
    a, b = scoring_tracks(clips[0]), scoring_tracks(clips[0])
    assert np.array_equal(a[0], b[0]) and a[0].shape == (13, 64, 2)
    # a clip read from shards has no scene: grid subsets, and placements that need new points are refused
    shard = {k: v for k, v in clips[1].items() if k != "scene"}
    tr, _, counts = placement_tracks([shard], "sparse", grid_size=16, num_tracks=128)
    assert counts == [24]
    with pytest.raises(ValueError, match="needs exact tracks of new points"):
        placement_tracks([shard], "shifted", grid_size=16, num_tracks=128)
    assert scoring_tracks(shard)[0].shape == (13, 64, 2)


@pytest.mark.slow
def test_the_table_ranks_a_faithful_a_frozen_and_a_mosaic_model(clips):
    """The ground truth copied scores at the tracker's floor in every placement; the frozen frame at 1; another
    clip's motion well above the floor; the ground truth as a token mosaic follows the motion but fails the
    blockiness and objects-kept columns."""

    def copy(batch, tr, vi, seed):
        return [c["frames"] for c in batch]

    def still(batch, tr, vi, seed):
        return [np.broadcast_to(c["frames"][:1], c["frames"].shape).copy() for c in batch]

    def blocks(batch, tr, vi, seed):
        return [mosaic(c["frames"]) for c in batch]

    fig = evaluate_placements(
        {"copy": copy, "still": still, "mosaic": blocks},
        clips,
        placements=("lattice", "demo", "none"),
        grid_size=16,
        num_tracks=128,
        tracker=build_tracker("lk_plain"),
        token=4,
        keep=1,
    )
    floor = fig["floors"]["ground_truth"]["epe_over_frozen"]
    assert floor < 0.6 and fig["floors"]["frozen"]["epe_over_frozen"] == 1
    # frame 0 moved as another clip moves: a plausible motion, not this clip's
    assert fig["floors"]["other_motion"]["epe_over_frozen"] > 2 * floor
    for p in ("lattice", "demo", "none"):
        assert fig["models"]["copy"][p]["epe_over_frozen"] == pytest.approx(floor)
        assert fig["models"]["still"][p]["epe_over_frozen"] == pytest.approx(1.0, abs=0.05)
        assert fig["models"]["mosaic"][p]["blockiness_ratio"] > 2.5
        assert fig["models"]["copy"][p]["blockiness_ratio"] == pytest.approx(1.0)
    if any(sprite_masks(c) for c in clips):
        assert fig["models"]["mosaic"]["demo"]["object_kept"] < fig["models"]["copy"]["demo"]["object_kept"]
    assert fig["videos"]["copy"]["demo"].shape == (1, 13, 64, 64, 3)
    table = placement_table({k: v for k, v in fig.items() if k != "videos"})
    assert table.count("\n") == 2 + 3 + 9 - 1 and "| mosaic | demo |" in table and "another clip's motion" in table


@pytest.mark.slow
def test_a_model_with_given_videos_only_has_those_rows(clips):
    videos = [c["frames"] for c in clips]
    fig = evaluate_placements(
        {"teacher": None},
        clips,
        placements=("lattice", "shifted", "none"),
        grid_size=16,
        num_tracks=None,
        tracker=build_tracker("lk_plain"),
        token=4,
        given={"teacher": {"lattice": videos, "none": videos}},
    )
    assert set(fig["models"]["teacher"]) == {"lattice", "none"}
    assert "| teacher | shifted |" not in placement_table(fig)
