"""Teacher forcing (``train.teacher_forcing.objective``): each chunk denoised given the CLEAN chunks before it, through
the rolling cache, equals the block-causal forward over [clean prefix | noisy chunk]; the loss trains; the stage
runs from the CLI and DMD follows it without ODE pairs."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from distill_helpers import NUM_FRAMES, NUM_TRACKS, TEXT_DIM, H, W, tiny_codec, tiny_network
from test_docs_run import documented_line, reader_folder, run_documented

from trackstream.diffusion.schedule import add_noise, sigma_to_t
from trackstream.models.block_causal import BlockCausalAttention
from trackstream.models.causal import stream_step
from trackstream.models.channel_layouts import i2v_condition
from trackstream.models.conditioner import encode_motion
from trackstream.models.streaming import CausalConfig
from trackstream.models.tracks import sample_track_ids
from trackstream.stream.chunks import chunk_pixel_frames, start_cache
from trackstream.train.clean_context import clean_context_chunks, clip_condition
from trackstream.train.teacher_forcing.objective import TeacherForcingConfig, TeacherForcingObjective


@torch.no_grad()
def _clip_batch(codec, B: int = 2, seed: int = 0) -> dict:
    """An encoded training clip as ``Conditioner.encode`` leaves it: latents, I2V channels, tracks, text."""
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(B, 3, NUM_FRAMES, H, W, generator=g) * 2 - 1
    start = torch.rand(B, 1, NUM_TRACKS, 2, generator=g) * (W - 1)
    t = torch.arange(NUM_FRAMES, dtype=torch.float32)[None, :, None, None]
    return {
        "latents": codec.encode(video).float(),
        "image": i2v_condition(codec, video[:, :, 0], num_frames=NUM_FRAMES).float(),
        "tracks": (start + t * torch.randn(B, 1, NUM_TRACKS, 2, generator=g)).clamp(0, W - 1),
        "visibility": torch.ones(B, NUM_FRAMES, NUM_TRACKS, dtype=torch.bool),
        "text_emb": torch.randn(B, 4, TEXT_DIM, generator=g),
        "text_len": torch.tensor([4, 3])[:B],
    }


@pytest.mark.parametrize("causal", [CausalConfig(3, 1, 1, first_chunk_frames=1), CausalConfig(3, 0, 1)])
def test_each_chunk_sees_the_clean_chunks_before_it_as_the_block_causal_mask_does(causal):
    net, codec = tiny_network(0).eval(), tiny_codec()
    batch = _clip_batch(codec)
    x0, B = batch["latents"], 2
    ids = sample_track_ids(B, NUM_TRACKS, generator=torch.Generator().manual_seed(1))
    motion = encode_motion(
        batch["tracks"], batch["visibility"], ids, embed_dim=net.track_embed_dim, height=H, width=W,
        latent_height=x0.shape[3],
    )  # fmt: skip
    cond = clip_condition(net, batch, ids, height=H, width=W)
    seen = []
    with torch.no_grad():
        for i, cache, y, x0_i in clean_context_chunks(net, start_cache(net, cond, causal), cond, causal, motion, x0):
            s, f = causal.chunk_start(i), causal.chunk_len(i)
            torch.testing.assert_close(x0_i, x0[:, :, s : s + f])
            sigma = torch.tensor([0.7, 0.3])
            x_t = add_noise(x0_i, torch.randn_like(x0_i), sigma)
            streamed = stream_step(net.dit, cache, x_t, sigma_to_t(sigma), y=y).pred
            # the reference: one block-causal forward over [clean chunks < i at t = 0 | chunk i noisy], cut after i
            # (nothing later can reach it)
            x_ref = torch.cat([x0[:, :, :s], x_t], dim=2)
            t_ref = torch.cat([torch.zeros(B, s), sigma[:, None].expand(B, f)], dim=1)
            dit = net.dit
            attn = BlockCausalAttention(causal, (s + f, x0.shape[3] // 2, x0.shape[4] // 2), dit.head_dim)
            ref = net(
                x_ref,
                sigma_to_t(t_ref),
                text=batch["text_emb"],
                text_lengths=batch["text_len"],
                image=batch["image"][:, :, : s + f],
                motion=motion[:, :, : chunk_pixel_frames(causal, i)[1]],
                attention=attn,
            )
            torch.testing.assert_close(streamed, ref[:, :, s:].float(), atol=2e-5, rtol=1e-4)
            seen.append(i)
    n = causal.num_chunks(x0.shape[2])
    assert seen == (list(range(1, n)) if causal.first_chunk_frames == 1 else list(range(n)))


@pytest.mark.slow
def test_the_teacher_forcing_loss_trains_and_resumes_exactly():
    net, codec = tiny_network(0), tiny_codec()
    batch = _clip_batch(codec)
    obj = TeacherForcingObjective(
        net,
        cfg=TeacherForcingConfig(
            causal=CausalConfig(3, 1, 1, first_chunk_frames=1), p_drop_tracks=0.0, p_drop_text=0.0
        ),
        shift=3.0,
        embed_dim=net.track_embed_dim,
        height=H,
        width=W,
        seed=0,
        device=torch.device("cpu"),
    )
    batch = obj.prepare_batch(batch)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for step in range(20):
        loss, extra = obj.loss("generator", batch, step=step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(extra["tf/mse"]))
    assert all(torch.isfinite(torch.tensor(losses))) and set(extra) >= {"tf/mse", "tf/sink", "tf/window"}
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses
    state = obj.state_dict()
    a = obj.loss("generator", batch, step=0)[0]
    obj.load_state_dict(state)
    assert torch.equal(a, obj.loss("generator", batch, step=0)[0])


def test_bad_teacher_forcing_settings_name_the_field():
    with pytest.raises(ValueError, match="stage.p_drop_tracks"):
        TeacherForcingConfig(p_drop_tracks=1.5)
    with pytest.raises(ValueError, match="stage.weighting"):
        TeacherForcingConfig(weighting="cosine")
    with pytest.raises(ValueError, match="stage.sink_choices"):
        TeacherForcingConfig(sink_choices=[])


COMMON = ["debug=tiny", "data.num_frames=25", "trainer.num_threads=1", "eval.enabled=false"]
CAUSAL_STARTS = {  # docs/causal-starts.md's commands, by run folder
    name: documented_line("docs/causal-starts.md", f"hydra.run.dir=runs/{name}") for name in ("tf", "cd", "dmd")
}


@pytest.mark.slow
def test_teacher_forcing_then_consistency_then_dmd_without_pairs_through_the_cli(tmp_path, run_module):
    """docs/causal-starts.md's three commands as written, from the shipped teacher (``stage.teacher=$T`` alone: its
    settings read from it), shrunk by overrides after the line's own (a few steps on a pool of 4 clips); then the
    fourth start, ODE-init pairs, from the shipped teacher alone too (one step)."""
    from trackstream.models.motion_wan import load_network

    folder, T = reader_folder(tmp_path), {"T": "assets/tiny-teacher"}
    tf, cd, dmd = (folder / "runs" / name for name in ("tf", "cd", "dmd"))
    small = [*COMMON, "data.pool_size=4", "data.batch_size=2"]
    run_documented(CAUSAL_STARTS["tf"], folder, *small, "trainer.max_steps=2", variables=T)
    said = "stage.teacher=assets/tiny-teacher: settings read from assets/tiny-teacher/config.yaml"
    assert said in (tf / "train.log").read_text()  # the teacher's settings, said
    res = json.loads((tf / "results.json").read_text())
    assert res["status"] == "done" and res["step"] == 2
    rows = [json.loads(x) for x in (tf / "metrics.jsonl").read_text().splitlines()]
    assert any("train/tf/mse" in r for r in rows)
    conv = load_network(tf / "export" / "student").conventions
    assert conv.clean_first_frame and conv.streaming.causal == CausalConfig(3, 1, 1, first_chunk_frames=1)
    shipped = yaml.safe_load((folder / "assets/tiny-teacher/config.yaml").read_text())
    ran = yaml.safe_load((tf / "config.yaml").read_text())
    assert ran["model"]["overrides"]["num_layers"] == shipped["model"]["overrides"]["num_layers"]  # its network
    assert ran["data"]["world"] == shipped["data"]["world"] and ran["schedule"]["shift"] == shipped["schedule"]["shift"]
    assert (
        ran["codec"]["checkpoint"] == "assets/tiny-teacher/codec.pt"
        and ran["stage"]["teacher"] == "assets/tiny-teacher/teacher"
    )
    # the bidirectional teacher is refused as consistency distillation's teacher, the autoregressive one taken
    shipped_dir = folder / T["T"]
    r = run_module(
        "trackstream.train", "experiment=tiny_consistency", *small, f"stage.teacher={shipped_dir / 'teacher'}",
        f"codec.checkpoint={shipped_dir / 'codec.pt'}",  # the teacher's own codec: the line may say it again
        f"hydra.run.dir={tmp_path / 'refused'}", check=False,
    )  # fmt: skip
    assert r.returncode != 0 and "autoregressive teacher" in r.stderr
    run_documented(CAUSAL_STARTS["cd"], folder, *small, "trainer.max_steps=1", "trainer.log_every=1", variables=T)
    rows = [json.loads(x) for x in (cd / "metrics.jsonl").read_text().splitlines()]
    assert any("train/cd/mse" in r for r in rows)
    ran = yaml.safe_load((cd / "config.yaml").read_text())  # the shipped teacher's, through the tf run's record
    assert (
        ran["codec"]["checkpoint"] == "assets/tiny-teacher/codec.pt"
        and ran["data"]["world"] == shipped["data"]["world"]
    )
    # DMD takes it on with no pair folder: the first data.pool_size training clips' conditions
    run_documented(
        CAUSAL_STARTS["dmd"], folder, *small, "stage.rollout_horizons=1", "stage.update_ratio=1",
        "trainer.max_steps=1", variables=T,
    )  # fmt: skip
    res = json.loads((dmd / "results.json").read_text())
    assert (res["generator_updates"], res["critic_updates"]) == (1, 1)
    assert Path(res["export"]).is_dir()
    # ODE-init pairs (and a step on them) from the shipped teacher alone: the release folder named, nothing restated
    pairs = ["stage.ode_pairs.num_pairs=2", "stage.ode_pairs.batch_size=2", "stage.ode_pairs.teacher_steps=3"]
    run_module(
        "trackstream.train", "experiment=tiny_ode_init", f"stage.teacher={shipped_dir}", *COMMON, *pairs,
        "data.batch_size=2", "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'ode'}",
    )  # fmt: skip
    res = json.loads((tmp_path / "ode" / "results.json").read_text())
    assert res["status"] == "done" and res["num_pairs"] == 2
    ran = yaml.safe_load((tmp_path / "ode" / "config.yaml").read_text())
    assert (
        ran["model"]["overrides"] == shipped["model"]["overrides"] and ran["data"]["world"] == shipped["data"]["world"]
    )
