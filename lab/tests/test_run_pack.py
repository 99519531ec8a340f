"""The lab's packed runs (lab/run_pack.py) are safetensors + JSON, no pickle: a pack unpacks anywhere to files
torch reads with ``weights_only``; a damaged pack is one line naming it; the pickle-based version 1 needs the
opt-in (``allow_pickle``)."""

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from lab.run_pack import FORMAT, pack_run, read_pack, unpack_run
from trackstream.distill.pair_shards import load_shard, write_shard
from trackstream.models.formats.files import ALLOW_PICKLE_ENV


@pytest.fixture(autouse=True)
def _no_opt_in(monkeypatch):
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def _run_dir(root: Path) -> Path:
    run = root / "run"
    (run / "ckpt").mkdir(parents=True)
    (run / "pairs").mkdir()
    opt = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2), "exp_avg_sq": torch.full((2,), 2.0)}}}
    opt["param_groups"] = [{"params": [0], "betas": (0.0, 0.999), "lr": 1e-3}]
    state = {
        "optimizer": opt,
        "rng": {"numpy": ("MT19937", np.arange(5, dtype=np.uint32), 2, 0, 0.0), "python": (3, (1, 2), None)},
        "path": str(run / "x"),
        "raw": b"\x00\x01",
        "scalar": np.float32(1.5),
        "dtype": torch.bfloat16,
    }
    torch.save(state, run / "ckpt" / "rank_00000.pt")
    (run / "log.json").write_text(json.dumps({"dir": str(run)}))
    write_shard(
        {"trajectory": torch.ones(1, 2), "tracks": torch.zeros(1, 3), "caption": ["c"]}, run / "pairs" / "p.safetensors"
    )
    return run


def test_a_pack_is_safetensors_and_unpacks_to_weights_only_files(tmp_path):
    run = _run_dir(tmp_path)
    files = ["ckpt/rank_00000.pt", "log.json", "pairs/p.safetensors"]
    out = tmp_path / "state.pt"
    pack_run(run, files, out, info={"step": 3}, drop={"pairs/p.safetensors": ("trajectory",)}, allow_pickle=True)
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["format"] == FORMAT and f.metadata()["version"] == "2"
    pack = read_pack(out)
    assert pack["info"] == {"step": 3} and pack["run_dir"] == str(run.resolve())
    moved = tmp_path / "elsewhere"
    assert unpack_run(out, moved) == {"step": 3}
    state = torch.load(moved / "ckpt" / "rank_00000.pt", weights_only=True)  # numpy values became tensors
    assert state["path"] == str(moved.resolve() / "x") and state["raw"] == b"\x00\x01" and state["scalar"] == 1.5
    assert torch.equal(state["rng"]["numpy"][1], torch.arange(5).to(torch.uint32)) and state["dtype"] == torch.bfloat16
    assert state["rng"]["python"] == (3, (1, 2), None)
    entry = state["optimizer"]["state"][0]
    assert torch.equal(entry["exp_avg"], torch.zeros(2)) and torch.equal(entry["exp_avg_sq"], torch.full((2,), 2.0))
    assert json.loads((moved / "log.json").read_text()) == {"dir": str(moved.resolve())}
    assert sorted(load_shard(moved / "pairs" / "p.safetensors")) == ["caption", "tracks"]  # trajectory dropped


def test_a_damaged_pack_is_one_line(tmp_path):
    run = _run_dir(tmp_path)
    out = tmp_path / "state.pt"
    pack_run(run, ["log.json"], out)
    out.write_bytes(out.read_bytes()[:50])
    with pytest.raises(ValueError, match=f"{out} is truncated or not a packed run") as err:
        read_pack(out)
    _one_line(err)


def test_a_version_1_pack_needs_the_opt_in(tmp_path):
    """The torch.save pack of before: refused in one line; with the opt-in it unpacks to safe files."""
    key = {"__ndarray__": np.arange(3, dtype=np.uint32).tobytes(), "dtype": "<u4", "shape": [3]}
    entry = {"rng": {"numpy": ("MT19937", key, 1, 0, 0.0)}, "dir": "/old/run/x"}
    import io

    buf = io.BytesIO()
    torch.save(entry, buf)
    blob = zlib.compress(buf.getvalue())
    old = {
        "format": FORMAT,
        "version": 1,
        "run_dir": "/old/run",
        "info": {"step": 5},
        "files": {
            "ckpt/rank_00000.pt": {"kind": "torch", "zlib": torch.frombuffer(bytearray(blob), dtype=torch.uint8)}
        },
    }
    path = tmp_path / "state.pt"
    torch.save(old, path)
    with pytest.raises(
        ValueError, match=f"{path} is a packed run \\(version 1\\) in an old pickle-based format"
    ) as err:
        unpack_run(path, tmp_path / "run")
    assert "--allow-pickle" in _one_line(err) and not (tmp_path / "run").exists()
    assert unpack_run(path, tmp_path / "run", allow_pickle=True) == {"step": 5}
    state = torch.load(tmp_path / "run" / "ckpt" / "rank_00000.pt", weights_only=True)
    assert state["dir"] == str((tmp_path / "run").resolve() / "x")
    assert torch.equal(state["rng"]["numpy"][1], torch.arange(3).to(torch.uint32))
