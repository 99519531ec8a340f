"""The benchmarks run (their figures are not asserted: speed is measured by running them, not by tests):
the teacher step benchmark on a shrunk Wan 2.2 TI2V-5B (48-channel latents at H/16, ti2v layout, clean
first frame, activation checkpointing), the real configs it times on a GPU built on meta with the
in_dim their layouts need, and the streaming benchmark on the tiny flavor."""

import dataclasses
import json

import pytest
import torch

from trackstream.bench.stream import main as bench_stream
from trackstream.bench.train import REAL_RECIPES, bench, recipe_config
from trackstream.models.motion_wan import build_motion_wan
from trackstream.models.tracks import latent_frames
from trackstream.train.teacher.objective import TeacherConfig

SMALL = dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2)


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL_RECIPES)
def test_bench_train_runs_each_real_config_shrunk(name):
    """The GPU benchmark's exact path (layout, CLIP tokens of the i2v 1.3B, codec stride, checkpointing)
    on CPU with only the DiT width and the frame size shrunk."""
    real, shape = recipe_config(name)
    model = dataclasses.replace(real, overrides=SMALL)
    spatial = shape["spatial"]
    out = bench(
        model=model,
        frames=9,
        height=4 * spatial,
        width=8 * spatial,
        spatial=spatial,
        tracks=8,
        batch=1,
        text_len=8,
        text_dim=16,
        steps=1,
        warmup=0,
        device=torch.device("cpu"),
        checkpointing=True,
        bf16=False,
        stage=TeacherConfig(clean_first_frame=real.layout == "ti2v"),
    )
    assert out["tokens_per_sample"] == 3 * 2 * 4  # 3 latent frames x (4 / 2) x (8 / 2) patches
    assert out["step_time_s"] > 0 and out["model_tflops_per_step"] > 0


@pytest.mark.slow
def test_the_real_configs_build_with_their_layouts_in_dim():
    in_dims = {}
    for name in REAL_RECIPES:
        model, shape = recipe_config(name)
        assert model.init_from is None  # random weights: the benchmark reads no checkpoint
        net = build_motion_wan(model, text_encoder_dim=4096, device="meta")
        in_dims[name] = (net.dit.in_dim, net.latent_channels, shape["spatial"])
    assert in_dims == {"teacher_wan1.3b_480p": (48, 16, 8), "teacher_wan2.2_5b_704p": (64, 48, 16)}


@pytest.mark.slow  # the streaming benchmark command: rolling and full runs
def test_bench_stream_runs_on_the_tiny_flavor(tmp_path):
    out = tmp_path / "stream.json"
    bench_stream(
        [
            "--chunks",
            "4",
            "--measure",
            "1,4",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--height",
            "64",
            "--width",
            "64",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"rolling", "full"}


@pytest.mark.slow  # the training benchmark command at the tiny teacher's size
def test_bench_train_times_the_tiny_teacher_at_its_codec_latent_size(capsys):
    from trackstream.bench.train import main

    main(["--steps", "1", "--warmup", "0", "--threads", "1"])
    out = json.loads(capsys.readouterr().out)
    # tiny_teacher: 64x64 frames, tiny AE patch 4 -> 16x16 latents, DiT patch 2 -> 8x8 tokens per latent frame
    assert out["config"] == "tiny_teacher" and (out["height"], out["width"]) == (64, 64)
    assert out["tokens_per_sample"] == (latent_frames(out["frames"])) * 8 * 8


@pytest.mark.slow  # the drag benchmark command: plain and dragged streams
def test_bench_drag_times_plain_and_dragged_chunks(tmp_path):
    from trackstream.bench.drag import main as bench_drag

    out = tmp_path / "drag.json"
    res = bench_drag(
        [
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--iterations",
            "1",
            "--keep",
            "x0,latent",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    assert set(res["rf"]) == {"I=1 keep=x0", "I=1 keep=latent"} and all(v > 0 for v in res["rf"].values())
    assert json.loads(out.read_text())["frames_per_chunk"] == 12


def test_the_step_bench_builds_the_teacher_objective_the_training_builds():
    """bench.train's objective comes from the teacher unit's one constructor: how tracks are splatted and ordered
    is the network's (a bilinear or FastVideo-convention network is benchmarked as it trains)."""
    import torch

    from trackstream.bench.train_setup import training_setup
    from trackstream.models.motion_wan import ModelConfig

    for splat, convention in (("bilinear", "trackstream"), ("nearest", "fastvideo")):
        model = ModelConfig(
            flavor="tiny",
            track_splat=splat,
            track_convention=convention,
            overrides={"num_layers": 1, "num_heads": 2},
        )
        net, _, _, obj = training_setup(
            model, text_dim=16, device=torch.device("cpu"), checkpointing=False, compile=False, stage=None,
            shift=1.0, height=32, width=32,
        )  # fmt: skip
        assert (obj.splat, obj.convention) == (net.track_splat, net.track_convention) == (splat, convention)
