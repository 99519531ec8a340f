"""W&B as a researcher uses it (docs/wandb.md), tested offline by reading the run files back
(``trainer.wandb_run.run_contents``): the mode's precedence (config > WANDB_MODE > offline), group / job type /
tags, parameter counts in the config, periodic ``eval/*`` figures and sample videos for the teacher, ODE
init, DMD and RL, and the export as an artifact when ``logger.wandb.log_checkpoints``."""

import json
import time
from pathlib import Path

import pytest
from hydra_helpers import typed
from rl_helpers import rl_source

from trackstream.trainer.metrics import LoggerConfig, MetricLogger, WandbConfig, run_identity
from trackstream.trainer.wandb_run import resolve_mode, run_contents

WANDB_ON = ["logger=wandb", "logger.progress_bar=false"]
SAMPLING = ["trainer.sample_every=2", "eval.enabled=true", "eval.periodic_clips=1"]


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path, monkeypatch):
    """No key, no server, W&B's caches under tmp_path; WANDB_MODE unset unless a test sets it."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_RUN_GROUP", "WANDB_JOB_TYPE"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "300")  # the service starts slowly on a loaded 2-core machine


def _run_file(run_dir: Path, wait_s: float = 20.0) -> dict:
    """The run file's contents once its run record is on disk: wandb's service process writes the file, and
    on a loaded machine it can land a moment after ``finish()`` returns."""
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    deadline = time.monotonic() + wait_s
    while (contents := run_contents(files[0]))["job_type"] is None and time.monotonic() < deadline:
        time.sleep(0.25)
    return contents


def _rows_with(contents: dict, key: str) -> list[dict]:
    return [row for row in contents["history"] if key in row]


@pytest.mark.slow
def test_mode_precedence_config_then_wandb_mode_then_offline(tmp_path, monkeypatch):
    assert resolve_mode(None, {}) == "offline"
    assert resolve_mode(None, {"WANDB_MODE": "online"}) == "online"  # no longer overridden by the code
    assert resolve_mode(None, {"WANDB_MODE": "dryrun"}) == "offline"  # wandb's older spelling
    assert resolve_mode("offline", {"WANDB_MODE": "online"}) == "offline"  # an explicit config value wins
    assert resolve_mode("disabled", {"WANDB_MODE": "online"}) == "disabled"
    with pytest.raises(ValueError, match="WANDB_MODE"):
        resolve_mode(None, {"WANDB_MODE": "onlin"})
    with pytest.raises(ValueError, match="logger.wandb.mode"):
        WandbConfig(mode="onlin")
    env = {"WANDB_MODE": "online", "WANDB_RUN_GROUP": "chain-7", "WANDB_JOB_TYPE": "from-env"}
    assert run_identity(WandbConfig(tags=["a"]), stage="dmd", experiment="tiny_dmd", environ=env) == {
        "mode": "online",
        "group": "chain-7",
        "job_type": "from-env",
        "tags": ["a", "tiny_dmd", "dmd"],
    }
    mine = WandbConfig(mode="offline", group="mine", job_type="dmd-long", tags=["dmd"])
    assert run_identity(mine, stage="dmd", experiment=None, environ=env) == {
        "mode": "offline",
        "group": "mine",
        "job_type": "dmd-long",
        "tags": ["dmd"],
    }
    assert run_identity(WandbConfig(), stage="teacher", experiment="x", environ={})["job_type"] == "teacher"

    def logger(run_dir, mode):
        cfg = LoggerConfig(progress_bar=False, wandb=WandbConfig(enabled=True, mode=mode))
        MetricLogger(run_dir, cfg, is_main=True, total_steps=1, stage="teacher").close()

    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger(tmp_path / "env", None)  # the variable decides: no W&B run
    logger(tmp_path / "config", "offline")  # the config wins over the variable
    assert not (tmp_path / "env" / "wandb").exists() and _run_file(tmp_path / "config")["job_type"] == "teacher"
    # the logger group's YAML leaves every field to the environment
    cfg = typed(tmp_path, "experiment=tiny_teacher", "logger=wandb")
    assert cfg.logger.wandb.mode is None and cfg.logger.wandb.group is None and cfg.logger.wandb.job_type is None


@pytest.mark.slow
def test_teacher_logs_periodic_figures_sample_videos_and_parameter_counts(tmp_path, monkeypatch):
    from trackstream.train.app import run_stage
    from trackstream.trainer.dist import init_runtime, seed_everything

    monkeypatch.setenv("WANDB_RUN_GROUP", "recipe-1")
    run_dir = tmp_path / "teacher"
    cfg = typed(tmp_path, "experiment=tiny_teacher", "debug=tiny", *WANDB_ON, *SAMPLING, "trainer.max_steps=3")
    seed_everything(cfg.trainer.seed)
    assert run_stage(cfg, init_runtime("single"), run_dir)["status"] == "done"
    run = _run_file(run_dir)
    assert (run["group"], run["job_type"], run["tags"]) == ("recipe-1", "teacher", [cfg.task_name, "teacher"])
    params = run["config"]["params"]
    assert params["dit"]["total"] == params["dit"]["trainable"] == params["all"]["total"] > 0
    assert json.loads((run_dir / "params.json").read_text()) == params
    assert run["summary"]["params/dit/total"] == params["dit"]["total"]
    figures = _rows_with(run, "eval/epe_with_tracks")  # the periodic evaluation at step 2, the final one at 3
    assert [f["_step"] for f in figures] == [2, 3] and figures[0]["eval/num_samples"] == 1
    rows = [json.loads(x) for x in (run_dir / "eval.jsonl").read_text().splitlines()]  # the periodic curve
    assert [r["epe_with_tracks"] for r in rows] == [figures[0]["eval/epe_with_tracks"]]
    assert json.loads((run_dir / "eval.json").read_text())["epe_with_tracks"] == figures[1]["eval/epe_with_tracks"]
    # one EPE on the dashboard: the final one, under eval/ (no unprefixed copy in the summary)
    assert run["summary"]["eval/epe_with_tracks"] == figures[-1]["eval/epe_with_tracks"]
    assert not any(k.startswith("epe_") for k in run["summary"]) and run["summary"]["run/step"] == 3
    videos = _rows_with(run, "samples/with_tracks/000")  # periodic (2) + final (3) samples, track overlays drawn
    assert [v["_step"] for v in videos] == [2, 3] and videos[0]["samples/with_tracks/000"]["_type"] == "video-file"
    assert not any(k.startswith("eval/") for r in map(json.loads, (run_dir / "metrics.jsonl").open()) for k in r)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return rl_source(tmp_path_factory.mktemp("wandb_src"))


def _student_stage(tmp_path, run_dir, *overrides, steps: int = 2):
    from trackstream.train.app import run_stage
    from trackstream.trainer.dist import init_runtime, seed_everything

    cfg = typed(
        tmp_path, "debug=tiny", "data.num_frames=25", *WANDB_ON, *SAMPLING, f"trainer.max_steps={steps}", *overrides
    )
    seed_everything(cfg.trainer.seed)
    return cfg, run_stage(cfg, init_runtime("single"), run_dir)


def _check_student_samples(run: dict, run_dir: Path, steps: list[int]) -> None:
    """Streamed by the student every 2 steps and at the end (``finish``: the loop runs no hook at the last step)."""
    figures = _rows_with(run, "eval/epe_with_tracks")
    assert [f["_step"] for f in figures] == steps
    assert {"eval/epe_without_tracks", "eval/psnr_with_tracks", "eval/num_samples"} <= set(figures[-1])
    videos = _rows_with(run, "samples/student/000")
    assert [v["_step"] for v in videos] == steps and videos[0]["samples/student/000"]["_type"] == "video-file"
    assert videos[0]["samples/student/000"]["caption"].endswith("ground truth | tracks | no tracks")
    assert all((run_dir / "samples" / f"step_{s:08d}_000.mp4").is_file() for s in steps)
    rows = [json.loads(x) for x in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == steps and rows[-1]["epe_with_tracks"] == figures[-1]["eval/epe_with_tracks"]


@pytest.mark.slow
def test_ode_init_samples_the_student_and_logs_its_export_as_an_artifact(source, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_RUN_GROUP", "recipe-1")
    run_dir = tmp_path / "ode"
    cfg, res = _student_stage(
        tmp_path,
        run_dir,
        "experiment=tiny_ode_init",
        f"stage.teacher={source['student'].parents[2] / 'teacher/export/teacher'}",
        f"stage.pairs={source['pairs']}",
        "logger.wandb.log_checkpoints=true",
        steps=3,
    )
    run = _run_file(run_dir)
    assert (run["group"], run["job_type"], run["tags"]) == ("recipe-1", "ode_init", [cfg.task_name, "ode_init"])
    assert run["config"]["params"]["generator"]["trainable"] > 0
    _check_student_samples(run, run_dir, [2, 3])
    (artifact,) = run["artifacts"]
    assert artifact["type"] == "model" and artifact["name"] == "ode-ode_init" and "network.json" in artifact["files"]
    export = Path(res["export"])
    assert sorted(artifact["files"]) == sorted(str(p.relative_to(export)) for p in export.rglob("*") if p.is_file())


@pytest.mark.slow
def test_dmd_samples_the_student_and_counts_the_frozen_teacher(source, tmp_path):
    run_dir = tmp_path / "dmd"
    cfg, _ = _student_stage(
        tmp_path,
        run_dir,
        "experiment=tiny_dmd",
        f"stage.teacher={source['student'].parents[2] / 'teacher/export/teacher'}",
        f"stage.student={source['student']}",
        f"stage.pairs={source['pairs']}",
    )
    run = _run_file(run_dir)
    params = run["config"]["params"]
    assert params["teacher"]["total"] > 0 and params["teacher"]["trainable"] == 0
    assert params["all"]["trainable"] == params["generator"]["trainable"] + params["critic"]["trainable"]
    # a standalone run is grouped by its experiment; artifacts are off by default
    assert run["group"] == cfg.task_name and run["job_type"] == "dmd" and run["artifacts"] == []
    history = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # the headline is the generator's distribution-matching gap, not its ~1e-10 surrogate loss
    assert all(r["train/loss"] == r["train/dmd/real_fake_gap"] for r in history if "train/dmd/real_fake_gap" in r)
    _check_student_samples(run, run_dir, [2])


@pytest.mark.slow
def test_rl_samples_the_policy_and_logs_its_curves(source, tmp_path):
    run_dir = tmp_path / "rl"
    _student_stage(
        tmp_path,
        run_dir,
        "experiment=rl_tiny",
        f"stage.student={source['student']}",
        f"stage.pairs={source['pairs']}",
        "stage.group_size=2",
        "trainer.log_every=1",
    )
    run = _run_file(run_dir)
    assert run["job_type"] == "rl" and run["config"]["params"]["reference"]["trainable"] == 0
    curves = {k for row in run["history"] for k in row}
    wanted = {"reward", "reward_std", "reward_motion", "reward_motion_std", "kl", "clip_frac", "adv_std", "adv_abs"}
    assert {f"train/rl/{k}" for k in wanted} <= curves
    _check_student_samples(run, run_dir, [2])


def test_one_chain_or_pipeline_run_is_one_group(tmp_path, monkeypatch):
    """slurm/chain.sh hands every job one WANDB_RUN_GROUP (given or made once); the make-run pipeline names one
    per run directory, stable across re-runs of it."""
    import os
    import subprocess

    from trackstream.pipeline.stage_runner import wandb_group

    root = Path(__file__).resolve().parents[1]
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    # each call: the group it was given, then a job id (as sbatch answers)
    fake.write_text(f'#!/bin/bash\necho "$WANDB_RUN_GROUP" >> {tmp_path}/groups\necho "Submitted batch job $RANDOM"\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL", "TEACHER", "RUN_DIR", "SBATCH", "RL")}
    env.update(PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}", RUN_ROOT=str(tmp_path / "runs"))

    def chain(**extra) -> list[str]:
        (tmp_path / "groups").unlink(missing_ok=True)
        r = subprocess.run(["bash", str(root / "slurm/chain.sh")], env={**env, **extra}, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return (tmp_path / "groups").read_text().split()

    made = chain()
    assert len(made) == 4 and len(set(made)) == 1 and made[0].startswith("chain-wan1.3b_480p-")
    assert chain(WANDB_RUN_GROUP="study-3") == ["study-3"] * 4
    a, b = wandb_group(tmp_path / "make-run"), wandb_group(tmp_path / "other" / "make-run")
    assert a == wandb_group(tmp_path / "make-run") and a != b and a.startswith("make-run-")


def test_parameter_counts_count_a_shared_tensor_once_overall_and_frozen_networks_as_untrainable():
    import torch

    from trackstream.trainer.metrics import parameter_counts

    a, frozen = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2).requires_grad_(False)
    b = torch.nn.Sequential(a, torch.nn.Linear(4, 1))  # holds a's tensors too
    b[1].bias.requires_grad_(False)
    counts = parameter_counts({"a": a, "b": b}, {"frozen": frozen})
    assert counts["a"] == {"total": 16, "trainable": 16} and counts["b"] == {"total": 21, "trainable": 20}
    assert counts["frozen"] == {"total": 10, "trainable": 0} and counts["all"] == {"total": 31, "trainable": 20}
