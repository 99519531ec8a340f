"""Motion amplitude (eval.metrics.motion_amplitude): the generated tracks' displacement over the asked one, beside
every EPE. The ground truth makes about all of the asked motion, the frozen first frame none, a video that moves
half as far about half; the tables of ``python -m trackstream.eval``, the ScoreBook and make run's report carry it."""

import numpy as np
import pytest

from trackstream.data.synthetic import SyntheticWorld
from trackstream.data.trackers import build_tracker
from trackstream.eval.metrics import frozen_epe, motion_amplitude, track_motion
from trackstream.eval.sample import Sample
from trackstream.eval.scorebook import ScoreBook, flat_figures

T = 25
WORLD = SyntheticWorld(camera_pan_prob=1.0, num_sprites=(0, 0), pan_speed=(0.3, 0.3), num_frames=T)  # 64x64


def _slow(v: np.ndarray) -> np.ndarray:
    """The clip played at half speed (frame t shows frame t // 2): half the motion asked by its tracks."""
    return v[np.arange(len(v)) // 2]


def test_amplitude_is_a_ratio_of_summed_displacements():
    tracks = np.zeros((3, 2, 2))
    tracks[:, 0, 0] = [0, 2, 4]  # point 0 asked to move 2 then 4 px; point 1 asked to stay
    vis = np.ones((3, 2), bool)
    half = tracks * 0.5
    half[:, 1] = [[0, 0], [3, 0], [3, 0]]  # the point asked to stay drifts 3 px
    assert motion_amplitude(tracks, tracks, vis) == 1
    assert motion_amplitude(half, tracks, vis) == pytest.approx((1 + 2 + 3 + 3) / 6)  # sums, not per-entry ratios
    assert motion_amplitude(frozen_epe(tracks, vis)[2], tracks, vis) == 0
    assert np.isnan(motion_amplitude(np.zeros_like(tracks), np.zeros_like(tracks), vis))  # nothing asked
    with pytest.raises(ValueError, match="positions"):
        motion_amplitude(tracks[:, :1], tracks, vis)


def test_ground_truth_is_one_frozen_zero_and_a_slow_video_half():
    tracker = build_tracker("lk_plain")
    clip = WORLD.generate(1)
    gt, tracks, vis = clip["frames"], clip["tracks"], clip["visibility"]
    truth = track_motion(gt, tracks, vis, tracker).amplitude
    slow = track_motion(_slow(gt), tracks, vis, tracker).amplitude
    still = track_motion(np.broadcast_to(gt[:1], gt.shape), tracks, vis, tracker).amplitude
    assert 0.9 < truth < 1.1, truth
    assert 0.4 < slow < 0.65, slow
    assert still < 0.05, still


@pytest.mark.slow
def test_every_table_carries_it(tmp_path):
    from trackstream.eval.command_output import results_table
    from trackstream.eval.floors import reference_rows
    from trackstream.eval.harness import Extractors, score_rows
    from trackstream.pipeline.report_quality import floor_quality_cells, quality_cells, quality_header

    clips = [WORLD.generate(s) for s in (1, 2)]
    book = ScoreBook(build_tracker("lk_plain"), frozen_row="frozen_frame")
    for c in clips:
        book.add("ground_truth", c["frames"], c["frames"], c["tracks"], c["visibility"], quality=False)
        book.add("slow", _slow(c["frames"]), c["frames"], c["tracks"], c["visibility"])
        book.add_frozen(c["frames"], c["tracks"], c["visibility"])
    f = flat_figures(book.rows())
    assert f["motion_amplitude_frozen_frame"] == 0 and 0.9 < f["motion_amplitude_ground_truth"] < 1.1
    assert f["motion_amplitude_slow"] == pytest.approx(np.mean(f["amplitude_per_sample"]["slow"]))
    assert 0.4 < f["motion_amplitude_slow"] < 0.65

    samples = [Sample(str(i), c["frames"], c["tracks"], c["visibility"]) for i, c in enumerate(clips)]
    rows = {"slow": {s.id: _slow(s.frames) for s in samples}, **reference_rows(samples)}
    res = score_rows(
        rows, samples, metrics=["epe"], tracker=build_tracker("lk_plain"), extractors=Extractors(), progress=False
    )
    assert res["frozen"]["motion_amplitude"] == 0 and 0.9 < res["ground_truth"]["motion_amplitude"] < 1.1
    assert res["slow"]["motion_amplitude"] == pytest.approx(f["motion_amplitude_slow"])
    table = results_table(res, ["epe"])
    assert "motion amplitude (1 = as asked)" in table
    assert len({line.count("|") for line in table.splitlines()}) == 1

    head = quality_header()
    student = quality_cells({"student_motion_amplitude_with_tracks": 0.5}, "student")
    floor = floor_quality_cells({"motion_amplitude_frozen_frame": 0.0}, "frozen_frame")
    assert "motion amplitude (1 = as asked)" in head and len(head) == len(student) == len(floor)
    assert "0.500" in student and "0.000" in floor
