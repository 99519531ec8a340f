"""Motion transfer (``trackstream transfer``): a source clip's tracks, rescaled to the image, streamed by the
shipped student through ``trackstream generate``."""

import numpy as np
import pytest

from trackstream.data.framing import hold_tracks, plan_fit
from trackstream.data.synthetic import SyntheticWorld
from trackstream.data.tracker_base import grid_queries
from trackstream.data.trackers import build_tracker
from trackstream.data.video_io import decode_video, write_mp4
from trackstream.stream.transfer import source_tracks


def test_tracks_are_moved_as_the_source_is_fitted_to_the_stream():
    world = SyntheticWorld(height=64, width=64, num_frames=9, fps=16, grid_size=4)
    frames = world.generate(3)["frames"]
    at_64, vis = source_tracks(frames, build_tracker("lk"), grid=4, height=64, width=64)
    at_128, _ = source_tracks(frames, build_tracker("lk"), grid=4, height=128, width=32, fit="resize")
    assert at_64.shape == (9, 16, 2) and vis.shape == (9, 16)
    np.testing.assert_allclose(at_128[..., 0], (at_64[..., 0] + 0.5) * 0.5 - 0.5, atol=1e-4)  # half as wide
    np.testing.assert_allclose(at_128[..., 1], (at_64[..., 1] + 0.5) * 2.0 - 0.5, atol=1e-4)  # twice as tall
    # cropped to 32 wide x 64 high: the grid is the cropped frame's, found in the source's middle columns
    crop, cvis = source_tracks(frames, build_tracker("lk"), grid=4, height=64, width=32)
    np.testing.assert_allclose(crop[0, :4, 0], [3.5, 11.5, 19.5, 27.5], atol=1e-4)
    queries = grid_queries(64, 32, 4) + np.array([0, 16, 0], np.float32)  # source columns 16-47
    raw, raw_vis = build_tracker("lk").track(frames, queries)
    inside = (raw[..., 0] >= 15.5) & (raw[..., 0] <= 47.5)
    np.testing.assert_allclose(crop, hold_tracks(raw - [16, 0], (64, 32)), atol=1e-4)  # 16 columns cut on the left
    np.testing.assert_array_equal(cvis, raw_vis & inside)  # what left the cropped frame is invisible


class _Recording:
    """A tracker that keeps a copy of what it returned: the raw estimates, from the one tracking run."""

    def __init__(self, tracker):
        self.tracker, self.raw = tracker, None

    def track(self, frames, queries):
        tracks, vis = self.tracker.track(frames, queries)
        self.raw = np.array(tracks, copy=True)
        return tracks, vis


@pytest.mark.slow
def test_a_lost_points_estimate_is_held_where_generate_accepts_tracks():
    # on this clip the CPU tracker's estimate of a lost point wanders more than a frame size off (x = -70);
    # the transfer holds it within TRACK_MARGIN frame sizes, still outside the frame
    from trackstream.data.clips import DataConfig, make_world
    from trackstream.data.track_inputs import check_tracks

    frames = make_world(DataConfig(num_frames=57)).generate(3)["frames"]
    tracker = _Recording(build_tracker("lk"))
    tracks, vis = source_tracks(frames, tracker, grid=20, height=64, width=64)
    raw = tracker.raw
    far = (raw < -64) | (raw > 128)
    assert far.any()  # the case this guards
    check_tracks(tracks, vis, height=64, width=64)  # what generate asks of them
    assert ((tracks[far] < 0) | (tracks[far] > 63)).all()
    np.testing.assert_allclose(tracks[~far.any(-1)], np.asarray(raw)[~far.any(-1)], atol=1e-5)  # the rest as tracked


@pytest.mark.slow
def test_the_command_streams_the_source_motion_over_an_image(tmp_path, capsys):
    import cv2

    from trackstream.cli import main

    world = SyntheticWorld(height=64, width=64, num_frames=17, fps=16, grid_size=4, texture_scale=4.0)
    source = world.generate(7)["frames"]
    write_mp4(str(tmp_path / "source.mp4"), source, fps=16)
    wide = cv2.resize(world.generate(8)["frames"][0], (96, 64))  # another aspect than the student's 64x64
    cv2.imwrite(str(tmp_path / "first.png"), wide[:, :, ::-1])
    out = tmp_path / "out.mp4"
    code = main(
        ["transfer", "--source", str(tmp_path / "source.mp4"), "--image", str(tmp_path / "first.png"),
         "--grid", "4", "--out", str(out), "--device", "cpu", "--chunks", "2", "--prompt", "a ball"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "16 tracks by lk" in text and "wrote" in text  # no cotracker here: the CPU tracker
    tracks = np.load(tmp_path / "out.tracks.npy")
    assert tracks.shape == (17, 16, 2) and np.load(tmp_path / "out.visibility.npy").shape == (17, 16)
    assert "fitting the image 96x64 -> 64x64 by crop" in text  # generate's fit
    # written in the image's pixels: fitted back as generate fits them, frame 0 is the grid of the streamed frame
    fitted, _ = plan_fit(64, 96, height=64, width=64).tracks(tracks)
    np.testing.assert_allclose(fitted[0], grid_queries(64, 64, 4)[:, 1:], atol=1e-3)
    video, _ = decode_video(str(out))
    assert video.shape[1:3] == (64, 64) and len(video) > 1
    assert main(["transfer", "--source", str(tmp_path / "nope.mp4"), "--image", str(tmp_path / "first.png"),
                 "--out", str(tmp_path / "x.mp4")]) == 2  # fmt: skip


def test_generate_options_are_listed_and_a_typo_fails_before_tracking(tmp_path, capsys):
    from trackstream.stream.transfer import main

    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert all(flag in help_text for flag in ("--student", "--prompt-schedule", "--chunks", "--compile", "--grid"))
    # a misspelt generate option: the usage error now, no tracks written (the source need not even exist)
    with pytest.raises(SystemExit) as e:
        main(
            ["--source", str(tmp_path / "s.mp4"), "--image", "x.png", "--out", str(tmp_path / "o.mp4"), "--promt", "a"]
        )
    assert e.value.code == 2 and "--promt" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
