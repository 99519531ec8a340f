"""experiment=tiny_teacher_patch1 (DiT patch 1) end to end at debug sizes: train, export, evaluate."""

import json

import pytest


@pytest.mark.slow  # the training command, end to end
def test_tiny_teacher_fine_trains_exports_and_evaluates(tmp_path, run_module):
    run = tmp_path / "fine"
    run_module(
        "trackstream.train",
        "experiment=tiny_teacher_patch1",
        "debug=tiny",
        "data.height=32",
        "data.width=32",
        "trainer.num_threads=1",
        f"hydra.run.dir={run}",
        timeout=300,
    )
    net = json.loads((run / "export" / "teacher" / "network.json").read_text())
    assert list(net["model"]["overrides"]["patch_size"]) == [1, 1, 1], net
    figures = json.loads((run / "eval.json").read_text())
    assert figures["num_samples"] == 2 and figures["epe_with_tracks"] >= 0 and figures["epe_without_tracks"] >= 0
