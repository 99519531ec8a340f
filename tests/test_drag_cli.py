"""``python -m trackstream.stream.drag`` end to end on a random tiny student export: a benchmark scene saved in
DragStream's format is replayed (animate and edit, both methods together) and compared with the undragged
stream; the video, the overlay and the metrics are written, the handle error starts at zero."""

import json

import pytest
import torch

from trackstream.eval.drag_scenes import make_scenes, write_scene
from trackstream.models.codecs import build_codec
from trackstream.models.motion_wan import ModelConfig, build_motion_wan, save_network
from trackstream.stream.drag.__main__ import main


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
    export = save_network(
        net.state_dict(), tmp_path / "student", model_cfg=cfg, text_encoder_dim=384, ema=False, conventions=conventions
    )
    codec = build_codec("tiny-ae", width=16, patch=4)
    torch.save(codec.checkpoint_dict(), tmp_path / "codec.pt")
    scene = next(s for s in make_scenes(8, seed=2) if s.kind == "translate" and s.instruction.mode == mode)
    folder = write_scene(scene, tmp_path / "scene")
    out = tmp_path / "out"
    assert (
        main(
            [
                "--student",
                str(export),
                "--codec",
                str(tmp_path / "codec.pt"),
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
