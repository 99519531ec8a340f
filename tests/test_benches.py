"""The benchmarks run (their figures are not asserted: speed is measured by running them, not by tests):
the teacher step benchmark on a shrunk Wan 2.2 TI2V-5B (48-channel latents at H/16, ti2v layout, clean
first frame, activation checkpointing), the real configs it times on a GPU built on meta with the
in_dim their layouts need, and the streaming benchmark on the tiny flavor."""
import json

import torch

from eval.bench_stream import main as bench_stream
from models.motion_wan import ModelConfig, build_motion_wan
from train.bench_train import REAL_CONFIGS, bench
from train.teacher import TeacherConfig

SMALL = dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2)


def test_bench_train_runs_a_shrunk_5b_teacher_step():
    model = ModelConfig(flavor="wan2.2-ti2v-5b", layout="ti2v", track_channels=16, text_encoder="umt5", overrides=SMALL)
    out = bench(model=model, frames=9, height=64, width=128, spatial=16, tracks=8, batch=1, text_len=8, text_dim=16,
                steps=1, warmup=0, device=torch.device("cpu"), checkpointing=True, bf16=False,
                stage=TeacherConfig(clean_first_frame=True))
    assert out["tokens_per_sample"] == 3 * 2 * 4  # 3 latent frames x (64 / 16 / 2) x (128 / 16 / 2)
    assert out["step_time_s"] > 0 and out["model_tflops_per_step"] > 0


def test_the_real_configs_build_with_their_layouts_in_dim():
    in_dims = {}
    for name, model, shape in REAL_CONFIGS:
        net = build_motion_wan(model, text_encoder_dim=4096, device="meta")
        in_dims[name] = (net.dit.in_dim, net.latent_channels, shape["spatial"])
    assert in_dims == {"teacher_wan1.3b_480p": (48, 16, 8), "teacher_wan2.2_5b_704p": (64, 48, 16)}


def test_bench_stream_runs_on_the_tiny_flavor(tmp_path):
    out = tmp_path / "stream.json"
    bench_stream(["--chunks", "4", "--measure", "1,4", "--repeats", "1", "--warmup", "0", "--height", "64",
                  "--width", "64", "--threads", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"rolling", "full"}


def test_bench_train_times_the_tiny_teacher_at_its_codec_latent_size(capsys):
    from train.bench_train import main

    main(["--steps", "1", "--warmup", "0", "--threads", "1"])
    out = json.loads(capsys.readouterr().out)
    # tiny_teacher: 64x64 frames, tiny AE patch 4 -> 16x16 latents, DiT patch 2 -> 8x8 tokens per latent frame
    assert out["config"] == "tiny_teacher" and (out["height"], out["width"]) == (64, 64)
    assert out["tokens_per_sample"] == (1 + (out["frames"] - 1) // 4) * 8 * 8
