"""CPU rehearsal of the 14B -> 1.3B chain from its own experiment files under FSDP2 over a world of one (bf16
policy, activation checkpointing; tests/test_real_path.py runs the 1.3B's stages on two processes), from the two release folders a user downloads under ``paths.data_dir``
(Wan2.1-Fun-14B-Control for the teacher, Wan2.1-Fun-1.3B-Control for the student) and shards from
``python -m trackstream.data.prepare``: the 14B teacher trains, samples the ODE pairs, a network of the
1.3B flavor starts from the 1.3B release (the teacher's track head and text projection) and regresses
them, then DMD runs with the 14B as the real score and a critic of the student's size. Only widths and
pixels shrink, and the teacher stays wider than the student (96 vs 64 channels, 3 vs 2 blocks); the clip
length and chunking are the real ones (81 frames = 7 chunks of 3). Full-size shapes:
tests/test_real_arithmetic.py."""

import json
from pathlib import Path

import pytest
import torch
from release_helpers import write_release_folder
from test_docs_run import REAL_14B, run_documented
from test_real_path import DIMS, SHRINK, _modules

from trackstream.data.clips import DataConfig, make_world
from trackstream.data.video_io import write_mp4

TEACHER_DIMS = dict(dim=96, ffn_dim=192, num_heads=3, num_layers=3)
H, W, T = 64, 112, 81


def _dit_shapes(export: Path) -> tuple[str, int, int]:
    meta = json.loads((export / "network.json").read_text())["model"]
    return meta["flavor"], int(meta["overrides"]["dim"]), int(meta["overrides"]["num_layers"])


@pytest.mark.slow
@pytest.mark.docs
def test_a_14b_teacher_distils_into_a_1_3b_student_under_fsdp(tmp_path, run_module, srun):
    launch = _modules(run_module, srun)
    data = tmp_path / "data"
    big = write_release_folder(
        data / "Wan2.1-Fun-14B-Control", flavor="wan2.1-fun-14b-control", parts=("vae", "t5", "clip"), device="cpu",
        **TEACHER_DIMS,
    )  # fmt: skip
    write_release_folder(
        data / "Wan2.1-Fun-1.3B-Control", flavor="wan2.1-fun-1.3b-control", parts=("vae", "t5", "clip"), device="cpu",
        **DIMS,
    )  # fmt: skip
    videos = tmp_path / "videos"
    videos.mkdir()
    world = make_world(DataConfig(height=H, width=W, num_frames=T + 4))
    for i in range(4):
        clip = world.generate(100 + i)
        write_mp4(videos / f"clip{i}.mp4", clip["frames"], fps=16)
        (videos / f"clip{i}.txt").write_text(clip["caption"])
    t5 = f"{{_target_: trackstream.models.text_encoders.build_text_encoder, name: umt5, path: {big}}}"
    launch(
        "trackstream.data.prepare", f"input={videos}", f"output={data / 'shards'}", f"num_frames={T}", "fps=16",
        f"height={H}", f"width={W}", "grid_size=6", "samples_per_shard=2", "num_workers=0", "progress=false",
        f"text_encoder={t5}", procs=1,
    )  # fmt: skip
    # docs/recipes.md's 14B chain as written, each line as one task of a Slurm step, shrunk by overrides after
    # its own (widths, pixels, steps); the student's widths are the 1.3B release's (DIMS)
    shell = dict(D=data, R14=tmp_path / "r14", T14=tmp_path / "r14" / "teacher" / "export" / "teacher")
    common = [
        *[s for s in SHRINK if not s.startswith("+model.overrides")],
        f"data.num_frames={T}",
        f"data.height={H}",
        f"data.width={W}",
        "trainer.max_steps=2",
        "trainer.global_batch=2",
    ]
    student_dims = [f"+model.overrides.{k}={v}" for k, v in DIMS.items()]  # the model the distillation trains
    t, pairs, ode, dmd = (tmp_path / "r14" / n for n in ("teacher", "pairs", "ode_init", "dmd"))

    def run(stage: str, *overrides: str) -> None:
        run_documented(REAL_14B[stage], tmp_path, *common, *overrides, variables=shell)

    run("teacher", *(f"+model.overrides.{k}={v}" for k, v in TEACHER_DIMS.items()))
    teacher = t / "export" / "teacher"
    assert _dit_shapes(teacher) == ("wan2.1-fun-14b-control", 96, 3)

    run(
        "pairs", *student_dims, "stage.ode_pairs.num_pairs=4", "stage.ode_pairs.teacher_steps=3",
        "stage.ode_pairs.shard_size=1",
    )  # fmt: skip
    assert any((pairs / "ode_pairs").iterdir())  # the pair shards the next two lines read
    run("ode_init", *student_dims)
    student = ode / "export" / "student"
    assert _dit_shapes(student) == ("wan2.1-fun-1.3b-control", 64, 2)
    log = (ode / "train.log").read_text()
    assert "stage ode_init | fsdp x 1 (cpu:0, bf16)" in log

    run("dmd", *student_dims, "stage.update_ratio=2")
    res = json.loads((dmd / "results.json").read_text())
    assert res["generator_updates"] == 1 and res["critic_updates"] == 2
    assert res["config"]["critic"] == "student"  # the generator's starting weights: a critic of the student's size
    params = json.loads((dmd / "params.json").read_text())
    assert params["critic"]["total"] == params["generator"]["total"] < params["teacher"]["total"]
    assert params["teacher"]["trainable"] == 0
    assert _dit_shapes(dmd / "export" / "student") == ("wan2.1-fun-1.3b-control", 64, 2)
    rows = [json.loads(x) for x in (dmd / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(v)) for r in rows for k, v in r.items() if k.startswith("train/loss"))
