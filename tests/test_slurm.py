"""Slurm: the srun environment becomes torch.distributed's, and a preemption signal sent from outside
(Slurm's ``--signal=USR1@120``) saves, calls ``scontrol requeue <job>`` and exits; the same command
then resumes with the uninterrupted run's losses. ``scontrol`` is a fake on PATH that logs its calls."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from train.checkpoint import PreemptionHandler
from train.dist import export_slurm_env

ROOT = Path(__file__).resolve().parents[1]
STEPS = 40
COMMON = ["experiment=tiny_teacher", "debug=tiny", f"trainer.max_steps={STEPS}", "trainer.ckpt_every=1000",
          "trainer.log_every=1", "eval.enabled=false", "trainer.num_threads=1", "codec.fit.steps=2",
          "data.pool_size=4"]


def _fake_scontrol(tmp_path: Path) -> tuple[Path, Path]:
    bin_dir, log = tmp_path / "bin", tmp_path / "scontrol.log"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n'
                      'if [ "$1 $2" = "show hostnames" ]; then echo gpu03; echo gpu04; fi\n')
    script.chmod(0o755)
    return bin_dir, log


def test_srun_environment_becomes_the_torch_distributed_environment(tmp_path, monkeypatch):
    bin_dir, log = _fake_scontrol(tmp_path)
    monkeypatch.setattr(os, "environ", os.environ.copy())  # export_slurm_env writes the environment
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(k, None)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for k, v in {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_NTASKS_PER_NODE": "2(x2)",
                 "SLURM_JOB_NODELIST": "gpu[03-04]", "SLURM_JOB_ID": "4242"}.items():
        monkeypatch.setenv(k, v)
    export_slurm_env()
    got = {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                      "MASTER_PORT")}
    assert got == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "gpu03",
                   "MASTER_PORT": str(20000 + 4242)}
    assert "show hostnames gpu[03-04]" in log.read_text()
    # a torchrun-launched job (RANK already set) is left alone; so is a single task
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "8")
    export_slurm_env()
    assert os.environ["WORLD_SIZE"] == "8"


def test_requeue_asks_scontrol_for_this_job(tmp_path, monkeypatch):
    bin_dir, log = _fake_scontrol(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    PreemptionHandler.requeue()
    assert log.read_text().split("\n")[0] == "requeue 777"


def _losses(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "train/loss" in rec:
            out[rec["step"]] = rec["train/loss"]
    return out


def test_a_preemption_signal_from_outside_saves_requeues_and_resumes_identically(tmp_path):
    bin_dir, log = _fake_scontrol(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="offline", OMP_WAIT_POLICY="PASSIVE",
               PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SLURM_JOB_ID="9001")
    cmd = [sys.executable, "-m", "train", *COMMON]

    ref = tmp_path / "uninterrupted"
    r = subprocess.run([*cmd, f"hydra.run.dir={ref}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    expected = _losses(ref)
    assert sorted(expected) == list(range(1, STEPS + 1))

    run = tmp_path / "preempted"
    args = [*cmd, f"hydra.run.dir={run}", f"codec.checkpoint={ref / 'codec' / 'codec.pt'}"]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:  # wait for the second logged step, then signal as Slurm would
        if (run / "metrics.jsonl").is_file() and len(_losses(run)) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads((run / "results.json").read_text())
    assert summary["status"] == "preempted" and 2 <= summary["step"] < STEPS, summary
    assert "requeue 9001" in log.read_text()

    r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # the requeued job
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "results.json").read_text())
    assert summary["status"] == "done" and summary["resumed_from"] is not None
    assert _losses(run) == expected  # bit-identical, every step
