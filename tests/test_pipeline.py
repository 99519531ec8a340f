"""`make run` wiring: every stage of the end-to-end job runs (a few steps each) and the run
directory holds the report and the per-sample files the issue asks for. Figures mean nothing here."""

import json
from pathlib import Path

import numpy as np
import pytest
from test_docs_run import documented_line, run_documented

from conftest import THREADS
from trackstream.eval.drag_table import FLOOR_ROWS

ROOT = Path(__file__).resolve().parents[1]
# the pages' lines on make run's networks (R=runs/make-run): the evaluation table's and the drag benchmark's
MAKE_RUN_EVAL = documented_line("docs/results.md", "data_config=$R/dmd/config.yaml")
MAKE_RUN_DRAG = documented_line("docs/dragstream.md", "--student runs/make-run/dmd/export/student")

REPORT_KEYS = (
    "teacher_epe_with_tracks",
    "teacher_epe_without_tracks",
    "student_epe_with_tracks",
    "student_epe_without_tracks",
    "teacher_nfe_per_video",
    "student_nfe_per_video",
    "latency_ratio_last_over_early",
)


@pytest.mark.slow
def test_make_run_smoke_writes_the_report_and_samples(tmp_path, run_module):
    run_dir = tmp_path / "run"
    proc = run_module("trackstream.pipeline", "--smoke", "--run-dir", run_dir, timeout=900)
    report = json.loads((run_dir / "report.json").read_text())
    figures = report.get("figures", report)
    for key in REPORT_KEYS:
        assert key in figures, f"report.json lacks {key}"
    assert "drift" in figures and {"with_sink", "without_sink"} <= set(figures["drift"])
    assert (run_dir / "report.md").is_file()
    for name in ("teacher", "ode_init", "dmd", "rl"):
        assert json.loads((run_dir / name / "results.json").read_text())["status"] == "done"
    # the RL stage (smoke: a round of 2 steps) after DMD: its student is an extra row; the DMD student stays the measured one
    rl = figures["stages"]["rl"]
    assert rl["step"] == 2 and rl["policy_updates"] == 2 and rl["seconds_per_step"] > 0
    assert rl["export"].endswith("rl/export/student")
    for key in ("rl_epe_with_tracks", "rl_epe_without_tracks", "rl_psnr_with_tracks", "rl_ssim_with_tracks"):
        assert key in figures, f"report.json lacks {key}"
    assert list(figures["stages"]) == ["foundation", "teacher", "ode_init", "dmd", "rl", "stream"]
    assert figures["side_by_side"][0]["panels"][-2:] == ["RL student", "DMD student"]
    md = (run_dir / "report.md").read_text()
    assert "| student after RL |" in md and "RL check: the student after RL (2 steps" in md
    # smoke, as full: the DMD stage continued the shipped student's DMD checkpoint, and the report says so
    assert figures["stages"]["dmd"]["from"].endswith("assets/tiny-student/dmd")
    assert "DMD student: the shipped student's DMD checkpoint" in md
    assert (run_dir / "training.png").is_file()
    samples = sorted(p for p in (run_dir / "samples").iterdir() if p.is_dir())
    assert len(samples) == 2
    for s in samples:
        assert (s / "video.mp4").stat().st_size > 0
        tracks, vis = np.load(s / "tracks.npy"), np.load(s / "visibility.npy")
        assert tracks.ndim == 3 and tracks.shape[2] == 2 and vis.shape == tracks.shape[:2]
    # a second run reuses every finished stage and the evaluation of the same models: the same report
    again = run_module("trackstream.pipeline", "--smoke", "--run-dir", run_dir, check=False, timeout=900)
    assert again.returncode == 0 and again.stdout.count("already done") == 5, again.stdout[-2000:]

    def measured(r: dict) -> dict:  # all but this run's own timing
        return {k: v for k, v in r.items() if k not in ("stages", "total_seconds", "total_cpu_seconds")}

    assert measured(json.loads((run_dir / "report.json").read_text())) == measured(report)
    # the console is for people: no command lines, no empty summaries; the commands are in the log
    assert "hydra.run.dir" not in proc.stdout + proc.stderr and "done: {}" not in proc.stdout + proc.stderr
    assert "hydra.run.dir" in (run_dir / "pipeline.log").read_text()
    assert (run_dir / "teacher" / "console.log").is_file()
    _the_documented_lines_on_make_runs_networks(tmp_path / "make-run-reader", run_dir)


def _the_documented_lines_on_make_runs_networks(here: Path, run_dir: Path) -> None:
    """docs/results.md's evaluation table command and docs/dragstream.md's benchmark on make run's networks, as written in
    a folder whose runs/make-run is this run: two held-out clips (the proxy FVD's least) at 2 sampler steps, one
    scene and one row."""
    (here / "runs").mkdir(parents=True)
    (here / "runs" / "make-run").symlink_to(run_dir)
    (here / "assets").symlink_to(ROOT / "assets")
    run_documented(
        MAKE_RUN_EVAL, here, "benchmark.num_samples=2", "generate.sampler.steps=2", variables={"R": "runs/make-run"}
    )
    rows = json.loads((run_dir / "eval" / "metrics.json").read_text())["results"]
    for name in ("teacher", "ode_init", "dmd"):
        assert np.isfinite(rows[f"{name} (with tracks)"]["epe"]), (name, rows)
    assert {"ground_truth", "frozen"} <= set(rows)
    run_documented(MAKE_RUN_DRAG, here, args=("--scenes", "1", "--rows", "native tracks", "--threads", str(THREADS)))
    drag = json.loads((here / "runs" / "drag-bench" / "metrics.json").read_text())
    assert list(drag["rows"]) == ["no drag (I=0)", "native tracks", *FLOOR_ROWS] and drag["config"]["scenes"] == 1


def test_a_run_directory_keeps_its_sizes_preset(tmp_path, capsys):
    from dataclasses import asdict

    from trackstream.pipeline.presets import SIZES, SMOKE
    from trackstream.pipeline.run import main

    assert set(SIZES) == {"full", "long", "scratch", "smoke"}
    (tmp_path / "sizes.json").write_text(json.dumps(asdict(SMOKE)))
    assert main(["--sizes", "long", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "started with --sizes smoke, not --sizes long" in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("name", ["full", "long", "smoke"])
def test_a_run_directory_from_an_earlier_trackstream_is_refused_at_once(tmp_path, name, capsys):
    from dataclasses import asdict

    from trackstream.pipeline.presets import SIZES
    from trackstream.pipeline.run import main

    old = json.loads(json.dumps(asdict(SIZES[name])))
    del old["rl"]  # recorded before Sizes.rl existed
    (tmp_path / "sizes.json").write_text(json.dumps(old))
    assert main(["--sizes", name, "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert (
        f"{tmp_path / 'sizes.json'}: written by an earlier TrackStream (without rl); start a new run directory"
        in err[0]
    )
    # refused before any work: nothing written, the record kept
    assert [p.name for p in tmp_path.iterdir()] == ["sizes.json"]
    assert json.loads((tmp_path / "sizes.json").read_text()) == old
    old = {**asdict(SIZES[name]), "teacher_from": "release"}  # a preset's value renamed since
    (tmp_path / "sizes.json").write_text(json.dumps(old))
    assert main(["--sizes", name, "--run-dir", str(tmp_path)]) == 2
    assert f"--sizes {name} recorded with other teacher_from" in capsys.readouterr().err


def test_the_rl_stage_is_in_long_and_smoke_only_and_skipped_without(tmp_path):
    from trackstream.pipeline.presets import FULL, LONG, SCRATCH, SMOKE
    from trackstream.pipeline.run import PIPELINE, stage_rl
    from trackstream.train.rl.objective import RLConfig

    assert [n for n, _ in PIPELINE] == ["foundation", "teacher", "ode_init", "dmd", "rl", "stream"]
    assert FULL.rl is None and SCRATCH.rl is None  # make run's minutes have no room for it (docs/make-run.md)
    assert "trainer.max_steps=100" in LONG.rl
    state = {"sizes": FULL, "student": "x", "pairs": "y"}
    assert stage_rl(tmp_path, state)["status"] == "skipped" and state == {"sizes": FULL, "student": "x", "pairs": "y"}
    assert not (tmp_path / "rl").exists()
    opts = dict(o.split("=", 1) for o in SMOKE.rl)
    RLConfig(group_size=int(opts["stage.group_size"]))  # valid: G >= 2
    assert int(opts["trainer.max_steps"]) % 2 == 0  # whole rounds of rl_tiny's 2 updates


def test_the_evaluation_is_reused_only_for_the_same_models_and_preset(tmp_path):
    from dataclasses import replace

    from trackstream.pipeline.presets import SMOKE
    from trackstream.pipeline.run import evaluation_key

    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "w.bin").write_bytes(b"a")
    (tmp_path / "codec.pt").write_bytes(b"c")
    models = {"codec": str(tmp_path / "codec.pt"), "student": str(tmp_path / "student")}
    key = evaluation_key(models, SMOKE)
    assert evaluation_key(models, SMOKE) == key
    assert evaluation_key(models, replace(SMOKE, eval_samples=SMOKE.eval_samples + 1)) != key
    (tmp_path / "student" / "w.bin").write_bytes(b"b")  # a retrained student
    assert evaluation_key(models, SMOKE)["models"]["student"] != key["models"]["student"]


def test_a_student_release_of_another_teacher_is_refused_before_any_training(tmp_path, capsys):
    import shutil

    from trackstream.pipeline.presets import FULL
    from trackstream.pipeline.run import main

    assert FULL.dmd_from == "shipped"
    other = tmp_path / "other-teacher"
    shutil.copytree(ROOT / "assets" / "tiny-teacher", other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "git_commit": "another"}))
    run_dir = tmp_path / "run"
    assert main(["--run-dir", str(run_dir), "--teacher-asset", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was distilled from the teacher release" in err[0] and "--sizes long" in err[0]
    assert not (run_dir / "teacher").exists()
