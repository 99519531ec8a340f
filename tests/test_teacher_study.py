"""The recipe study's bookkeeping (lab/teacher_study.py): commands, minutes from logged step
times, the table and the plot, on fake runs (the study itself is hours of CPU)."""

import json

import pytest

from lab import teacher_study as ts


def _fake_run(root, name, *, step_time=2.0, legacy=False):
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("trainer: {num_threads: 1}\n")
    (run / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": s, "perf/step_time_s": step_time, "train/loss": 1.0}) + "\n" for s in range(10, 101, 10)
        )
    )
    figures = {
        "epe_with_tracks": 6.0,
        "epe_without_tracks": 12.0,
        "epe_ratio_with_over_without": 0.5,
        "epe_frozen_video": 15.0,
        "psnr_with_tracks": 18.0,
        "psnr_frozen_video": 14.0,
        "ssim_with_tracks": 0.5,
        "ssim_frozen_video": 0.34,
        "num_samples": 8,
    }
    if legacy:  # a run from before the one EPE protocol
        figures["epe_strict_ratio_with_over_without"] = 0.8
    (run / "eval.jsonl").write_text(json.dumps({"step": 50, **figures}) + "\n")
    (run / "eval.json").write_text(json.dumps({**figures, "epe_with_tracks": 5.0, "per_sample": {}}))
    (run / "results.json").write_text(json.dumps({"status": "done", "step": 100}))
    return run


def test_command_runs_the_recipe_with_the_shared_schedule(tmp_path):
    cmd = ts.command("4px-2L-25f", tmp_path)
    assert (
        cmd[1:3] == ["-m", "trackstream.stages"]
        and "experiment=tiny_teacher_patch1" in cmd
        and "data.num_frames=25" in cmd
    )
    assert f"optim.decay_steps={ts.DECAY_STEPS}" in cmd and f"hydra.run.dir={tmp_path / '4px-2L-25f'}" in cmd
    assert "trainer.max_steps=430" in cmd and "trainer.sample_every=215" in cmd


def test_collect_table_and_plot(tmp_path, capsys):
    _fake_run(tmp_path / "runs", "8px-2L-17f", step_time=0.5, legacy=True)
    study = ts.collect(tmp_path / "runs")
    assert "8px-2L-17f: figures from before the one EPE protocol" in capsys.readouterr().out
    assert list(study) == ["8px-2L-17f"] and study["8px-2L-17f"]["threads"] == 1
    points = study["8px-2L-17f"]["points"]
    assert [p["step"] for p in points] == [50, 100]
    assert points[0]["minutes"] == pytest.approx(50 * 0.5 / 60) and points[1]["epe_with_tracks"] == 5.0
    assert not any("strict" in k for p in points for k in p)
    table = ts.table(study)
    assert "| 8px-2L-17f | 1 | 100 | 0.8 | 8 | 5.00 / 12.00 |" in table
    ts.plot(study, tmp_path / "docs")
    assert (tmp_path / "docs" / "study.png").stat().st_size > 0
    assert (
        json.loads((tmp_path / "docs" / "study.json").read_text())["recipes"]["8px-2L-17f"]["points"][1]["step"] == 100
    )
