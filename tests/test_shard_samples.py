"""Random access into prepared shards by global index (the distillation conditions): the index order is
list_shards order then tar order, only the first frame is decoded, a corrupt video is replaced by the
next readable sample and counted, and a frame size other than the run's is a clear error."""

import numpy as np
import pytest

from trackstream.data.clips import DataConfig, make_world
from trackstream.data.shard_samples import ShardSamples
from trackstream.data.shards import ShardInfo, encode_sample, write_index, write_shard_atomic
from trackstream.data.video_io import encode_mp4


def _shards(folder, *, corrupt: int | None = None):
    world = make_world(DataConfig(height=32, width=64, num_frames=9))
    clips, infos = [], []
    for s in range(2):
        samples = []
        for j in range(3):
            i = 3 * s + j
            clip = world.generate(i)
            clips.append(clip)
            mp4 = b"not a video" if i == corrupt else encode_mp4(clip["frames"], fps=16)
            samples.append(
                encode_sample(
                    f"clip{i}",
                    tracks=clip["tracks"],
                    visibility=clip["visibility"],
                    caption=clip["caption"],
                    meta={"i": i},
                    mp4=mp4,
                )
            )
        path = str(folder / f"shard-{s:06d}.tar")
        write_shard_atomic(path, samples)
        infos.append(ShardInfo(path, 3))
    write_index(str(folder), infos)
    return clips


def test_samples_by_global_index_in_any_order(tmp_path):
    clips = _shards(tmp_path)
    samples = ShardSamples(tmp_path, num_frames=5, height=32, width=64)
    assert len(samples) == 6 and samples.locate(4) == (1, 1)
    for i in (0, 1, 4, 2, 5, 3):  # forwards, across shards and back
        s = samples.get(i)
        assert s["meta"]["i"] == i and s["caption"] == clips[i]["caption"]
        assert s["tracks"].shape[0] == 5 and s["first_frame"].shape == (32, 64, 3)
        assert np.abs(s["first_frame"].astype(int) - clips[i]["frames"][0].astype(int)).mean() < 8  # H.264


def test_a_corrupt_video_is_replaced_by_the_next_sample_and_counted(tmp_path):
    _shards(tmp_path, corrupt=2)
    samples = ShardSamples(tmp_path, num_frames=5)
    assert samples.get(2)["meta"]["i"] == 3 and samples.get(2)["meta"]["i"] == 3
    assert len(samples.skipped) == 1 and samples.skipped[0].endswith(":clip2")


def test_frame_size_and_clip_length_are_checked(tmp_path):
    _shards(tmp_path)
    with pytest.raises(ValueError, match="data.height=.* data.width="):
        ShardSamples(tmp_path, num_frames=5, height=64, width=64).get(0)
    with pytest.raises(ValueError, match="data.num_frames=13"):
        ShardSamples(tmp_path, num_frames=13).get(0)
