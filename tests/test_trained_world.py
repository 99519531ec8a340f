"""What a student's records say it was trained on (``stream.trained_world``), and the one line ``generate`` prints
for a student that knows only the synthetic world: read from the run config beside the export (a release
folder's) or one level up (a run's stage), never from a fixed path; nothing is said of weights whose records name
real videos or no world at all. The demo's page shows the same notice after an upload (tests/test_demo.py)."""

import shutil
from pathlib import Path

import pytest

from trackstream.models.network import Network
from trackstream.stream.generate import _photo_note
from trackstream.stream.trained_world import photo_notice, trained_world

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "assets" / "tiny-student" / "student"


def _export(root: Path, data: str, *, in_stage: bool) -> Path:
    """An export folder with a run config holding ``data`` (YAML), as a release folder or a run's stage lays it."""
    student = root / ("dmd/export/student" if in_stage else "release/student")
    shutil.copytree(SHIPPED, student)  # a real export: trained_world opens it as a network
    (student.parents[1] if in_stage else student.parent).joinpath("config.yaml").write_text(f"data:\n{data}")
    return student


def test_the_shipped_student_records_the_synthetic_world_and_generate_says_so(capsys):
    world = trained_world(SHIPPED)
    assert world.synthetic and (world.width, world.height) == (64, 64)
    assert world.config == SHIPPED.parent / "config.yaml"
    _photo_note(str(SHIPPED))
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(
        "note: if --image is a photo, not a frame of its own world: this student was trained only on the synthetic "
        "world (64x64"
    )
    assert "mosaic" in out[0] and str(SHIPPED) not in out[0]  # the page gets the same text: no server path in it


def test_a_run_stage_is_read_one_level_up_with_its_frame_size(tmp_path):
    student = _export(tmp_path, "  source: synthetic\n  height: 48\n  width: 80\n", in_stage=True)
    assert Network.of(student).config_path == tmp_path / "dmd" / "config.yaml"
    assert "(80x48 sprites" in photo_notice(trained_world(student))


def test_real_videos_or_no_record_say_nothing(tmp_path, capsys):
    shards = _export(tmp_path / "a", "  source: shards\n  height: 480\n  width: 832\n", in_stage=False)
    assert trained_world(shards).source == "shards" and photo_notice(trained_world(shards)) is None
    bare = tmp_path / "b" / "converted" / "student"  # downloaded or converted weights: no run config
    shutil.copytree(SHIPPED, bare)
    assert Network.of(bare).config_path is None and trained_world(bare) is None and photo_notice(None) is None
    _photo_note(str(shards))
    _photo_note(str(bare))
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_inputs_writes_the_demo_pages_scene_with_its_worlds_tracks(tmp_path, capsys):
    """``trackstream inputs --scene K``: the page's scene K (its first frame as DemoModel.scene draws it), the
    world's exact tracks of that clip, its caption: generate's inputs for the student's own world."""
    import cv2
    import numpy as np

    from trackstream.stream.demo.session import DemoModel
    from trackstream.stream.inputs import main

    assert main(["--scene", "3", "--out", str(tmp_path)]) == 0
    hint = capsys.readouterr().out.splitlines()[-1]  # the line to stream them names the network they are for
    assert hint.startswith(f"stream it: trackstream generate --student {SHIPPED} --image {tmp_path / 'first.png'}")
    frame, caption = DemoModel(SHIPPED, num_scenes=4, device="cpu", dtype="float32").scene(3)  # what the page shows
    first = cv2.imread(str(tmp_path / "first.png"))[:, :, ::-1]
    np.testing.assert_array_equal(first, frame)
    assert (tmp_path / "caption.txt").read_text() == caption
    tracks, vis = np.load(tmp_path / "tracks.npy"), np.load(tmp_path / "visibility.npy")
    assert tracks.shape == (25, 256, 2) and vis.shape == (25, 256)  # the student's 25-frame clips, its 16x16 grid
    assert np.ptp(tracks[:, vis.all(0)], axis=0).max() > 2  # the scene moves
