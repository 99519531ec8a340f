"""Exact resume through the real CLI: N steps uninterrupted == N/2 steps, killed, resumed to N.

The interrupted run is killed with SIGKILL right after it logged step 3, past its step-2 checkpoint
(no chance to clean up), resumed, preempted by SIGUSR1 at step 3 (the Slurm path: save and exit
cleanly), and resumed again to step 6. Every logged loss must equal the uninterrupted run's exactly,
and metrics.jsonl holds each step once (the killed attempt's step 3 is dropped by the resume).
"""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_env, run_command

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6
COMMON = [
    "experiment=tiny_teacher",
    "debug=tiny",
    f"trainer.max_steps={STEPS}",
    "trainer.ckpt_every=2",
    "trainer.log_every=1",
    "eval.enabled=false",
    "trainer.num_threads=1",
    "codec.fit.steps=2",
]

# A driver around the real entry point: optionally SIGKILL itself or send itself SIGUSR1 after a given
# step is logged (fault injection lives in the test, not the product).
DRIVER = r"""
import os, signal, sys
import trackstream.trainer.metrics as mt
kill_at = int(os.environ.get("KILL_AT_STEP", "-1"))
usr1_at = int(os.environ.get("USR1_AT_STEP", "-1"))
log = mt.MetricLogger.log
def patched_log(self, step, scalars):
    log(self, step, scalars)
    if "train/loss/dit" in scalars and step in (kill_at, usr1_at):
        os.kill(os.getpid(), signal.SIGKILL if step == kill_at else signal.SIGUSR1)
mt.MetricLogger.log = patched_log
from trackstream.train.app import main
sys.argv = ["train"] + sys.argv[1:]
main()
"""


def _run(run_dir: Path, *extra: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = cli_env(**(env_extra or {}))  # the suite's command environment: a warm start from the fork server
    cmd = [sys.executable, "-c", DRIVER, *COMMON, f"hydra.run.dir={run_dir}", *extra]
    return run_command(cmd, env=env, timeout=300)


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), steps  # each step once, in order
    return {r["step"]: r["train/loss"] for r in rows}


@pytest.mark.slow  # four whole training commands
def test_kill_and_preempt_then_resume_gives_identical_losses(tmp_path):
    ref = tmp_path / "uninterrupted"
    r = _run(ref)
    assert r.returncode == 0, r.stderr[-3000:]
    expected = _losses(ref)
    assert sorted(expected) == list(range(1, STEPS + 1))
    codec = ref / "codec" / "codec.pt"  # reuse the fitted codec: the interrupted run resumes the teacher

    run = tmp_path / "interrupted"
    r = _run(run, f"codec.checkpoint={codec}", env_extra={"KILL_AT_STEP": "3"})
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert (run / "checkpoints" / "step_00000002" / "meta.pt").is_file()
    assert not (run / "checkpoints" / "step_00000004").exists()
    assert sorted(_losses(run)) == [1, 2, 3]  # step 3 logged, not saved: the resume logs it again

    r = _run(run, f"codec.checkpoint={codec}", env_extra={"USR1_AT_STEP": "3"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / "results.json").read_text())["status"] == "preempted"
    assert (run / "checkpoints" / "step_00000003" / "meta.pt").is_file()  # saved at the signal

    r = _run(run, f"codec.checkpoint={codec}")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "results.json").read_text())
    assert summary["status"] == "done" and summary["resumed_from"].endswith("step_00000003")
    got = _losses(run)
    assert got == expected  # bit-identical floats, every step
    # keep-last-k (debug keeps 3): the oldest checkpoints were pruned, no temp dirs left
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step_00000003", "step_00000004", "step_00000006"], names
