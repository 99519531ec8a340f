"""ODE pairs (teacher trajectories on the student's grid, resumable shards) and the ODE-init
objective (block-causal regression, per-chunk steps, per-batch sink/window sampling)."""

import json

import pytest
import torch
from distill_helpers import H, W, make_conditions, null_text, tiny_codec, tiny_network

from trackstream.diffusion.samplers import Condition, GuidanceConfig, SamplerConfig, sample
from trackstream.diffusion.schedule import sampling_sigmas
from trackstream.distill.ode_pairs import ODEPairsConfig, generate_ode_pairs, student_step_indices
from trackstream.distill.pair_shards import load_ode_pairs
from trackstream.models.conditioner import encode_motion
from trackstream.models.motion_wan import Conventions
from trackstream.models.streaming import CausalConfig
from trackstream.train.ode_init.objective import (
    ODEInitConfig,
    ODEInitObjective,
    per_chunk_indices,
    sample_causal_config,
)

SHIFT, K = 5.0, 3


def test_student_grid_is_a_subset_of_the_teacher_grid():
    assert student_step_indices(12, 3, shift=SHIFT) == [0, 4, 8, 12]
    assert student_step_indices(48, 4, shift=3.0) == [0, 12, 24, 36, 48]
    with pytest.raises(ValueError, match="teacher_steps"):
        student_step_indices(10, 3, shift=SHIFT)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    teacher, codec = tiny_network(0).eval(), tiny_codec()
    out = tmp_path_factory.mktemp("pairs")
    cfg = ODEPairsConfig(num_pairs=5, teacher_steps=6, batch_size=2, shard_size=3)
    conditions = make_conditions(codec)
    kw = dict(
        conditions=conditions,
        cfg=cfg,
        student_steps=K,
        shift=SHIFT,
        null_text=null_text()[0],
        null_text_lengths=null_text()[1],
        embed_dim=teacher.track_embed_dim,
        height=H,
        width=W,
        device=torch.device("cpu"),
    )
    generate_ode_pairs(teacher, out_dir=out, **kw)
    return teacher, conditions, cfg, out, kw


def test_pairs_hold_the_teacher_trajectory_at_the_student_steps(pairs):
    teacher, conditions, cfg, out, _ = pairs
    index = json.loads((out / "index.json").read_text())
    assert [s["num_samples"] for s in index["shards"]] == [3, 2] and index["teacher_indices"] == [0, 2, 4, 6]
    data = load_ode_pairs(out, student_steps=K, shift=SHIFT)
    assert data["trajectory"].shape == (5, K + 1, 16, 7, H // 8, W // 8)
    # re-run sample 3 by hand: the stored latents are the sampler's inputs at steps 0, 2, 4 and its output
    b = conditions([3])
    g = torch.Generator().manual_seed(3)
    from trackstream.models.tracks import sample_track_ids

    ids = sample_track_ids(1, b["tracks"].shape[2], generator=g)
    assert torch.equal(ids, data["track_ids"][3:4])
    noise = torch.randn((16, 7, H // 8, W // 8), generator=g)[None]
    motion = encode_motion(b["tracks"], b["visibility"], ids, embed_dim=teacher.track_embed_dim, height=H, width=W)
    cond = Condition(
        text=b["text_emb"],
        text_lengths=b["text_len"],
        null_text=null_text()[0],
        null_text_lengths=null_text()[1],
        image=b["image"],
        motion=motion,
    )
    seen = {}
    x0 = sample(
        teacher,
        noise,
        cond,
        cfg=SamplerConfig(steps=6, guidance=GuidanceConfig()),
        shift=SHIFT,
        callback=lambda i, s, x: seen.__setitem__(i, x.clone()),
    )
    expected = torch.stack([seen[0], seen[2], seen[4], x0], 1)[0]
    torch.testing.assert_close(data["trajectory"][3], expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(data["trajectory"][3, 0], noise[0])  # sigma_0 = 1: pure noise


def test_pair_generation_resumes_shard_by_shard(pairs, tmp_path):
    teacher, _, _, out, kw = pairs
    first = load_ode_pairs(out, student_steps=K, shift=SHIFT)
    (out / "index.json").rename(tmp_path / "index.json")  # a job preempted after shard 0 ...
    (out / "pairs_00001.safetensors").unlink()
    before = (out / "pairs_00000.safetensors").stat().st_mtime_ns
    generate_ode_pairs(teacher, out_dir=out, **kw)  # ... resumed: shard 0 kept, shard 1 rebuilt
    assert (out / "pairs_00000.safetensors").stat().st_mtime_ns == before
    again = load_ode_pairs(out, student_steps=K, shift=SHIFT)
    assert torch.equal(first["trajectory"], again["trajectory"])
    with pytest.raises(ValueError, match="regenerate"):
        load_ode_pairs(out, student_steps=4, shift=SHIFT)


def test_per_chunk_indices_and_config_sampling():
    cfg = CausalConfig(chunk_frames=3, sink_chunks=1, window_chunks=1, first_chunk_frames=1)
    k = per_chunk_indices(cfg, 4, 7, K, torch.Generator().manual_seed(0))
    assert k.shape == (4, 7) and (k[:, 0] == K).all()
    assert (k[:, 1:4] == k[:, 1:2]).all() and (k[:, 4:7] == k[:, 4:5]).all() and (k[:, 1:] < K).all()
    g = torch.Generator().manual_seed(0)
    configs = [
        sample_causal_config(CausalConfig(3, 1, 1, first_chunk_frames=1), [0, 1], [1, None], g) for _ in range(40)
    ]
    seen = {(c.sink_chunks, c.window_chunks) for c in configs}
    assert seen == {(0, 1), (1, 1), (0, None), (1, None)}


@pytest.mark.slow
def test_ode_init_regresses_the_teacher_endpoint(pairs):
    _, _, _, out, _ = pairs
    data = load_ode_pairs(out, student_steps=K, shift=SHIFT)
    student = tiny_network(0)  # the student starts as the teacher's copy
    cfg = ODEInitConfig(sink_choices=[0, 1], window_choices=[1, 2])
    obj = ODEInitObjective(
        student,
        cfg=cfg,
        sigmas=sampling_sigmas(K, shift=SHIFT),
        embed_dim=student.track_embed_dim,
        height=H,
        width=W,
        seed=0,
        device=torch.device("cpu"),
    )
    batch = obj.prepare_batch({k: v[:4] for k, v in data.items() if torch.is_tensor(v)})
    opt = torch.optim.Adam(student.parameters(), lr=2e-3)
    losses = []
    for step in range(25):
        loss, extra = obj.loss("generator", batch, step=step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses))) and set(extra) >= {"ode/mse", "ode/sink", "ode/window"}
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])
    # exact resume of the objective's randomness
    state = obj.state_dict()
    a = obj.loss("generator", batch, step=0)[0]
    obj.load_state_dict(state)
    assert torch.equal(a, obj.loss("generator", batch, step=0)[0])


def test_a_clean_first_frame_teacher_keeps_frame_0_given(tmp_path):
    """A teacher trained with latent frame 0 clean (network.json conventions) is sampled that way:
    every stored latent holds the first frame's clean latent in frame 0."""
    teacher, codec = tiny_network(0).eval(), tiny_codec()
    teacher.conventions = Conventions(clean_first_frame=True)
    cfg = ODEPairsConfig(num_pairs=2, teacher_steps=3, batch_size=2, shard_size=2)
    generate_ode_pairs(
        teacher,
        conditions=make_conditions(codec),
        cfg=cfg,
        student_steps=K,
        shift=SHIFT,
        null_text=null_text()[0],
        null_text_lengths=null_text()[1],
        embed_dim=teacher.track_embed_dim,
        height=H,
        width=W,
        out_dir=tmp_path,
        device=torch.device("cpu"),
    )
    data = load_ode_pairs(tmp_path, student_steps=K, shift=SHIFT)
    assert data["index"]["clean_first_frame"] is True
    first = data["image_latent"][:, None, :, 0]  # [B, 1, 16, h, w]
    assert torch.equal(data["trajectory"][:, :, :, 0], first.expand(-1, K + 1, -1, -1, -1))
    assert not torch.equal(data["trajectory"][:, 0, :, 1:], data["trajectory"][:, -1, :, 1:])


def test_drawn_masks_keep_a_sampled_chunk_0_and_the_rope_policy():
    from trackstream.distill.masks import sample_causal_config
    from trackstream.models.streaming import CausalConfig

    base = CausalConfig(3, 1, None, 1, window_frames=2, first_chunk_sampled=True, rope="absolute")
    drawn = sample_causal_config(base, [1], [2], torch.Generator().manual_seed(0))
    assert drawn.first_chunk_sampled and drawn.rope == "absolute" and drawn.window_chunks == 2
    assert drawn.window_frames is None and drawn.first_chunk_frames == 1
