"""The recipe study's bookkeeping (lab/teacher_study.py): commands, minutes from logged step
times, the table and the plot, on fake runs (the study itself is hours of CPU); then the docs' study lines as
written, each recipe shrunk to two steps (the study's ``--set``, for every run it launches), the objects study's
measures to one scene and one clip (its options after the line's own)."""

import json
from pathlib import Path

import pytest
from test_docs_run import documented_line, run_documented, setting

from lab import teacher_study as ts

ROOT = Path(__file__).resolve().parents[2]


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
        cmd[1:3] == ["-m", "trackstream.train"]
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


# the documented studies as written (docs/teacher_study.md, docs/embedded-world.md), each recipe a few steps on one
# held-out clip with the shipped codec: the lines a reader runs, one after the other, on what the previous wrote
STUDY = documented_line("docs/teacher_study.md", "--recipes 8px-2L-17f,4px-2L-25f")
STUDY_4L = documented_line("docs/teacher_study.md", "--recipes 4px-4L-17f")
STUDY_PLOT = documented_line("docs/teacher_study.md", "--plot docs/teacher_study")
OBJECTS = documented_line("docs/embedded-world.md", "lab.teacher_study", "--evals 4")
OBJECTS_COST = documented_line("docs/embedded-world.md", "lab.teacher_study", "--cost")
OBJECTS_MEASURE = documented_line("docs/embedded-world.md", "lab.objects_study", "--measure")
CODEC = ROOT / "assets" / "tiny-teacher" / "codec.pt"
TINY = (
    "trainer.max_steps=2",
    "eval.periodic_clips=1",
    "data.eval_samples=1",
    "data.pool_size=4",
    "data.batch_size=1",
    "data.num_frames=13",
    "eval.num_frames=13",
    "eval.batch_size=1",
    "sampler.steps=2",
)


@pytest.mark.slow
@pytest.mark.multiproc
def test_the_documented_studies_run_verbatim(tmp_path):
    (tmp_path / "lab").symlink_to(ROOT / "lab")
    for line in (STUDY, STUDY_4L):
        run_documented(line, tmp_path, args=setting(*TINY, f"codec.checkpoint={CODEC}"))
    run_documented(STUDY_PLOT, tmp_path)
    study = json.loads((tmp_path / "docs" / "teacher_study" / "study.json").read_text())["recipes"]
    assert list(study) == ["8px-2L-17f", "4px-2L-25f", "4px-4L-17f"]
    assert all(p["step"] == 2 and p["epe_with_tracks"] > 0 for r in study.values() for p in r["points"])
    assert "| 4px-4L-17f | 1 | 2 |" in (tmp_path / "docs" / "teacher_study" / "study.md").read_text()
    # one periodic evaluation (eval.jsonl: what objects_study reads) before the final one
    run_documented(OBJECTS, tmp_path, args=setting(*TINY, "trainer.sample_every=1"), variables={"CODEC": CODEC})
    run_documented(OBJECTS_COST, tmp_path, args=setting(*TINY), variables={"CODEC": CODEC})
    cost = json.loads((tmp_path / "RUNS" / "cost.json").read_text())
    assert set(cost) == {"obj-25f", "obj-25f-bilinear", "obj-25f-decoded", "obj-25f-4L192"}
    assert all(c > 0 for c in cost.values())
    run_documented(OBJECTS_MEASURE, tmp_path, args=("--scenes", "1", "--clips", "1", "--steps", "1"))
    measured = json.loads((tmp_path / "docs" / "embedded_world" / "objects_study.json").read_text())
    assert set(measured) == set(cost)
    for name, c in measured.items():
        assert c["seconds_per_step"] == round(cost[name], 2) and [p["step"] for p in c["points"]] == [1, 2]
        assert c["objmc"]["native tracks"] > 0 and c["points"][-1]["late texture ratio"] is not None
