"""``trackstream inputs``: generate's four input files from a shard sample (as prepare wrote it) or from a clip and
a tracker (fitted to the student's frame by the crop rule, tracked as prepare tracks), and the documented lines
through to the stream they feed."""

import cv2
import numpy as np
import pytest
from test_docs_run import documented_line, run_documented

from trackstream.cli import main
from trackstream.data.shard_samples import ShardSamples
from trackstream.data.shards import write_synthetic_shards
from trackstream.data.synthetic import SyntheticWorld
from trackstream.data.track_inputs import load_tracks
from trackstream.data.tracker_base import grid_queries
from trackstream.data.video_io import write_mp4

WORLD = SyntheticWorld(height=64, width=64, num_frames=17, fps=16, grid_size=4)


def _shards(folder):
    write_synthetic_shards(WORLD, str(folder), num_samples=5, samples_per_shard=2)
    return folder


def test_a_shard_sample_becomes_generates_inputs(tmp_path, capsys):
    shards = _shards(tmp_path / "shards")
    assert main(["inputs", "--shards", str(shards), "--index", "3", "--out", str(tmp_path / "in")]) == 0
    sample = ShardSamples(shards, num_frames=None).get(3)  # shard 1's second sample
    first = cv2.imread(str(tmp_path / "in" / "first.png"))[:, :, ::-1]
    np.testing.assert_array_equal(first, sample["first_frame"])
    tracks, vis = load_tracks(tmp_path / "in" / "tracks.npy", tmp_path / "in" / "visibility.npy", height=64, width=64)
    np.testing.assert_allclose(tracks, sample["tracks"].numpy().clip(-64, 128))
    np.testing.assert_array_equal(vis, sample["visibility"].numpy())
    assert tracks.shape == (17, 16, 2) and (tmp_path / "in" / "caption.txt").read_text() == sample["caption"]
    out = capsys.readouterr().out
    assert "sample 3 (" in out and "64x64, 17 frames x 16 tracks" in out and "trackstream generate --student " in out
    assert (
        main(["inputs", "--shards", str(shards), "--index", "1", "--frames", "9", "--out", str(tmp_path / "in")]) == 0
    )
    assert np.load(tmp_path / "in" / "tracks.npy").shape == (9, 16, 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, says",
    [
        (["--index", "5"], "error: --index 5: the shard set"),
        (["--frames", "30"], "needs at least 30"),
    ],
)
def test_a_sample_that_is_not_there_is_one_line(tmp_path, capsys, args, says):
    shards = _shards(tmp_path / "shards")
    assert main(["inputs", "--shards", str(shards), *args, "--out", str(tmp_path / "in")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not (tmp_path / "in").exists()


def test_a_clip_is_fitted_to_the_students_frame_and_tracked(tmp_path, capsys):
    clip = WORLD.generate(4)
    wide = np.stack([cv2.resize(f, (128, 64)) for f in clip["frames"]])  # 2:1, the student streams 64x64
    write_mp4(str(tmp_path / "clip.mp4"), wide, fps=16)
    (tmp_path / "clip.txt").write_text("a ball rolls\n")  # the sidecar caption, as prepare reads it
    argv = ["inputs", "--video", str(tmp_path / "clip.mp4"), "--tracker", "lk", "--grid", "4", "--out"]
    assert main([*argv, str(tmp_path / "in")]) == 0
    first = cv2.imread(str(tmp_path / "in" / "first.png"))
    assert first.shape == (64, 64, 3)
    tracks, vis = load_tracks(tmp_path / "in" / "tracks.npy", tmp_path / "in" / "visibility.npy", height=64, width=64)
    assert tracks.shape == (17, 16, 2) and vis[0].all()
    np.testing.assert_allclose(tracks[0], grid_queries(64, 64, 4)[:, 1:], atol=1e-4)  # the fitted frame's grid
    assert (tmp_path / "in" / "caption.txt").read_text() == "a ball rolls"
    out = capsys.readouterr().out
    assert "fitted 128x64 -> 64x64 by crop" in out and "tracked by lk" in out, out
    argv[2] = str(tmp_path / "missing.mp4")
    assert main([*argv, str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and err[0].startswith(f"error: --video {tmp_path / 'missing.mp4'}")
        and not (tmp_path / "nope").exists()
    )


@pytest.mark.slow  # three commands launched as a reader types them (~18 s on 2 shared cores)
def test_the_documented_lines_make_inputs_that_generate_streams(tmp_path):
    _shards(tmp_path / "shards")
    write_mp4(str(tmp_path / "clip.mp4"), WORLD.generate(6)["frames"], fps=16)
    run_documented(documented_line("docs/control.md", "trackstream inputs", "--shards shards"), tmp_path)
    assert (tmp_path / "in" / "first.png").is_file() and (tmp_path / "in" / "caption.txt").read_text()
    run_documented(documented_line("docs/control.md", "trackstream inputs", "--video clip.mp4"), tmp_path)
    assert np.load(tmp_path / "in" / "tracks.npy").shape == (17, 256, 2)
    line = documented_line("docs/control.md", "--image in/first.png")
    run_documented(line, tmp_path, args=("--chunks", "2", "--device", "cpu"))
    assert (tmp_path / "out.mp4").stat().st_size > 0
