"""The drag benchmark's object measure (drag_metrics.object_track): the dragged object found in each frame from its
appearance, not by a point tracker. An object that moved as a blob along its path and one that is gone (inpainted
away) score alike on ObjMC, since a lost LK point is held at its start, but not on the object measure; the frozen
first frame keeps its object and misses the path; the table shows the columns beside ObjMC, floors included."""

import cv2
import numpy as np
import pytest

from trackstream.data.trackers import build_tracker
from trackstream.eval.drag_bench import floor_video, score
from trackstream.eval.drag_metrics import mask_centroid, object_track, objmc
from trackstream.eval.drag_scenes import make_scenes
from trackstream.eval.drag_table import FLOOR_ROWS, aggregate, table

TOKEN = 8  # the tiny student's token: 8 px at 64x64


@pytest.fixture(scope="module")
def scene():
    return next(s for s in make_scenes(8, seed=1) if s.name == "translate-animate-00")


def _blob(size=64, frames=9, step=(2, 1)):
    """A textured background with a 12-px two-colour square moved ``step`` px a frame, and the square's mask."""
    rng = np.random.default_rng(0)
    bg = cv2.resize(rng.integers(40, 200, (16, 16, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
    square = np.zeros((12, 12, 3), np.uint8)
    square[:, :6], square[:, 6:] = (250, 20, 20), (250, 230, 0)
    video = np.repeat(bg[None], frames, axis=0)
    for t in range(frames):
        x, y = 10 + step[0] * t, 12 + step[1] * t
        video[t, y : y + 12, x : x + 12] = square
    mask = np.zeros((size, size), bool)
    mask[12:24, 10:22] = True
    return video, mask, bg


def test_object_track_follows_a_moving_blob_and_sees_it_gone():
    video, mask, bg = _blob()
    pos, kept = object_track(video, mask)
    cx, cy = mask_centroid(mask)
    want = np.stack([cx + 2 * np.arange(9), cy + np.arange(9)], axis=1)
    assert np.allclose(pos, want) and np.all(kept == 1)
    gone = video.copy()
    gone[1:] = bg
    pos, kept = object_track(gone, mask)
    assert kept[0] == 1 and kept[1:].max() < 0.3, kept
    with pytest.raises(ValueError, match="mask"):
        object_track(video, np.zeros_like(mask))


def _gone(scene) -> np.ndarray:
    """The scene's first frame, then the object inpainted away (the background where it stood, no object)."""
    first = scene.gt_video[0]
    hole = cv2.dilate(scene.object_mask.astype(np.uint8), np.ones((3, 3), np.uint8))
    empty = cv2.inpaint(first, hole, 3, cv2.INPAINT_TELEA)
    return np.concatenate([first[None], np.repeat(empty[None], len(scene.gt_video) - 1, axis=0)])


@pytest.mark.slow
def test_a_blob_and_a_gone_object_score_alike_on_objmc_but_not_on_the_object_measure(scene):
    tracker = build_tracker("lk")
    blob = score(scene, scene.gt_video, scene.gt_video, tracker, TOKEN)
    gone = score(scene, _gone(scene), None, tracker, TOKEN)
    frozen = floor_video("frozen first frame", scene, len(scene.gt_video), None, None)
    still = score(scene, frozen, scene.gt_video, tracker, TOKEN)
    assert blob["object_error"] < 1.5 and blob["object_kept"] > 0.9
    assert gone["object_kept"] < 0.4 and gone["object_error"] > 3 * blob["object_error"] + 2
    # a point tracker holds the lost point at its start: the gone object scores as the still one on ObjMC
    assert still["object_kept"] > 0.9 and still["object_error"] > 5
    on_objmc = [objmc([[r["entity_pred"]]], [[r["entity_gt"]]]) for r in (gone, still)]
    assert on_objmc[0] == pytest.approx(on_objmc[1], abs=0.5) and on_objmc[0] > 5, on_objmc

    per_row = {"gone": [gone], "ground truth": [blob], "frozen first frame": [still]}
    agg = aggregate(per_row, "gone")
    assert agg["gone"]["object_kept"] == gone["object_kept"] and agg["ground truth"]["object_kept_by_kind"]
    md = table({"rows": agg})
    assert "| ObjMC ↓ | object err ↓ | object kept ↑ |" in md and "frozen first frame" in FLOOR_ROWS
    assert len({line.count("|") for line in md.split("\n\n")[0].splitlines()}) == 1
