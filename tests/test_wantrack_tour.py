"""docs/wantrack.md's tour, its lines in order as a reader types them beside the checkout's examples/, on the two
shrunk bundles its first lines write (at the 64x112 they record): a FastVideo track file written by the camera
line, streams from Track-v0 on it and on pixel tracks, both DragStream methods, the demo's startup and one
request, the bundle as a TrackStream export (its stream against the bundle's, and again after the export and the
bundle were moved together, no codec typed) and as a diffusers pipeline (the
page's Python block streams it), and the two ``eval`` lines on the small DAVIS and MoveBench folders the benchmark
tests write. Shrunk only by words typed after the lines: the camera moves' 81 frames as 25, no chunk after a drag,
one sample per benchmark, the teacher's sampler in 2 steps, MoveBench scored without its RAFT flow EPE (its cost
here; tests/test_movebench.py scores it)."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from docs_lines import WANTRACK_BUNDLES, WANTRACK_TOUR
from test_davis_benchmark import write_davis
from test_docs_run import run_documented, shell_line, start_server, with_words
from test_documented_commands import words
from test_movebench import write_movebench

from conftest import free_port
from trackstream.data.video_io import decode_video, probe_video, write_mp4

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 25  # 1 + 12 + 12: Track-v0's sampled one-latent chunk 0, then two chunks of 3 latent frames
# PSNR (dB) of two mp4s of one stream: on the CPU a product's last bit depends on where the weights lie in memory,
# which a random-weight network amplifies over the frames (measured ~48-49 dB); a stream of other tracks ~31 dB
SAME = 40


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def _frames(path: Path) -> np.ndarray:
    return decode_video(path)[0]


def _demo(line: tuple[str, str], cwd: Path) -> None:
    """The demo line as written (a free port typed after it): it starts on the bundle, answers ``/health``, and
    Ctrl-C ends it with status 0."""
    port = free_port()
    proc, health = start_server(words(with_words(shell_line(*line, {}), ["--port", str(port)])), cwd, port)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert health is not None and health["sessions"] == 0, out[-2000:]
    assert proc.returncode == 0 and "[demo] 112x64" in out and "Traceback" not in out, out[-2000:]


@pytest.mark.slow
@pytest.mark.docs
def test_the_wantrack_tour_runs_as_written(tmp_path, monkeypatch):
    from trackstream.models.motion_wan import load_network, read_network_json

    here = tmp_path / "reader"
    here.mkdir()
    (here / "examples").symlink_to(ROOT / "examples")
    (student, teacher, track_file, rabbit, camera, pan, drag, drag_latent, demo, export, from_export, pipeline, davis,
     move) = WANTRACK_TOUR  # fmt: skip
    assert (student, teacher) == WANTRACK_BUNDLES
    run_documented(student, here)  # the page's own lines record the shrunk frame
    run_documented(teacher, here)
    assert read_network_json(here / "Track-v0")["conventions"]["height"] == 64

    # streams: a track file as FastVideo's tooling writes it (a zoom's, written by the page's camera line; theirs
    # with IDs: tests/test_wantrack.py), then a pan's pixel tracks
    run_documented(track_file, here, args=("--frames", str(FRAMES)))
    written = torch.load(here / "tracks.pt", weights_only=True)
    assert sorted(written) == ["track_ids", "track_points", "track_visibility"]
    assert written["track_points"].shape == (1, FRAMES, 256, 2) and 0 <= written["track_points"][0, 0].min() < 0.1
    r = run_documented(rabbit, here)
    assert "112x64, 3 chunks (c3s1w2frk4f1)" in r.stdout and "256 tracks" in r.stdout, r.stdout
    info = probe_video(here / "rabbit.mp4")
    assert (info.num_frames, info.width, info.height) == (FRAMES, 112, 64)
    run_documented(camera, here, args=("--frames", str(FRAMES)))
    assert np.load(here / "pan.npy").shape[0] == FRAMES
    run_documented(pan, here)
    assert probe_video(here / "pan.mp4").num_frames == FRAMES
    assert _psnr(_frames(here / "pan.mp4"), _frames(here / "rabbit.mp4")) < SAME  # other tracks: another stream

    # DragStream: the student's own track head, then the latent optimisation on an edit
    r = run_documented(drag, here, args=("--after", "0"))
    assert "method tracks" in r.stdout
    r = run_documented(drag_latent, here, args=("--after", "0"))
    for out, method in (("tv0-drag", "tracks"), ("tv0-drag-latent", "latent")):
        metrics = json.loads((here / "runs" / out / "metrics.json").read_text())
        assert metrics["method"] == method and np.isfinite(metrics["trajectories"][0]["point_error"]), metrics
        assert probe_video(here / "runs" / out / "video.mp4").num_frames > 1

    _demo(demo, here)

    # the bundle as a TrackStream export: the same weights and conventions, and its stream the bundle's
    run_documented(export, here)
    out = here / "Track-v0-export"
    assert sorted(p.name for p in out.iterdir()) == ["dit", "heads.pt", "network.json"]
    ours, theirs = load_network(out), load_network(here / "Track-v0")
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert ours.conventions == theirs.conventions and ours.track_encoder.convention == "fastvideo"
    assert read_network_json(out)["model"]["text_encoder_path"] == str(here / "Track-v0" / "text_encoder")
    assert json.loads((out / "network.json").read_text())["codec"]["checkpoint"] == "../Track-v0/vae"
    run_documented(from_export, here)  # no codec typed: the bundle's vae/ the export records
    video, bundle_video = _frames(here / "rabbit-export.mp4"), _frames(here / "rabbit.mp4")
    assert video.shape == bundle_video.shape and _psnr(video, bundle_video) > SAME  # float rounding only
    # the export and the bundle moved together (the umT5, CLIP and VAE it names): it streams as before
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("Track-v0", "Track-v0-export"):
        os.rename(here / name, moved / name)
    (moved / "examples").symlink_to(ROOT / "examples")
    os.symlink(here / "tracks.pt", moved / "tracks.pt")
    run_documented(from_export, moved)
    assert _psnr(_frames(moved / "rabbit-export.mp4"), video) > SAME
    for name in ("Track-v0", "Track-v0-export"):
        os.rename(moved / name, here / name)

    # the diffusers pipeline: the page's Python block streams the pan as generate streamed it
    run_documented(pipeline, here)
    assert (here / "Track-v0-pipeline" / "text_encoder" / "tokenizer").is_dir()
    page = (ROOT / "docs" / "wantrack.md").read_text()
    block = next(b.split("```", 1)[0] for b in page.split("```python\n")[1:] if "Track-v0-pipeline" in b)
    monkeypatch.chdir(here)
    scope = {}
    exec(block, scope)
    frames = (np.asarray(scope["frames"]) * 255).round().astype(np.uint8)
    assert frames.shape == (FRAMES, 64, 112, 3)
    write_mp4(tmp_path / "pipeline.mp4", frames, fps=16)  # as generate writes its frames (the codec's loss alike)
    assert _psnr(_frames(tmp_path / "pipeline.mp4"), _frames(here / "pan.mp4")) > SAME  # the same stream

    # scores: DAVIS' protocol for the teacher and the student, MoveBench's for the student
    fast = ("benchmark.num_samples=1", "save_videos=false")
    run_documented(
        davis, here, f"benchmark.path={write_davis(tmp_path / 'DAVIS')}", "benchmark.height=48", "benchmark.width=80",
        "benchmark.grid_size=4", "generate.sampler.steps=2", *fast,
    )  # fmt: skip
    res = json.loads((here / "runs" / "wantrack-davis" / "metrics.json").read_text())
    rows = res["results"]
    bench = res["config"]["benchmark"]
    assert (bench["num_frames"], bench["frame_step"]) == (73, 12)  # the lengths both make: the student's 1 + 12k
    assert len(rows["student"]["epe_per_frame"]) == len(rows["teacher"]["epe_per_frame"]) == 13  # 16 frames: 13
    assert {"teacher", "student", "ground_truth", "codec_round_trip", "frozen"} <= set(rows), rows
    assert all(np.isfinite(rows[r][m]) for r in ("teacher", "student") for m in ("psnr", "ssim", "epe"))
    assert rows["student"]["nfe"] == 10 and rows["teacher"]["nfe"] < 10  # 2 chunks x 5; the teacher in 2 steps
    assert rows["frozen"]["motion_amplitude"] == 0
    movebench = tmp_path / "MoveBench"
    write_movebench(movebench, frames=13)
    run_documented(move, here, f"benchmark.path={movebench}", "metrics=[psnr,ssim]", *fast)
    res = json.loads((here / "runs" / "wantrack-movebench" / "metrics.json").read_text())
    assert res["num_samples"] == 1 and np.isfinite(res["results"]["Track-v0"]["psnr"]), res["results"]
    assert os.path.isfile(here / "runs" / "wantrack-movebench" / "table.md")
