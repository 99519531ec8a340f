"""Causal consistency distillation (``train.consistency.objective``) on known cases: the teacher's step is the guided
Euler step on clean context; a student equal to its teacher is consistent at the boundary; the loss trains."""

import pytest
import torch
from distill_helpers import NUM_TRACKS, H, W, tiny_codec, tiny_network
from test_teacher_forcing import _clip_batch

from trackstream.diffusion.samplers import Condition, GuidanceConfig, guided_velocity
from trackstream.diffusion.schedule import add_noise
from trackstream.models.block_causal import BlockCausalAttention
from trackstream.models.conditioner import encode_motion
from trackstream.models.streaming import CausalConfig
from trackstream.models.tracks import sample_track_ids
from trackstream.stream.chunks import chunk_pixel_frames
from trackstream.train.consistency.objective import ConsistencyConfig, ConsistencyObjective
from trackstream.trainer.ema import EMA, EMAConfig

CAUSAL = CausalConfig(3, 1, 1, first_chunk_frames=1)
NULL = torch.zeros(1, 2, 24), torch.tensor([2])


def _objective(student, teacher, *, grid_steps=6, student_steps=3, mode="joint", seed=0):
    cfg = ConsistencyConfig(
        causal=CAUSAL, sink_choices=[1], window_choices=[1], grid_steps=grid_steps, guidance=GuidanceConfig(mode=mode)
    )
    return ConsistencyObjective(
        student,
        teacher,
        EMA(student, EMAConfig(decay=0.5)),
        cfg=cfg,
        shift=3.0,
        student_steps=student_steps,
        null_text=NULL[0],
        null_lengths=NULL[1],
        embed_dim=student.track_embed_dim,
        height=H,
        width=W,
        seed=seed,
        device=torch.device("cpu"),
    )


@torch.no_grad()
def test_the_teacher_step_is_the_guided_euler_step_on_clean_context():
    net, codec = tiny_network(0).eval(), tiny_codec()
    batch = _clip_batch(codec)
    obj = _objective(net, net)
    x0, B = batch["latents"], 2
    ids = sample_track_ids(B, NUM_TRACKS, generator=torch.Generator().manual_seed(3))
    motion = encode_motion(
        batch["tracks"], batch["visibility"], ids, embed_dim=net.track_embed_dim, height=H, width=W,
        latent_height=x0.shape[3],
    )  # fmt: skip
    s, s_next = 0.8, 0.6
    chunk = lambda i: x0[:, :, 1 + 3 * (i - 1) : 1 + 3 * i]  # noqa: E731
    x_t = {i: add_noise(chunk(i), torch.randn_like(chunk(i)), torch.full((B,), s)) for i in (1, 2)}
    steps = obj._teacher_step(batch, ids, motion, CAUSAL, x0, x_t, s, s_next)
    for i, x in x_t.items():
        start, hi = CAUSAL.chunk_start(i), chunk_pixel_frames(CAUSAL, i)[1]
        k = 3  # joint guidance: three terms, each a copy of the batch with the clean prefix before chunk i

        def model(x, t, *, text, text_lengths, image, motion, **_):
            x_full = torch.cat([x0[:, :, :start].repeat(k, 1, 1, 1, 1), x], dim=2)
            t_full = torch.cat([torch.zeros(x.shape[0], start), t[:, None].expand(-1, 3)], dim=1)
            attn = BlockCausalAttention(CAUSAL, (start + 3, x0.shape[3] // 2, x0.shape[4] // 2), net.dit.head_dim)
            out = net(x_full, t_full, text=text, text_lengths=text_lengths, image=image, motion=motion, attention=attn)
            return out[:, :, start:]

        cond = Condition(
            text=batch["text_emb"], text_lengths=batch["text_len"], null_text=NULL[0], null_text_lengths=NULL[1],
            image=batch["image"][:, :, : start + 3], motion=motion[:, :, :hi],
        )  # fmt: skip
        v = guided_velocity(model, x, torch.full((B,), s), cond, GuidanceConfig())
        torch.testing.assert_close(steps[i], x + (s_next - s) * v, atol=5e-5, rtol=1e-4)


def test_a_student_equal_to_its_teacher_is_consistent_at_the_boundary():
    net, codec = tiny_network(0), tiny_codec()
    batch = _clip_batch(codec)
    # one interval, s 1 -> 0: the target x' - 0 v is the teacher's Euler step itself, = the student's x - 1 v
    loss, extra = _objective(net, net, grid_steps=1, student_steps=1, mode="none").loss("generator", batch, step=0)
    assert float(extra["cd/sigma"]) == 1.0 and float(loss.detach()) < 1e-10
    # ... but not when the teacher's step is guided (the student absorbs the guidance)
    assert float(_objective(net, net, grid_steps=1, student_steps=1).loss("generator", batch, step=0)[0]) > 1e-4


@pytest.mark.slow
def test_consistency_distillation_trains_the_student_and_resumes_exactly():
    teacher, codec = tiny_network(0).eval(), tiny_codec()
    student = tiny_network(1)  # another start: far from consistent with the teacher
    batch = _clip_batch(codec)
    obj = _objective(student, teacher, mode="none")
    opt = torch.optim.Adam(student.parameters(), lr=2e-3)
    losses = []
    for step in range(24):
        loss, extra = obj.loss("generator", batch, step=step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.ema.update(student)
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses))) and set(extra) >= {"cd/mse", "cd/sigma", "cd/sink"}
    assert sum(losses[-6:]) < 0.7 * sum(losses[:6]), losses
    state = obj.state_dict()
    a = obj.loss("generator", batch, step=0)[0]
    obj.load_state_dict(state)
    assert torch.equal(a, obj.loss("generator", batch, step=0)[0])


def test_bad_consistency_settings_name_the_field():
    net = tiny_network(0)
    with pytest.raises(ValueError, match="stage.grid_steps"):
        _objective(net, net, grid_steps=8, student_steps=3)
    with pytest.raises(ValueError, match="ema.enabled"):
        ConsistencyObjective(
            net, net, None, cfg=ConsistencyConfig(), shift=3.0, student_steps=3, null_text=NULL[0],
            null_lengths=NULL[1], embed_dim=net.track_embed_dim, height=H, width=W, seed=0, device="cpu",
        )  # fmt: skip
