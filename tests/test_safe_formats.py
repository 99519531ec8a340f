"""Untrusted files: ODE pair shards are safetensors + JSON (no pickle), read lazily (the lab's packed runs:
lab/tests/test_run_pack.py); files of the old pickle-based formats load only behind the opt-in
(``allow_pickle`` / ``TRACKSTREAM_ALLOW_PICKLE=1``) and say so in one line otherwise; a truncated or
garbage file is one line naming it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from trackstream.distill.pair_shards import INDEX_NAME, PairSet, load_shard, write_shard
from trackstream.models.formats.files import ALLOW_PICKLE_ENV, UnreadableFile, read_torch_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_opt_in(monkeypatch):
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# ----------------------------------------------------------------------------- state files


def test_the_reader_tells_a_damaged_file_from_an_old_pickled_one(tmp_path, monkeypatch):
    good, old, bad = tmp_path / "good.pt", tmp_path / "old.pt", tmp_path / "bad.pt"
    torch.save({"x": torch.ones(2), "t": (1, "a"), "n": None}, good)
    torch.save({"x": np.ones(2)}, old)  # a numpy array: needs pickle's full unpickler
    bad.write_bytes(b"garbage" * 10)
    assert read_torch_file(good)["t"] == (1, "a")
    with pytest.raises(UnreadableFile, match="bad.pt is not a torch checkpoint of tensors"):
        read_torch_file(bad)
    with pytest.raises(UnreadableFile, match="does not exist"):
        read_torch_file(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="it pickles objects other than tensors\\); get it again") as err:
        read_torch_file(old, fix="get it again", allow_pickle=True)  # no old format of ours: no opt-in
    assert not isinstance(err.value, UnreadableFile)
    with pytest.raises(ValueError) as err:
        read_torch_file(old, old_format="a test file", fix="save it again")
    msg = _one_line(err)
    assert not isinstance(err.value, UnreadableFile)
    assert msg.startswith(f"{old} is a test file in an old pickle-based format, which can run arbitrary code")
    assert f"{ALLOW_PICKLE_ENV}=1" in msg and msg.endswith("save it again")
    assert isinstance(read_torch_file(old, old_format="a test file", allow_pickle=True)["x"], np.ndarray)
    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")
    assert isinstance(read_torch_file(old, old_format="a test file")["x"], np.ndarray)


# ----------------------------------------------------------------------------- ODE pair shards


def _pair_folder(directory: Path, *, suffix: str = ".safetensors", extra: dict | None = None) -> dict:
    g = torch.Generator().manual_seed(0)
    shard = {
        "trajectory": torch.randn(3, 4, 2, 2, 2, 2, generator=g, dtype=torch.float32).to(torch.bfloat16),
        "text_emb": torch.randn(3, 5, 4, generator=g),
        "text_len": torch.tensor([5, 3, 4]),
        "first_frame": torch.randint(0, 255, (3, 3, 8, 8), generator=g, dtype=torch.uint8),
        "caption": ["a cat", "a dog", "ünïcode"],
        "seed": [7, 8, 9],
    }
    directory.mkdir(parents=True)
    name = f"pairs_00000{suffix}"
    if suffix == ".safetensors":
        write_shard(shard, directory / name)
    else:
        torch.save({**shard, **(extra or {})}, directory / name)
    index = {"shards": [{"file": name, "num_samples": 3}], "num_pairs": 3, "student_steps": 3, "shift": 5.0}
    (directory / INDEX_NAME).write_text(json.dumps(index))
    return shard


def _assert_pairs(pairs: PairSet, shard: dict) -> None:
    got = pairs.batch([2, 0], ("trajectory", "text_emb", "first_frame", "caption", "seed"))
    assert torch.equal(got["trajectory"], shard["trajectory"][[2, 0]])
    assert torch.equal(got["first_frame"], shard["first_frame"][[2, 0]])
    assert torch.equal(got["text_emb"], shard["text_emb"][[2, 0]])
    assert got["caption"] == ["ünïcode", "a cat"] and got["seed"] == [9, 7]


def test_pair_shards_are_safetensors_read_lazily(tmp_path):
    shard = _pair_folder(tmp_path / "pairs")
    path = tmp_path / "pairs" / "pairs_00000.safetensors"
    with safe_open(str(path), framework="pt") as f:  # a plain safetensors file: tensors + JSON metadata
        assert json.loads(f.metadata()["caption"]) == shard["caption"] and "trajectory" in f.keys()
    pairs = PairSet(tmp_path / "pairs", student_steps=3, shift=5.0)
    assert len(pairs) == 3 and "caption" in pairs and "trajectory" in pairs
    _assert_pairs(pairs, shard)
    assert torch.equal(load_shard(path)["text_len"], shard["text_len"])


def test_a_truncated_shard_is_one_line(tmp_path):
    _pair_folder(tmp_path / "pairs")
    path = tmp_path / "pairs" / "pairs_00000.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{path} is truncated or not an ODE pair shard") as err:
        PairSet(tmp_path / "pairs", student_steps=3, shift=5.0)
    assert "generate it again" in _one_line(err)


def test_a_pt_shard_of_an_earlier_trackstream_is_refused_in_one_line(tmp_path):
    """Shards are safetensors; a torch.save shard of an earlier version (tensors only or pickling objects) is
    refused before anything is read: the folder is generated again, not converted."""
    for i, extra in enumerate(({}, {"noise_seeds": np.arange(3)})):
        _pair_folder(tmp_path / f"pairs{i}", suffix=".pt", extra=extra)
        path = tmp_path / f"pairs{i}" / "pairs_00000.pt"
        with pytest.raises(ValueError, match="an ODE pair shard of an earlier TrackStream") as err:
            PairSet(tmp_path / f"pairs{i}", student_steps=3, shift=5.0)
        assert str(path) in _one_line(err) and "generate it again" in _one_line(err)


# ----------------------------------------------------------------------------- weights of released models


def test_released_weights_read_through_the_one_reader(tmp_path):
    from trackstream.models.aesthetic import load_aesthetic_head
    from trackstream.models.clip_image import CLIPImageEncoder

    bad = tmp_path / "head.pth"
    bad.write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError, match=f"{bad} is not a torch checkpoint of tensors") as err:
        load_aesthetic_head(bad)
    assert "download the improved-aesthetic-predictor head again" in _one_line(err)
    with pytest.raises(ValueError, match=f"{bad} is not a torch checkpoint of tensors") as err:
        CLIPImageEncoder.from_wan_checkpoint(bad)
    _one_line(err)
