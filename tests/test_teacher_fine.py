"""experiment=tiny_teacher_patch1 (DiT patch 1) end to end at debug sizes: train, export, evaluate."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_teacher_fine_trains_exports_and_evaluates(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="offline", OMP_WAIT_POLICY="PASSIVE")
    run = tmp_path / "fine"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "trackstream.stages",
            "experiment=tiny_teacher_patch1",
            "debug=tiny",
            "data.height=32",
            "data.width=32",
            "trainer.num_threads=1",
            f"hydra.run.dir={run}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    net = json.loads((run / "export" / "teacher" / "network.json").read_text())
    assert list(net["model"]["overrides"]["patch_size"]) == [1, 1, 1], net
    figures = json.loads((run / "eval.json").read_text())
    assert figures["num_samples"] == 2 and figures["epe_with_tracks"] >= 0 and figures["epe_without_tracks"] >= 0
