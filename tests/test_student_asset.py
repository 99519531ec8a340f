"""The shipped student (assets/tiny-student): intact, made from the shipped teacher and codec, scored with make
run's evaluation (floors, every model, long-horizon windows, targets), and it streams the world it was trained on.
That it holds its picture on held-out clips, by the lab's targets, is the lab's test (lab/tests/test_shipped_quality.py).

It is the whole chain's student (``python -m lab.student_chain ship``: ODE init -> DMD -> RL) or,
while a chain on a new teacher is still running, make run's DMD student (``python -m lab.ship_student``);
its manifest's command says which, and each is checked for what it records."""

import json

import numpy as np
import pytest
import torch

from trackstream.models.formats.files import sha256
from trackstream.pipeline.releases import ASSET_DIR, STUDENT_DIR, verify_asset


def _chain(m: dict) -> bool:
    return "python -m lab.student_chain ship" in m["command"]


def test_the_shipped_student_is_intact_and_says_how_it_was_made():
    m = verify_asset(STUDENT_DIR)
    assert m["name"] == "tiny-student" and "python -m lab." in m["command"] and len(m["git_commit"]) == 40
    assert m["codec"]["sha256"] == sha256(ASSET_DIR / "codec.pt")  # the teacher release's codec, as trained with
    assert m["teacher_release"]["manifest_sha256"] == sha256(ASSET_DIR / "manifest.json")
    assert m["generator_updates"] == m["steps"]["dmd"] // 5 > 0 and m["bytes"] < 20 * 2**20  # 5 critic : 1 generator
    held = m["held_out"]
    assert held["num_heldout"] == 16 and held["num_frames"] == 25
    floors = m["floors"]  # the floors beside the models
    assert floors["epe_ground_truth"] < floors["epe_codec_round_trip"] < floors["epe_frozen_frame"]
    if _chain(m):
        assert m["steps"]["rl"] == m["policy_updates"] > 0  # the whole recipe: ODE init -> DMD -> RL
        assert {"teacher", "ode_init", "dmd", "rl"} <= set(held) and m["protocol"]["long_factor"] == 10
        shipped, long_students = held["rl"], {"ode_init", "dmd", "rl"}
        shipped = {f"student_{k}": v for k, v in shipped.items()}
    else:
        assert "make run" in m["command"] and "ship_student" in m["command"]
        shipped, long_students = held, {"ode_init", "student"}
    assert shipped["student_epe_with_tracks"] < shipped["student_epe_without_tracks"]
    assert set(m["long_horizon"]) == long_students
    for stage, streams in m["long_horizon"].items():
        assert set(streams) == {f"{w}_{s}_sink" for w in ("panning", "knowable") for s in ("with", "without")}
        assert {"1x", "4x", "10x"} <= set(streams["knowable_with_sink"]["windows"]), stage
    for name in ("codec_floor", "teacher_carries_content", "student_vs_teacher_epe", "dmd_gains_over_ode_init"):
        assert {"value", "threshold", "met"} <= set(m["targets"][name]), name
    net = json.loads((STUDENT_DIR / "student" / "network.json").read_text())
    assert net["conventions"]["causal"]["sink_chunks"] == 1


@pytest.mark.slow
def test_the_shipped_student_streams_the_world_it_was_trained_on():
    from omegaconf import OmegaConf

    from trackstream.models.network import Network
    from trackstream.stream.demo.session import world_for
    from trackstream.stream.engine import StreamingGenerator

    student = Network.open(STUDENT_DIR / "student")
    assert student.codec.checkpoint == str(ASSET_DIR / "codec.pt")  # its manifest's codec: the teacher release's
    net, codec, cond = student.for_inference()
    world = world_for(STUDENT_DIR / "student", 64, 64)
    teacher_world = OmegaConf.load(ASSET_DIR / "config.yaml").data.world
    assert world.camera_pan_prob == 1.0 and world.texture_scale == teacher_world.texture_scale  # the run's world
    clip = world.generate(3)
    engine = StreamingGenerator(net, codec, config=net.conventions.stream_config("student"))
    text, lens = cond.text_encoder.encode([clip["caption"]])
    image = torch.from_numpy(clip["frames"][0]).permute(2, 0, 1)[None].float() / 127.5 - 1
    state = engine.start(image, text, lens, seed=0)
    out, state = engine.step(state)
    out, state = engine.step(state)
    assert out.frames.shape == (1, 3, 12, 64, 64) and torch.isfinite(out.frames).all()
    assert np.isfinite(out.latents.numpy()).all()
