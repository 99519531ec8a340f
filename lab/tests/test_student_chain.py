"""The lab's student chain on a make-run run directory (what assets/tiny-student is made with): the run's student
shipped by ``lab.ship_student``; docs/results.md's chain lines as written (RL reused, ``student_chain ship`` scoring
ODE init, DMD and RL with make run's evaluation); its long DMD line on a new run holding the run's teacher and ODE
init, the object-weighted RL line on RUN2, and that student's evaluation and drag benchmark. One make-run smoke
run (``--smoke``: a few steps a stage, RL included) serves them all; its figures mean nothing."""

import json
from pathlib import Path

import numpy as np
import pytest
from test_docs_run import CHAIN_RL, documented_line, run_documented, setting

from conftest import THREADS
from trackstream.eval.drag_table import FLOOR_ROWS
from trackstream.pipeline.releases import AssetError, verify_asset

ROOT = Path(__file__).resolve().parents[2]
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


@pytest.fixture(scope="module")
def make_run(tmp_path_factory, run_module) -> tuple[Path, dict]:
    """A make-run smoke run directory and its report's figures."""
    run_dir = tmp_path_factory.mktemp("make-run") / "run"
    run_module("trackstream.pipeline", "--smoke", "--run-dir", run_dir, timeout=900)
    report = json.loads((run_dir / "report.json").read_text())
    return run_dir, report.get("figures", report)


@pytest.mark.slow
def test_the_run_ships_and_the_chain_scores_and_ships_its_rl_student(make_run, tmp_path, run_module):
    run_dir, figures = make_run
    # the run's student ships as a release folder (what assets/tiny-student was made with)
    dest = tmp_path / "tiny-student"
    run_module("lab.ship_student", "--run-dir", run_dir, "--dest", dest, timeout=300)
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


@pytest.mark.slow
def test_the_documented_long_dmd_and_object_rl_lines(make_run, tmp_path):
    _the_documented_long_dmd_and_object_rl(tmp_path / "reader", make_run[0])


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
