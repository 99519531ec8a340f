"""Resume with a damaged newest checkpoint (trackstream/trainer/checkpoint.py): ``trainer.resume=auto`` warns,
names the checkpoint and why, and resumes from the one before it, bit-identical to an uninterrupted run;
nothing readable is one line; another config is still refused (not skipped); every checkpoint file
loads with ``weights_only=True`` and a pickled (old-format) one needs the opt-in."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from test_train_loop import TwoPlayer, _jsonl, _net, _run

from trackstream.models.formats.files import ALLOW_PICKLE_ENV
from trackstream.trainer.checkpoint import CheckpointManager, complete_checkpoints, refuse_foreign_run
from trackstream.trainer.dist import init_runtime
from trackstream.trainer.ema import EMAConfig
from trackstream.trainer.optim import OptimConfig
from trackstream.trainer.parallel import ParallelConfig, prepare_network


@pytest.fixture(scope="module")
def runtime():
    return init_runtime("single")


def _objective(n):
    return TwoPlayer(n["critic"], n["generator"], seed=7)


def _nets():
    return {"critic": _net(0), "generator": nn.Sequential(nn.Linear(8, 8))}


OPTIM = OptimConfig(lr=1e-2, warmup_steps=2, schedule="cosine", decay_steps=12)
EMA = EMAConfig(decay=0.9, start_step=1)


def _toy(runtime, tmp, steps):
    return _run(runtime, tmp, _objective, _nets(), steps=steps, optim=OPTIM, ema=EMA)


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00not a checkpoint\xff" * 64)
    else:
        path.unlink()


@pytest.mark.slow
@pytest.mark.parametrize(
    "file, how",
    [("meta.pt", "truncated"), ("rank_00000.pt", "missing"), ("generator.pt", "garbage")],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(runtime, tmp_path, caplog, file, how):
    _, full = _toy(runtime, tmp_path / "full", 12)
    _toy(runtime, tmp_path / "cut", 6)
    ckpts = complete_checkpoints(tmp_path / "cut" / "checkpoints")
    assert [p.name for p in ckpts] == ["step_00000006", "step_00000003"]  # saved every 3 steps, the last 2 kept
    _damage(ckpts[0] / file, how)
    with caplog.at_level(logging.WARNING, logger="trackstream.trainer.checkpoint"):
        res, resumed = _toy(runtime, tmp_path / "cut", 12)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("step_00000006" in m and "resuming from the one before it" in m and file in m for m in warned), warned
    assert res.resumed_from.name == "step_00000003"
    a, b = _jsonl(tmp_path / "full"), _jsonl(tmp_path / "cut")
    assert [a[s]["train/loss/critic"] for s in range(1, 13)] == [b[s]["train/loss/critic"] for s in range(1, 13)]
    for name in ("critic", "generator"):
        for p, q in zip(full[name].raw.parameters(), resumed[name].raw.parameters()):
            assert torch.equal(p, q)
        for p, q in zip(full[name].ema.shadow, resumed[name].ema.shadow):
            assert torch.equal(p, q)


def test_no_readable_checkpoint_is_one_line(runtime, tmp_path):
    _toy(runtime, tmp_path, 6)
    for path in complete_checkpoints(tmp_path / "checkpoints"):
        _damage(path / "meta.pt", "garbage")
    with pytest.raises(ValueError, match="no checkpoint in .* can be read: step_00000006 .*step_00000003") as err:
        _toy(runtime, tmp_path, 9)
    assert "\n" not in str(err.value) and "trainer.resume=never" in str(err.value)


def test_another_config_is_refused_not_skipped(runtime, tmp_path):
    _toy(runtime, tmp_path, 6)
    newest = complete_checkpoints(tmp_path / "checkpoints")[0]
    ckpt = CheckpointManager(tmp_path / "checkpoints", runtime, keep_last=2, fingerprint={"toy": 2})
    prepared = {
        n: prepare_network(runtime, ParallelConfig(), name=n, module=m, optim=OPTIM, ema=EMA, total_steps=9)
        for n, m in _nets().items()
    }
    with pytest.raises(ValueError, match=f"cannot resume {newest}.*config changed"):
        ckpt.resume_latest(networks=prepared, objective=_objective({n: p.module for n, p in prepared.items()}))
    # refuse_foreign_run reads the newest readable checkpoint: with the newest damaged, the one before it
    _damage(newest / "meta.pt", "truncated")
    with pytest.raises(ValueError, match="step_00000003 exactly, the config changed"):
        refuse_foreign_run(tmp_path / "checkpoints", fingerprint={"toy": 2}, world_size=1)
    refuse_foreign_run(tmp_path / "checkpoints", fingerprint={"toy": 1}, world_size=1)  # the same config: fine


def test_checkpoint_files_load_with_weights_only(runtime, tmp_path):
    _toy(runtime, tmp_path, 3)
    path = complete_checkpoints(tmp_path / "checkpoints")[0]
    for f in sorted(path.glob("*.pt")):
        torch.load(f, weights_only=True)  # numpy's RNG key is a tensor, not a pickled array


def test_an_old_pickled_checkpoint_needs_the_opt_in(runtime, tmp_path, monkeypatch):
    _toy(runtime, tmp_path, 3)
    path = complete_checkpoints(tmp_path / "checkpoints")[0]
    rank = path / "rank_00000.pt"
    state = torch.load(rank, weights_only=True)
    npy = state["rng"]["numpy"]  # as the old code saved it: numpy's own tuple, the key an ndarray
    state["rng"]["numpy"] = (npy["name"], npy["key"].numpy(), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    torch.save(state, rank)
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    with pytest.raises(ValueError, match=f"{rank} is a training checkpoint in an old pickle-based format") as err:
        _toy(runtime, tmp_path, 6)  # refused, not skipped: the older checkpoints are as old
    assert f"{ALLOW_PICKLE_ENV}=1" in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")
    res, _ = _toy(runtime, tmp_path, 6)
    assert res.resumed_from == path and res.step == 6
    assert isinstance(np.random.get_state()[1], np.ndarray)
