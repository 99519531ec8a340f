"""``python -m trackstream.eval`` end to end at debug sizes: a tiny teacher and its ODE-init student scored in one
table (each with and without tracks) next to the ground truth and the frozen first frame; the videos
it writes are a benchmark folder that scores again as a run and serves as a benchmark."""

import json
from pathlib import Path

import numpy as np
import pytest
from test_docs_run import EVAL_RUN, EVAL_RUNS, run_documented

from conftest import cli_env

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["debug=tiny", "data.num_frames=25", "trainer.num_threads=1", "eval.enabled=false", "logger.progress_bar=false"]


def _env():
    return cli_env(OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, run_module):
    root = tmp_path_factory.mktemp("eval_runs")
    t, o = root / "teacher", root / "ode"
    run_module(
        "trackstream.train", *TRAIN, "experiment=tiny_teacher", "trainer.max_steps=2", f"hydra.run.dir={t}", env=_env()
    )
    run_module(
        "trackstream.train",
        *TRAIN,
        "experiment=tiny_ode_init",
        f"stage.teacher={t / 'export' / 'teacher'}",
        "stage.ode_pairs.num_pairs=2",
        "stage.ode_pairs.teacher_steps=3",
        "stage.ode_pairs.batch_size=2",
        "trainer.max_steps=2",
        f"hydra.run.dir={o}",
        env=_env(),
    )
    return {
        "teacher": t / "export" / "teacher",
        "student": o / "export" / "student",
        "codec": t / "codec" / "codec.pt",
        "config": t / "config.yaml",
    }


@pytest.mark.slow
def test_one_command_scores_several_runs_with_reference_rows(runs, tmp_path, run_module):
    out = tmp_path / "eval"
    # docs/evaluation.md's lines as written, the page's variables this module's runs
    shell = dict(TEACHER=runs["teacher"], STUDENT=runs["student"], CODEC=runs["codec"], CONFIG=runs["config"])
    r = run_documented(EVAL_RUNS, tmp_path, "benchmark.num_samples=3", "generate.sampler.steps=2", f"out={out}",
                       variables=shell)  # fmt: skip
    said = r.stdout + r.stderr  # the teacher rows say what their time goes to and the knob that shortens it
    assert "teacher (with tracks): 3 clip(s) x 6 network evaluations (generate.sampler.steps=2)" in said, said[-3000:]
    res = json.loads((out / "metrics.json").read_text())
    rows = res["results"]
    assert list(rows) == [
        "teacher (with tracks)",
        "teacher (without tracks)",
        "student (with tracks)",
        "student (without tracks)",
        "ground_truth",
        "codec_round_trip",
        "oracle_copier",
        "frozen",
    ]
    for name, r in rows.items():
        assert np.isfinite(r["epe"]) and np.isfinite(r["ssim"]) and np.isfinite(r["proxy_fvd"]), name
        assert len(r["per_sample"]["epe"]) == 3 and len(r["epe_per_frame"]) == 25
    assert rows["ground_truth"]["proxy_fvd"] == 0.0 and rows["ground_truth"]["ssim"] == pytest.approx(1.0)
    assert rows["ground_truth"]["epe"] < rows["frozen"]["epe"]  # the tracker follows the true motion
    # the floors beside the runs (eval.floors; this test's codec is fitted for a few steps only)
    assert rows["codec_round_trip"]["psnr"] != rows["oracle_copier"]["psnr"]
    table = (out / "table.md").read_text()
    assert "| student (with tracks) |" in table and "not FVD" in table
    # speed beside quality: frames/s and network evaluations per video of each network row
    assert "frames/s ↑" in table and "NFE / video ↓" in table and "on cpu, fp32" in table
    assert rows["teacher (with tracks)"]["nfe"] == 2 * 3  # 2 steps x joint guidance's 3 terms
    assert rows["student (with tracks)"]["nfe"] > 0 and rows["student (with tracks)"]["frames_per_s"] > 0
    assert "nfe" not in rows["ground_truth"]
    for plot in ("epe.png", "psnr.png", "epe_per_frame.png", "overlay_frozen.png"):
        assert (out / "plots" / plot).is_file()

    # the written videos are a run (a folder of <id>.mp4) and a benchmark (mp4 + tracks.npy)
    folder = out / "videos" / "student_with_tracks"
    again = tmp_path / "again"
    run_documented(
        EVAL_RUN, tmp_path, "benchmark.num_samples=3", "metrics=[epe,psnr,ssim]", "references=[ground_truth]",
        f"out={again}", "wandb.enabled=true", variables=dict(shell, NET=folder),
    )  # fmt: skip
    rerun = json.loads((again / "metrics.json").read_text())["results"]["student_with_tracks"]
    assert abs(rerun["epe"] - rows["student (with tracks)"]["epe"]) < 1.0  # H.264 round trip only
    logged = list((again / "wandb").glob("offline-run-*/files/media/images/eval/*.png"))  # the plots went to W&B
    assert any("epe" in p.name for p in logged), logged
    bench = tmp_path / "bench"
    run_module(
        "trackstream.eval",
        f"run={folder}",
        "benchmark.name=videos",
        f"benchmark.path={folder}",
        "metrics=[psnr]",
        "references=[frozen]",
        f"out={bench}",
        env=_env(),
    )
    assert json.loads((bench / "metrics.json").read_text())["results"]["student_with_tracks"]["psnr"] == float("inf")


def test_bad_requests_name_the_field(tmp_path):
    from trackstream.eval.command import EvalCommandConfig

    with pytest.raises(ValueError, match="nothing to score"):
        EvalCommandConfig()
    with pytest.raises(ValueError, match="metrics \\['fvd2'\\] unknown"):
        EvalCommandConfig(run="x", metrics=["fvd2"])
    from trackstream.eval.harness import WeightsConfig

    with pytest.raises(ValueError, match="weights.i3d"):
        WeightsConfig().require("fvd", "i3d")


def test_too_few_samples_for_a_distribution_metric_refuse_before_generating(tmp_path):
    """FID / FVD / proxy FVD need a covariance: one video is refused up front, before any generation."""
    from trackstream.eval.command import EvalCommandConfig, EvalRefused, evaluate

    cfg = EvalCommandConfig(
        run=str(ROOT / "assets" / "tiny-student" / "student"),
        data_config=str(ROOT / "assets" / "tiny-student" / "config.yaml"),
        benchmark={"name": "synthetic", "num_samples": 1},
        metrics=["epe", "proxy_fvd"],
        generate={"codec": {"name": "tiny-ae", "checkpoint": str(ROOT / "assets" / "tiny-teacher")}, "device": "cpu"},
        out=str(tmp_path / "out"),
    )
    with pytest.raises(EvalRefused, match=r"\['proxy_fvd'\] compare feature distributions and need at least 2"):
        evaluate(cfg)
    assert not (tmp_path / "out").exists()  # nothing generated, nothing written
