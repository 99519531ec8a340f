"""`make run` wiring: every stage of the end-to-end job runs (a few steps each) and the run
directory holds the report and the per-sample files the issue asks for. Figures mean nothing here."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import THREADS
from test_docs_run import CHAIN_RL, documented_line, run_documented, setting

from trackstream.eval.drag_table import FLOOR_ROWS

ROOT = Path(__file__).resolve().parents[1]
# docs/results.md's student chain: the long DMD run and ship on RUN, then the RL run with the object-weighted
# reward on RUN2 (RUN's teacher, ODE init and DMD) and its evaluation and drag benchmark
LONG_DMD = documented_line("docs/results.md", "lab.long_dmd run")
CHAIN_SHIP = documented_line("docs/results.md", "lab.student_chain ship")
OBJECT_RL = documented_line("docs/results.md", "lab.student_chain rl", "--run-dir RUN2")
OBJECT_RL_EVAL = documented_line("docs/results.md", "run=RUN2/rl/export/student")
OBJECT_RL_DRAG = documented_line("docs/results.md", "trackstream.eval.drag_bench", "--student RUN2/rl/export/student")
# one step of each: a DMD step (one critic and one generator update) and an RL round of one update, on one
# rollout horizon, batch 1 and a group of 2
DMD_STEP = ("data.batch_size=1", "stage.update_ratio=1", "stage.rollout_horizons=1")
RL_STEP = ("data.batch_size=1", "stage.group_size=2", "stage.rollout_horizons=1", "stage.updates_per_rollout=1")
ONE_STEP_LOGGED = ("trainer.max_steps=1", "trainer.ckpt_every=1", "trainer.log_every=1")
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
    # the run's student ships as a release folder (what assets/tiny-student was made with)
    dest = tmp_path / "tiny-student"
    run_module("lab.ship_student", "--run-dir", run_dir, "--dest", dest, timeout=300)
    from trackstream.pipeline.releases import AssetError, verify_asset

    manifest = verify_asset(dest)
    assert (
        manifest["steps"]["dmd"] == 1
        and manifest["held_out"]["student_epe_with_tracks"] == figures["student_epe_with_tracks"]
    )
    assert {"student/network.json", "student/heads.pt", "config.yaml"} <= set(manifest["sha256"])
    (dest / "config.yaml").write_text("altered")
    with pytest.raises(AssetError, match="config.yaml"):
        verify_asset(dest)
    # the chain's commands on the same run (what assets/tiny-student is made with), docs/results.md's lines as
    # written, RUN being this run: the RL stage is reused, and ship scores ODE init, DMD and RL with make run's
    # evaluation and ships the RL student
    (tmp_path / "RUN").symlink_to(run_dir)
    (tmp_path / "lab").symlink_to(ROOT / "lab")
    assert "already done" in run_documented(CHAIN_RL, tmp_path).stdout
    # the smallest scoring that shows it: one clip, the teacher at one Euler step per student step
    scoring = ("--clips", "1", "--long-clips", "1", "--long-factor", "2", "--teacher-steps", "3")
    run_documented(CHAIN_SHIP, tmp_path, args=("--dest", str(chained := tmp_path / "chain-student"), *scoring))
    m = verify_asset(chained)
    assert m["steps"]["rl"] == 2 and m["policy_updates"] == 2 and m["generator_updates"] >= 1
    assert {"teacher", "ode_init", "dmd", "rl"} <= set(m["held_out"]) and m["held_out"]["num_heldout"] == 1
    scored = json.loads((run_dir / "score" / "report.json").read_text())
    assert m["held_out"]["rl"]["epe_with_tracks"] == scored["student_epe_with_tracks"]  # the shipped RL student
    assert m["held_out"]["dmd"]["epe_with_tracks"] == scored["dmd_epe_with_tracks"] and scored["student_stage"] == "rl"
    assert set(m["long_horizon"]) == {"ode_init", "dmd", "rl"} and "knowable_with_sink" in m["long_horizon"]["rl"]
    assert {"codec_floor", "dmd_gains_over_ode_init", "long_psnr_holds"} <= set(m["targets"])
    assert m["floors"]["epe_codec_round_trip"] > 0 and (run_dir / "score" / "long_horizon.png").is_file()
    assert "experiment=rl_tiny" in m["rl_overrides"] and "trainer.max_steps=2" in m["rl_overrides"]
    assert {"student/network.json", "dmd/network.json", "config.yaml", "rl_config.yaml"} <= set(m["sha256"])
    assert "python -m lab.student_chain ship" in m["command"]
    _the_documented_long_dmd_and_object_rl(tmp_path / "reader", run_dir)
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


def _the_documented_long_dmd_and_object_rl(here: Path, run_dir: Path) -> None:
    """docs/results.md's long DMD line on a new RUN holding ``run_dir``'s finished teacher and ODE init (reused,
    as on a resumed run: its DMD stage runs, one step), then the object-weighted RL line on RUN2 (RUN's stages,
    one RL update), its evaluation and its drag benchmark (one translate scene): what each wrote."""
    here.mkdir()
    for name in ("assets", "lab"):
        (here / name).symlink_to(ROOT / name)
    (here / "RUN").mkdir()
    for stage in ("teacher", "ode_init"):
        (here / "RUN" / stage).symlink_to(run_dir / stage)
    # no packed run to continue (runs/dmd-long/ of this checkout, were one committed): the stages here
    shrunk = ("--pack-dir", str(here / "no-pack"), *setting(*DMD_STEP, *ONE_STEP_LOGGED))
    out = run_documented(LONG_DMD, here, args=shrunk).stdout
    assert out.count("already done") == 2 and "[long_dmd] done" in out
    dmd = json.loads((here / "RUN" / "dmd" / "results.json").read_text())
    assert dmd["status"] == "done" and dmd["generator_updates"] == 1 and "0" in dmd["snapshots"]  # the start's
    ode_init = str((run_dir / "ode_init" / "export" / "student").resolve())
    assert dmd["config"]["snapshot_every"] == 25 and dmd["config"]["student"] == ode_init  # the line's, from ODE init

    (here / "RUN2").mkdir()
    for stage in ("teacher", "ode_init", "dmd"):
        (here / "RUN2" / stage).symlink_to(here / "RUN" / stage)
    run_documented(OBJECT_RL, here, args=setting(*RL_STEP, *ONE_STEP_LOGGED))
    rl = json.loads((here / "RUN2" / "rl" / "results.json").read_text())
    assert rl["policy_updates"] == 1 and rl["config"]["rewards"]["motion"]["object_weight"] == 4.0
    assert rl["config"]["student"] == str((here / "RUN2").resolve() / "dmd" / "export" / "student")
    run_documented(OBJECT_RL_EVAL, here, "benchmark.num_samples=1", f"out={here / 'eval'}")
    rows = json.loads((here / "eval" / "metrics.json").read_text())["results"]
    student = rows["student (with tracks)"]
    assert len(student["per_sample"]["epe"]) == 1 and np.isfinite(student["epe"])
    assert {"ground_truth", "frozen"} <= set(rows) and np.isfinite(student["psnr"]) and 0 < student["ssim"] <= 1
    run_documented(OBJECT_RL_DRAG, here, args=("--scenes", "1", "--threads", str(THREADS)))
    drag = json.loads((here / "OUT" / "metrics.json").read_text())
    assert (
        list(drag["rows"]) == ["no drag (I=0)", "native tracks", *FLOOR_ROWS] and drag["config"]["kinds"] == "translate"
    )
    assert all(r["scenes"] == 1 and np.isfinite(r["objmc"]) for r in drag["rows"].values())
    assert (
        drag["config"]["student"] == "RUN2/rl/export/student"
        and len(list((here / "OUT" / "videos").glob("*.mp4"))) == 2
    )


def test_a_run_directory_keeps_its_sizes_preset(tmp_path, capsys):
    from dataclasses import asdict

    from trackstream.pipeline.run import SIZES, SMOKE, main

    assert set(SIZES) == {"full", "long", "scratch", "smoke"}
    (tmp_path / "sizes.json").write_text(json.dumps(asdict(SMOKE)))
    assert main(["--sizes", "long", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "started with --sizes smoke, not --sizes long" in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("name", ["full", "long", "smoke"])
def test_a_run_directory_from_an_earlier_trackstream_is_refused_at_once(tmp_path, name, capsys):
    from dataclasses import asdict

    from trackstream.pipeline.run import SIZES, main

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
    from trackstream.distill.rl import RLConfig
    from trackstream.pipeline.run import FULL, LONG, PIPELINE, SCRATCH, SMOKE, stage_rl

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

    from trackstream.pipeline.run import SMOKE, evaluation_key

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

    from trackstream.pipeline.run import FULL, main

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
