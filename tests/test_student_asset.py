"""The shipped student (assets/tiny-student, `python -m trackstream.pipeline.student_chain ship` on a long DMD run): intact,
made from the shipped teacher and codec, and it streams."""

import json

import numpy as np
import torch

from trackstream.pipeline.ship_student import STUDENT_DIR
from trackstream.pipeline.ship_teacher import ASSET_DIR, sha256, verify_asset


def test_the_shipped_student_is_intact_and_says_how_it_was_made():
    m = verify_asset(STUDENT_DIR)
    assert (
        m["name"] == "tiny-student"
        and ("python -m pipeline" in m["command"] or "python -m trackstream.pipeline" in m["command"])
        and len(m["git_commit"]) == 40
    )
    assert m["codec"]["sha256"] == sha256(ASSET_DIR / "codec.pt")  # the teacher release's codec, as trained with
    assert m["teacher_release"]["manifest_sha256"] == sha256(ASSET_DIR / "manifest.json")
    assert m["steps"]["dmd"] > 0 and m["generator_updates"] >= 400 and m["bytes"] < 20 * 2**20
    assert m["steps"]["rl"] == m["policy_updates"] > 0  # the whole recipe: ODE init -> DMD 400 -> RL (issue 27)
    assert "python -m trackstream.pipeline.student_chain ship" in m["command"]
    held = m["held_out"]  # measured by student_chain ship (the study's protocol): with tracks < without
    assert held["student_epe_with_tracks"] < 0.85 * held["student_epe_without_tracks"]
    assert held == {**m["stages_held_out"]["rl"], "num_heldout": 16, "num_frames": 25}
    assert set(m["stages_held_out"]) == {"ode_init", "dmd", "rl"} and m["protocol"]["long_factor"] == 10
    net = json.loads((STUDENT_DIR / "student" / "network.json").read_text())
    assert net["conventions"]["causal"]["sink_chunks"] == 1


def test_the_shipped_student_streams_the_world_it_was_trained_on():
    from trackstream.models.conditioner import load_export
    from trackstream.stream.demo.session import world_for
    from trackstream.stream.engine import StreamingGenerator

    net, codec, cond = load_export(STUDENT_DIR / "student", codec_name="tiny-ae", codec=str(ASSET_DIR / "codec.pt"))
    world = world_for(STUDENT_DIR / "student", 64, 64)
    assert world.camera_pan_prob == 1.0 and world.texture_scale == 4.0  # the run's world, from config.yaml
    clip = world.generate(3)
    engine = StreamingGenerator(net, codec, config=net.conventions.stream_config("student"))
    text, lens = cond.text_encoder.encode([clip["caption"]])
    image = torch.from_numpy(clip["frames"][0]).permute(2, 0, 1)[None].float() / 127.5 - 1
    state = engine.start(image, text, lens, seed=0)
    out, state = engine.step(state)
    out, state = engine.step(state)
    assert out.frames.shape == (1, 3, 12, 64, 64) and torch.isfinite(out.frames).all()
    assert np.isfinite(out.latents.numpy()).all()
