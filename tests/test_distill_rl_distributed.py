"""The tiny RL stage on 2 FSDP2 processes (gloo) against 1 process at the same global batch: the same rewards,
advantages, ratios, KL and losses (every draw keyed by global sample id and group member; the policy and the
frozen reference driven through their streaming paths, one FSDP unit per module of it) and the same exported
policy. Tolerance: relative 1e-4, float reduction order only. One launch pair, 2 steps = one round of 2 updates."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from rl_helpers import rl_source

ROOT = Path(__file__).resolve().parents[1]
KEYS = (
    "train/loss/generator",
    "train/rl/reward",
    "train/rl/reward_motion",
    "train/rl/reward_appearance",
    "train/rl/adv_abs",
    "train/rl/ratio_mean",
    "train/rl/kl",
    "train/rl/policy_loss",
)


def _run(args, *, procs: int) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", WANDB_MODE="offline", OMP_WAIT_POLICY="PASSIVE")
    port = ["--master_port", str(29700 + os.getpid() % 200)]
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), *port]
        if procs > 1
        else [sys.executable]
    )
    r = subprocess.run([*launcher, "-m", "trackstream.train", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


def _metrics(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_rl_on_two_fsdp_processes_matches_one_at_the_same_global_batch(tmp_path):
    src = rl_source(tmp_path / "src")
    common = [
        "experiment=rl_tiny",
        "debug=tiny",
        "data.num_frames=25",
        f"stage.student={src['student']}",
        f"stage.pairs={src['pairs']}",
        "stage.group_size=2",
        "trainer.max_steps=2",
        "trainer.log_every=1",
        "trainer.num_threads=1",
        "eval.enabled=false",
        "logger.progress_bar=false",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    _run([*common, "data.batch_size=2", f"hydra.run.dir={one}"], procs=1)
    _run([*common, "parallel=fsdp", "data.batch_size=1", f"hydra.run.dir={two}"], procs=2)
    assert "fsdp x 2" in (two / "train.log").read_text()
    a, b = _metrics(one), _metrics(two)
    assert sorted(a) == sorted(b) == [1, 2]
    for step in (1, 2):
        for key in KEYS:
            if key in a[step] or key in b[step]:
                x, y = a[step][key], b[step][key]
                assert abs(x - y) <= 1e-4 * max(1.0, abs(x)), (step, key, x, y)
    assert "train/rl/reward" in a[1] and "train/rl/reward" not in a[2] and a[2]["train/rl/kl"] > 0
    w1 = torch.load(one / "export/student/heads.pt", weights_only=True)
    w2 = torch.load(two / "export/student/heads.pt", weights_only=True)
    w0 = torch.load(src["student"] / "heads.pt", weights_only=True)
    assert any(not torch.equal(w0[k], w1[k]) for k in w1)  # the policy moved ...
    for k in w1:  # ... and the same way on 1 and on 2 processes (the 49-frame rollouts of rl_tiny's two
        # horizons sum more float32 rounding than one horizon's; Adam's normalised step passes it to the weights)
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-3, atol=1e-5)
