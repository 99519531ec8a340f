"""``python -m trackstream.eval placements=[...]``: each network run given every held-out clip once per placement of
its input tracks and scored on fixed points per clip (trackstream/eval/placements.py), as docs/evaluation.md's line
runs it on the shipped teacher and student; a folder of videos left out; bad requests refused in one line."""

import json
from pathlib import Path

import numpy as np
import pytest
from docs_lines import EVAL_PLACEMENTS
from test_docs_run import run_documented

from conftest import cli_env

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "assets" / "tiny-student" / "config.yaml"
SHRUNK = (  # the documented line at a test's size: 1 clip, EPE only, the with-tracks rows, a 2-step teacher
    "benchmark.num_samples=1",
    "metrics=[epe]",
    "references=[ground_truth,frozen]",
    "modes=[with_tracks]",
    "save_videos=false",
    "generate.sampler.steps=2",
    "generate.device=cpu",
)


def _ground_truth_folder(path: Path) -> Path:
    """The benchmark's first clip written as a run: a folder of <id>.mp4 (no network to give tracks to)."""
    from trackstream.eval.benchmarks import BenchmarkConfig, load_benchmark, write_video_folder
    from trackstream.eval.command import EvalCommandConfig, benchmark_world

    world = benchmark_world(EvalCommandConfig(run="x", data_config=str(CONFIG)), None)
    samples = load_benchmark(BenchmarkConfig(num_samples=1), data_cfg=world)
    return write_video_folder(path, {s.id: s.frames for s in samples})


@pytest.mark.slow
@pytest.mark.docs
def test_the_command_shows_the_placement_table(tmp_path):
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    copy, out = _ground_truth_folder(tmp_path / "copy"), tmp_path / "eval"
    r = run_documented(
        EVAL_PLACEMENTS, tmp_path, *SHRUNK, "placements=[lattice,none,sparse]",
        f"runs={{teacher: assets/tiny-teacher/teacher, copy: {copy}}}", f"out={out}",
    )  # fmt: skip
    placed = json.loads((out / "placements.json").read_text())
    assert json.loads((out / "metrics.json").read_text())["placements"] == placed
    assert list(placed["models"]) == ["teacher", "student"] and placed["left_out"] == ["copy"]
    assert "copy is a folder of videos" in r.stdout + r.stderr
    assert placed["placements"] == ["lattice", "none", "sparse"] and placed["clips"] == 1
    assert placed["input_points"]["none"] == [0] and placed["input_points"]["sparse"] == [24]
    floors = placed["floors"]
    assert floors["frozen"]["epe_over_frozen"] == 1.0
    assert floors["ground_truth"]["epe"] < floors["frozen"]["epe"]  # the tracker follows the true motion
    for model, rows in placed["models"].items():
        assert list(rows) == ["lattice", "none", "sparse"], model
        for name, row in rows.items():
            assert np.isfinite(row["epe"]) and row["clips"] == 1, (model, name)
        assert rows["lattice"]["epe"] < rows["none"]["epe"], model  # the tracks move the video
    table = (out / "table.md").read_text()
    section = table[table.index("## Where the tracks are put") :]
    assert (out / "placements.md").read_text().strip() == section.strip()
    for line in ("| *ground-truth video* |", "| *frozen first frame* |", "| teacher | lattice |", "| teacher | none |",
                 "| student | lattice |", "| student | none |", "| student | sparse |"):  # fmt: skip
        assert line in section, line
    assert "Left out (folders of videos" in section and "| copy |" not in section
    assert "| student |" in table[: table.index("## Where")]  # the command's own table stays


@pytest.mark.slow
def test_bad_placements_are_refused_in_one_line(tmp_path, run_module):
    from trackstream.eval.command import EvalCommandConfig

    run = str(ROOT / "assets" / "tiny-student" / "student")
    with pytest.raises(ValueError, match=r"^placements=\['lattice', 'grid'\]: choose among \['lattice', 'shifted'"):
        EvalCommandConfig(run=run, placements=["lattice", "grid"])
    with pytest.raises(ValueError, match=r"^placements=\['lattice'\]: benchmark.name=videos gives no clips"):
        EvalCommandConfig(run=run, placements=["lattice"], benchmark={"name": "videos", "path": str(tmp_path)})
    with pytest.raises(ValueError, match=r"\['shifted'\] need exact tracks of new points.*benchmark.name=shards"):
        EvalCommandConfig(
            run=run, placements=["lattice", "shifted"], benchmark={"name": "shards", "path": str(tmp_path)}
        )
    assert EvalCommandConfig(run=run).placements == []  # off by default
    assert EvalCommandConfig(run=run, placements=["none", "none", "sparse"]).placements == ["none", "sparse"]
    # the command line: the one-line error, no traceback, no output folder left behind
    out = tmp_path / "out"
    r = run_module(
        "trackstream.eval", f"run={run}", f"data_config={CONFIG}", "placements=[lattice,grid]", f"out={out}",
        check=False, env=cli_env(OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        "error: placements=['lattice', 'grid']: choose among ['lattice', 'shifted', 'demo', 'random', 'sparse', 'none']"
    ]
    assert not out.exists()
