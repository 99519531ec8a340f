"""Training that refuses to lie: a non-finite loss stops the run before its step is saved, a full disk says
so and keeps the last checkpoint, pruning leaves no half-removed checkpoint, one training per run directory."""

import errno
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from test_train_loop import Regression, _net, _run

from trackstream.trainer.checkpoint import DiskFull, find_latest
from trackstream.trainer.dist import init_runtime
from trackstream.trainer.loop import NonFiniteLoss
from trackstream.trainer.run_lock import LOCK_NAME, lock_run_dir, unlock_run_dir


@pytest.fixture(scope="module")
def runtime():
    return init_runtime("single")


class TurnsNaN(Regression):
    """The toy regression whose loss is NaN from step ``at`` on (a diverged run, non-finite data)."""

    at = 5

    def loss(self, name, batch, *, step):
        loss, extra = super().loss(name, batch, step=step)
        return (loss * float("nan") if step + 1 >= self.at else loss), extra


def test_a_non_finite_loss_stops_before_its_step_is_saved(runtime, tmp_path):
    with pytest.raises(
        NonFiniteLoss,
        match=r"train/loss/net or its gradient norm became non-finite at step 5.*last checkpoint is .*step_00000003;",
    ) as err:
        _run(runtime, tmp_path, lambda n: TurnsNaN(n["net"]), {"net": _net()}, steps=12)  # ckpt_every=3
    assert "\n" not in str(err.value)
    latest = find_latest(tmp_path / "checkpoints")
    assert latest.name == "step_00000003"
    state = torch.load(latest / "net.pt", weights_only=True)
    tensors = [v for v in state["model"].values()] if "model" in state else []
    assert tensors and all(torch.isfinite(t).all() for t in tensors)
    # the metrics never show the NaN step: the last logged step is the last finite one
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and '"loss": NaN' not in lines[-1]


def test_a_full_disk_says_so_and_keeps_the_last_checkpoint(runtime, tmp_path, monkeypatch):
    import trackstream.trainer.checkpoint as ckpt_mod

    real_save, calls = torch.save, {"n": 0}

    def save(obj, f, *a, **k):
        calls["n"] += 1
        if "step_00000006" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt_mod.torch, "save", save)
    with pytest.raises(DiskFull, match=r"disk full writing checkpoint step 6 .*step_00000003 is intact"):
        _run(runtime, tmp_path, lambda n: Regression(n["net"]), {"net": _net()}, steps=12)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_00000003"], names  # the half-written step 6 is gone


def test_pruning_cut_short_leaves_nothing_behind(runtime, tmp_path):
    _run(runtime, tmp_path, lambda n: Regression(n["net"]), {"net": _net()}, steps=6)  # keeps 3 and 6
    ckpts = tmp_path / "checkpoints"
    # a kill during an old-style removal: a step folder without its meta.pt, and a rename that was never removed
    (ckpts / "step_00000001").mkdir()
    (ckpts / "step_00000001" / "net.pt").write_bytes(b"half")
    (ckpts / ".del-step_00000002").mkdir()
    _run(runtime, tmp_path, lambda n: Regression(n["net"]), {"net": _net()}, steps=9)  # resumes at 6, saves 9
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_00000006", "step_00000009"]


def test_one_training_per_run_directory(tmp_path):
    holder = textwrap.dedent(
        f"""
        import sys, time
        from trackstream.trainer.run_lock import lock_run_dir
        assert lock_run_dir({str(tmp_path)!r}) is None
        print("held", flush=True)
        sys.stdin.readline()
        """
    )
    p = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        refusal = lock_run_dir(tmp_path)
        assert refusal and f"pid {p.pid}" in refusal and "hydra.run.dir" in refusal and "\n" not in refusal
    finally:
        p.stdin.close()
        p.wait(timeout=60)
    assert lock_run_dir(tmp_path) is None  # the holder exited: the kernel freed its lock
    assert lock_run_dir(tmp_path) is None  # this process re-enters its own lock
    assert (tmp_path / LOCK_NAME).is_file()
    unlock_run_dir(tmp_path)


def _start_together(run_dir, offsets: list[float]) -> list[tuple[int, str]]:
    """``python -m trackstream.train`` (the tiny teacher, one step) once per offset, started that many seconds
    after the first, the k-th with ``trainer.log_every=k+1`` (its mark in the records); (exit status, stderr)."""
    import tempfile
    import time

    from conftest import TINY_TEACHER, cli_env, popen

    shrink = ["trainer.max_steps=1", "codec.fit.steps=1", "trainer.num_threads=1", f"hydra.run.dir={run_dir}"]
    started, procs, errs = time.monotonic(), [], []
    for k, offset in enumerate(offsets):
        time.sleep(max(0.0, started + offset - time.monotonic()))
        errs.append(tempfile.TemporaryFile("w+"))
        cmd = [sys.executable, "-m", "trackstream.train", *TINY_TEACHER, *shrink, f"trainer.log_every={k + 1}"]
        procs.append(popen(cmd, env=cli_env(OMP_NUM_THREADS="1"), stderr=errs[-1]))
    out = []
    for proc, err in zip(procs, errs):
        code = proc.wait(timeout=300)
        err.seek(0)
        out.append((code, err.read()))
        err.close()
    return out


@pytest.mark.slow  # 12 training commands, 3 of them train
@pytest.mark.multiproc
def test_trainings_started_together_on_one_run_directory_one_trains_and_the_others_touch_nothing(tmp_path):
    """Four trainings started within 0.3 s on one run directory, three rounds (two new directories, then the first
    again, its run done): one trains, the others are refused in one line and leave the directory as the winner
    writes it (its own mark in Hydra's records and config.yaml, nothing removed under it)."""
    import json

    a, b = tmp_path / "a", tmp_path / "b"
    rounds = [(a, [0, 0.05, 0.15, 0.3], 1), (b, [0, 0.1, 0.1, 0.25], 1), (a, [0, 0.02, 0.2, 0.3], 0)]
    for run_dir, offsets, fresh_wanted in rounds:
        results = _start_together(run_dir, offsets)
        winners = [k for k, (code, _) in enumerate(results) if code == 0]
        # one trains the new directory; on a loaded machine a start may reach the lock only after the winner has
        # finished and let it go: that run is a sequential one, which resumes the finished run (it trains nothing)
        fresh = [k for k in winners if "resumed from" not in results[k][1]]
        assert len(fresh) == fresh_wanted and winners, [(code, err[-2000:]) for code, err in results]
        for k, (code, err) in enumerate(results):
            if k not in winners:
                lines = err.strip().splitlines()
                assert code == 2 and len(lines) == 1, (code, err[-3000:])
                assert lines[0].startswith(f"error: run directory {run_dir} is in use by another training"), lines
        marks = [f"trainer.log_every={k + 1}" for k in winners]  # the records are the last winner's, whole
        overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
        mark = next(m for m in marks if m in overrides)
        assert f"log_every: {mark.split('=')[1]}" in (run_dir / "config.yaml").read_text()
        assert json.loads((run_dir / "results.json").read_text())["status"] == "done"
        assert (run_dir / LOCK_NAME).is_file()


def test_a_parallel_strategy_without_a_launcher_is_a_world_of_one(monkeypatch):
    """``trackstream train experiment=<real recipe>`` (FSDP, DeepSpeed) on one process, as the docs show it."""
    from trackstream.trainer.dist import world_of_one

    # world_of_one writes the environment: a copy, or this worker's later launches inherit its RANK and MASTER_PORT
    # (two single-process runs side by side then meet on one port)
    monkeypatch.setattr(os, "environ", os.environ.copy())
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(key, None)
    world_of_one("single")
    assert "RANK" not in os.environ
    world_of_one("fsdp")
    env = os.environ
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["MASTER_ADDR"]) == ("0", "1", "0", "127.0.0.1")
    assert 0 < int(env["MASTER_PORT"]) < 65536
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    world_of_one("fsdp")  # a launcher's world is left as it is
    assert (env["RANK"], env["WORLD_SIZE"]) == ("3", "8")


@pytest.mark.slow
def test_training_and_pairs_take_a_device(tmp_path, capsys):
    """``trainer.device`` (auto | cpu | cuda) is the device of `trackstream train` and `trackstream pairs`."""
    from trackstream.trainer.loop import TrainerConfig

    assert TrainerConfig().device == "auto" and TrainerConfig(device="cpu").device == "cpu"
    with pytest.raises(ValueError, match="trainer.device='gpu': choose auto, cpu or cuda"):
        TrainerConfig(device="gpu")
    if not __import__("torch").cuda.is_available():
        from trackstream.cli import main

        code = main(["pairs", "experiment=tiny_ode_init", "trainer.device=cuda", f"hydra.run.dir={tmp_path / 'p'}"])
        assert code == 2 and not (tmp_path / "p").exists()  # refused before anything is written
        assert "trainer.device='cuda' but no CUDA device" in capsys.readouterr().err


@pytest.mark.slow
def test_a_stage_refusing_its_inputs_leaves_no_run_directory(tmp_path, capsys):
    """A bad file found while the stage is built (here a teacher export whose network.json lacks its keys):
    one line, exit 2, and the run directory this run made removed again."""
    from trackstream.cli import main

    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "network.json").write_text("{}")
    run_dir = tmp_path / "run"
    code = main(
        ["train", "experiment=tiny_ode_init", "debug=tiny", f"stage.teacher={teacher}", f"hydra.run.dir={run_dir}"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"error: {teacher}/network.json lacks the key(s)"), err
    assert not run_dir.exists()


@pytest.mark.slow  # a training CLI start
def test_a_mistyped_key_is_named_with_the_key_meant(tmp_path, run_module):
    """Hydra refuses an override of a key the config does not have ("append with +"); the line after it names
    the nearest key that exists."""
    proc = run_module(
        "trackstream.train", "experiment=tiny_teacher", "debug=tiny", "trainer.max_step=2", "data.batch_sise=2",
        f"hydra.run.dir={tmp_path / 'run'}", check=False, timeout=120,
    )  # fmt: skip
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and last == (
        "error: trainer.max_step is not an option; did you mean trainer.max_steps?; "
        "data.batch_sise is not an option; did you mean data.batch_size?"
    ), proc.stderr[-600:]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a training CLI start
def test_help_lists_the_groups_a_training_composes_and_no_schema_entry(run_module):
    out = run_module("trackstream.train", "--help", timeout=120).stdout
    groups = out.split("== Configuration groups ==")[1].split("== Config ==")[0]
    named = [line.split(":")[0] for line in groups.splitlines() if ": " in line]
    assert named == sorted(named) and {"experiment", "stage", "model", "family", "parallel"} <= set(named)
    assert not {"benchmark", "preset", "causal", "guidance", "lora"} & set(named)  # other apps', nested nodes
    assert "_schema" not in groups and "stage: codec, consistency, dmd, ode_init, rl, teacher" in groups
    assert out.startswith("trackstream train: train one stage") and "task_name: train" in out
