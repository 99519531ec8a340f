"""``python -m trackstream.stream.drag`` end to end on a random tiny student export: a benchmark scene saved in
DragStream's format is replayed (animate and edit, both methods together) and compared with the undragged
stream; the video, the overlay and the metrics are written, the handle error starts at zero. docs/drag-instructions.md's
line on the shipped example files (a real frame) runs as written on the shipped student; the default method is
decided by the loaded network."""

import json
from pathlib import Path

import pytest
import torch
from docs_lines import DRAG_EXAMPLE
from test_docs_run import run_documented

from trackstream.eval.drag_scenes import make_scenes, write_scene
from trackstream.models.codecs import build_codec
from trackstream.models.motion_wan import ModelConfig, build_motion_wan, save_network
from trackstream.stream.drag.__main__ import main
from trackstream.stream.drag.editor import default_method

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # the command end to end: two streams, the optimisation, the video and the metrics
@pytest.mark.parametrize("mode", ["animate", "edit"])
def test_the_cli_replays_a_dragstream_instruction(tmp_path, mode):
    torch.manual_seed(0)
    cfg = {
        "flavor": "tiny",
        "layout": "wan_i2v",
        "track_channels": 8,
        "text_encoder": "minilm",
        "overrides": {"num_heads": 2, "num_layers": 1},
    }
    net = build_motion_wan(ModelConfig(**cfg), text_encoder_dim=384)
    torch.nn.init.normal_(net.dit.head.head.weight, std=0.05)
    conventions = {
        "height": 64,
        "width": 64,
        "num_frames": 25,
        "causal": {
            "chunk_frames": 3,
            "sink_chunks": 1,
            "window_chunks": 1,
            "first_chunk_frames": 1,
            "steps": 2,
            "shift": 3.0,
        },
    }
    codec = build_codec("tiny-ae", width=16, patch=4)
    torch.save(codec.checkpoint_dict(), tmp_path / "codec.pt")
    export = save_network(
        net.state_dict(),
        tmp_path / "student",
        model_cfg=cfg,
        text_encoder_dim=384,
        ema=False,
        conventions=conventions,
        codec={"name": "tiny-ae", "checkpoint": tmp_path / "codec.pt"},  # no run around it: the export records it
    )
    scene = next(s for s in make_scenes(8, seed=2) if s.kind == "translate" and s.instruction.mode == mode)
    folder = write_scene(scene, tmp_path / "scene")
    out = tmp_path / "out"
    assert (
        main(
            [
                "--student",
                str(export),  # no --codec: the one its network.json records
                "--image",
                str(folder / "image.png"),
                "--instruction",
                str(folder / "drag_trajectory.json"),
                "--method",
                "both",
                "--iterations",
                "1",
                "--after",
                "1",
                "--compare",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "video.mp4").stat().st_size > 0 and (out / "overlay.png").stat().st_size > 0
    frames = 25 if mode == "animate" else 13  # the edit re-generates chunk 1 (frames 1-12)
    assert metrics["frames"] == [0, frames] and metrics["rf"] > 0 and metrics["bg_psnr_vs_undragged"] > 0
    (traj,) = metrics["trajectories"]
    assert len(traj["handle_error"]) == frames and traj["handle_error"][0] < 0.5  # frame 0 is the query itself


@pytest.mark.parametrize("track_channels, method", [(8, "tracks"), (0, "latent")])
def test_the_default_method_is_the_one_the_loaded_network_takes(track_channels, method):
    cfg = {"flavor": "tiny", "track_channels": track_channels, "overrides": {"num_heads": 2, "num_layers": 1}}
    assert default_method(build_motion_wan(ModelConfig(**cfg), text_encoder_dim=384)) == method


@pytest.mark.slow  # the shipped student: the first frame, the dragged chunk, the tracking (~10 s on a quiet CPU)
def test_the_documented_drag_on_a_real_frame_runs_and_moves_the_object(tmp_path):
    """The page's line as written (``--after 0`` typed after it) in a folder holding ``examples/``: it picks the
    student's own tracks, prints a line per chunk as each is done, and the rabbit's handle moves along the 12-px
    drag (a handle left where it was would be 6 px off on average over these 13 frames: the intended offset rises
    from 0 to 12 px over the chunk). The shipped student, which knows the synthetic world only, moves this photo's
    rabbit about a third of the way (4.2 px off; docs/drag-instructions.md)."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    out = run_documented(DRAG_EXAMPLE, tmp_path, args=("--after", "0")).stdout.splitlines()
    assert out[0].startswith("method tracks (a track-conditioned student"), out[:3]
    chunks = [line.split(":")[0] for line in out if " chunk " in line]
    assert chunks == ["dragged chunk 0", "dragged chunk 1"], out
    assert "the drag (tracks)" in next(line for line in out if line.startswith("dragged chunk 1"))
    # a short summary, the figures in metrics.json (not ~35 lines of JSON on the terminal)
    assert any(line.startswith("  trajectory 0: handle off its path by") for line in out), out
    assert len(out) < 12 and not any(line.lstrip().startswith(("{", '"')) for line in out), out
    folder = tmp_path / "runs" / "drag-rabbit"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["method"] == "tracks" and metrics["frames"] == [0, 13]
    assert (folder / "video.mp4").stat().st_size > 0 and (folder / "overlay.png").stat().st_size > 0
    assert metrics["trajectories"][0]["handle_objmc"] < 0.8 * 6.0, metrics["trajectories"]
