"""Self-Forcing DMD: the training rollout IS the streaming engine, gradient truncation, the DMD
gradient, and exact resume of both optimizers, the EMA and the 5:1 phase through the loop."""

import json
from pathlib import Path

import pytest
import torch
from distill_helpers import H, W, make_conditions, null_text, tiny_codec, tiny_network

import trackstream.stream.chunks as chunks
from trackstream.data.pool_stream import PoolStream
from trackstream.diffusion.schedule import sampling_sigmas
from trackstream.models.motion_wan import Conventions
from trackstream.models.streaming import CausalConfig, StreamConfig
from trackstream.stream.chunk_io import collect, tracks_from_array
from trackstream.stream.engine import StreamingGenerator
from trackstream.train.dmd.objective import DMDConfig, DMDObjective, dmd_gradient
from trackstream.trainer.checkpoint import CheckpointManager
from trackstream.trainer.dist import init_runtime
from trackstream.trainer.loop import TrainerConfig, train
from trackstream.trainer.metrics import LoggerConfig, MetricLogger
from trackstream.trainer.optim import OptimConfig
from trackstream.trainer.parallel import ParallelConfig, prepare_network

SHIFT, K = 5.0, 3


@pytest.fixture(scope="module")
def runtime():
    return init_runtime("single")


@pytest.fixture(scope="module")
def codec():
    return tiny_codec()


def _objective(gen, critic, teacher, *, seed=0, ratio=5, causal=None, rollout="self_forcing"):
    cfg = DMDConfig(update_ratio=ratio, rollout=rollout, **({"causal": causal} if causal is not None else {}))
    nt, nl = null_text()
    return DMDObjective(
        gen,
        critic,
        teacher.eval().requires_grad_(False),
        cfg=cfg,
        sigmas=sampling_sigmas(K, shift=SHIFT),
        shift=SHIFT,
        null_text=nt,
        null_text_lengths=nl,
        embed_dim=gen.track_embed_dim,
        height=H,
        width=W,
        seed=seed,
        device=torch.device("cpu"),
    )


def test_update_phase_is_5_to_1_critic_first():
    obj = _objective(tiny_network(1), tiny_network(0), tiny_network(0))
    phase = [tuple(obj.updates(s)) for s in range(10)]
    assert phase == [("critic",)] * 4 + [("critic", "generator")] + [("critic",)] * 4 + [("critic", "generator")]


def test_training_rollout_equals_the_streaming_engine(codec):
    """Same noise, exit at the last step: DMD's rollout == what the engine streams at inference."""
    gen = tiny_network(1).eval()
    obj = _objective(gen, tiny_network(0), tiny_network(0), seed=4)
    raw = make_conditions(codec)([0, 1])
    batch = obj.prepare_batch(raw)
    with torch.no_grad():
        x = obj.rollout(batch, grad=False, exit_step=K - 1)
    engine = StreamingGenerator(gen, codec, config=StreamConfig(shift=SHIFT, steps=K))
    image = raw["first_frame"].float() / 127.5 - 1
    state = engine.start(image, raw["text_emb"], raw["text_len"], track_ids=batch["track_ids"], seed=4 + 1)
    _, latents, _ = collect(engine.stream(state, tracks_from_array(raw["tracks"], raw["visibility"]), num_chunks=3))
    torch.testing.assert_close(x, latents, atol=1e-5, rtol=1e-5)


def test_sampled_first_chunk_rollout_equals_the_engine_and_generates_every_frame(codec):
    """Chunk 0 sampled like the others (the real 1.3B layout: 81 frames = 7 chunks of 3, image in the
    channels): DMD's rollout == the engine, chunk 0 costs K + 1 passes, and all frames carry gradient."""
    causal = CausalConfig(3, 1, 1, first_chunk_frames=None)
    gen = tiny_network(1).eval()
    obj = _objective(gen, tiny_network(0), tiny_network(0), seed=4, causal=causal)
    raw = make_conditions(codec)([0, 1])
    raw = {
        **raw,
        "tracks": raw["tracks"][:, :21],
        "visibility": raw["visibility"][:, :21],
        "image": raw["image"][:, :, :6],
    }  # 21 frames = 6 latents = 2 chunks of 3
    batch = obj.prepare_batch(raw)
    with torch.no_grad():
        x = obj.rollout(batch, grad=False, exit_step=K - 1)
    engine = StreamingGenerator(gen, codec, config=StreamConfig(causal=causal, shift=SHIFT, steps=K))
    image = raw["first_frame"].float() / 127.5 - 1
    state = engine.start(image, raw["text_emb"], raw["text_len"], track_ids=batch["track_ids"], seed=4 + 1)
    frames, latents, outs = collect(
        engine.stream(state, tracks_from_array(raw["tracks"], raw["visibility"]), num_chunks=2)
    )
    torch.testing.assert_close(x, latents, atol=1e-5, rtol=1e-5)
    assert [o.nfe for o in outs] == [K + 1, K + 1] and frames.shape[2] == 21
    assert not torch.allclose(latents[:, :, :1], batch["image_latent"])  # frame 0 is generated, not given
    x = obj.rollout(batch, grad=True, exit_step=0)
    loss, _ = obj.generator_loss(batch)
    loss.backward()
    assert x.shape[2] == 6 and any(p.grad is not None for p in gen.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("exit_step", range(K))
def test_self_rollout_transitions_equal_the_engine_at_every_exit_step(codec, exit_step):
    """AR-Drag's Self-Rollout: whatever the exit step, each chunk is sampled on to its clean latent and that
    enters the cache, so the committed latents are the engine's chunk for chunk; the loss sees the exit
    step's x0 (Self-Forcing's rollout caches that x0 instead, and differs from the engine below K - 1)."""
    gen = tiny_network(1).eval()
    raw = make_conditions(codec)([0, 1])
    engine = StreamingGenerator(gen, codec, config=StreamConfig(shift=SHIFT, steps=K))
    obj = _objective(gen, tiny_network(0), tiny_network(0), seed=4, rollout="self_rollout")
    batch = obj.prepare_batch(raw)
    state = engine.start(
        raw["first_frame"].float() / 127.5 - 1,
        raw["text_emb"],
        raw["text_len"],
        track_ids=batch["track_ids"],
        seed=4 + 1,
    )
    _, latents, _ = collect(engine.stream(state, tracks_from_array(raw["tracks"], raw["visibility"]), num_chunks=3))
    with torch.no_grad():
        x, committed = obj.rollout(batch, grad=False, exit_step=exit_step, with_committed=True)
        sf = _objective(gen, tiny_network(0), tiny_network(0), seed=4)
        x_sf, committed_sf = sf.rollout(sf.prepare_batch(raw), grad=False, exit_step=exit_step, with_committed=True)
    torch.testing.assert_close(committed, latents, atol=1e-5, rtol=1e-5)
    assert torch.equal(x_sf, committed_sf)
    if exit_step == K - 1:
        torch.testing.assert_close(x, committed, atol=1e-6, rtol=1e-6)
    else:
        assert (x - committed)[:, :, 1:].abs().max() > 1e-3  # the loss sees the exit step, not the clean latent
        assert (committed_sf - latents)[:, :, 1:].abs().max() > 1e-3


def test_self_rollout_gradient_at_the_exit_step_only(codec, monkeypatch):
    """Per chunk: all K steps (grad at the exit step only) + the clean re-run; the loss back-propagates."""
    gen = tiny_network(1)
    obj = _objective(gen, tiny_network(0), tiny_network(0), rollout="self_rollout")
    batch = obj.prepare_batch(make_conditions(codec)([0, 1]))
    calls = []
    real_step = chunks.stream_step
    monkeypatch.setattr(
        chunks,
        "stream_step",
        lambda m, c, x, t, **kw: (
            calls.append((torch.is_grad_enabled(), round(float(t.flatten()[0]), 3))) or real_step(m, c, x, t, **kw)
        ),
    )
    x = obj.rollout(batch, grad=True, exit_step=0)
    sig = sampling_sigmas(K, shift=SHIFT).float()
    chunk = [(k == 0, round(float(sig[k] * 1000), 3)) for k in range(K)] + [(False, 0.0)]
    assert calls == [(False, 0.0)] + chunk + chunk and x.requires_grad
    loss, _ = obj.generator_loss(batch)
    loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in gen.parameters() if p.grad is not None) > 0
    with pytest.raises(ValueError, match="stage.rollout"):
        DMDConfig(rollout="self-rollout")
    with pytest.raises(ValueError, match="stage.pool_size=0"):
        DMDConfig(pool_size=0)


def test_gradient_flows_through_the_exit_step_only(codec, monkeypatch):
    gen, critic, teacher = tiny_network(1), tiny_network(0), tiny_network(0)
    obj = _objective(gen, critic, teacher)
    batch = obj.prepare_batch(make_conditions(codec)([0, 1]))
    calls = []
    real_step = chunks.stream_step

    def counting(model, cache, x, t, **kw):
        calls.append((torch.is_grad_enabled(), float(t.flatten()[0])))
        return real_step(model, cache, x, t, **kw)

    monkeypatch.setattr(chunks, "stream_step", counting)
    exit_step = 1
    x = obj.rollout(batch, grad=True, exit_step=exit_step)
    # per generated chunk: steps 0..exit (only the exit one with grad) + the clean re-run (no grad)
    sig = sampling_sigmas(K, shift=SHIFT)
    chunk = [(False, float(sig[0].float()) * 1000), (True, float(sig[1].float() * 1000)), (False, 0.0)]
    assert calls == [(False, 0.0)] + chunk + chunk
    assert x.requires_grad and x.shape == (2, 16, 7, H // 8, W // 8)
    loss, extra = obj.generator_loss(batch)
    loss.backward()
    assert all(p.grad is None for p in critic.parameters()) and all(p.grad is None for p in teacher.parameters())
    grads = [p.grad for p in gen.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert set(extra) == {"dmd/grad_abs", "dmd/real_fake_gap"}


def test_clean_first_frame_teacher_scores_with_frame_0_given(codec):
    """Teacher (and critic) trained with latent frame 0 clean: x_t keeps frame 0 clean at t = 0."""
    gen, critic, teacher = tiny_network(1), tiny_network(0), tiny_network(0)
    teacher.conventions = Conventions(clean_first_frame=True)
    obj = _objective(gen, critic, teacher)
    assert obj.clean_first
    x = torch.randn(2, 16, 7, H // 8, W // 8)
    x_t, noise, sigma = obj._noised(x, {}, "critic")
    assert sigma.shape == (2, 7) and (sigma[:, 0] == 0).all() and (sigma[:, 1:] > 0).all()
    assert torch.equal(x_t[:, :, 0], x[:, :, 0]) and not torch.equal(x_t[:, :, 1:], x[:, :, 1:])
    batch = obj.prepare_batch(make_conditions(codec)([0, 1]))
    loss, _ = obj.critic_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None for p in gen.parameters())
    loss, _ = obj.generator_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in gen.parameters())


def test_dmd_gradient_is_normalised_per_sample():
    x, real = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    fake = real + 0.5
    g = dmd_gradient(x, real, fake)
    torch.testing.assert_close(g, 0.5 / (x - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True).expand_as(x))
    assert torch.equal(dmd_gradient(x, real, real.clone()), torch.zeros_like(x))
    # scaling the sample and both predictions together leaves the gradient unchanged
    torch.testing.assert_close(dmd_gradient(3 * x, 3 * real, 3 * fake), g)
    assert torch.isfinite(dmd_gradient(real, real, fake)).all()  # 0/0 -> 0, not NaN


def _train(runtime, codec, run_dir: Path, *, steps: int, ckpt_every: int, ratio: int = 5):
    nets = {"critic": tiny_network(0), "generator": tiny_network(1)}
    optims = {
        "critic": OptimConfig(lr=4e-4, betas=[0.0, 0.999], weight_decay=0.01, clip_grad_norm=10.0),
        "generator": OptimConfig(lr=2e-3, betas=[0.0, 0.999], weight_decay=0.01, clip_grad_norm=10.0, warmup_steps=1),
    }
    from trackstream.trainer.ema import EMAConfig

    prepared = {
        n: prepare_network(
            runtime,
            ParallelConfig(),
            name=n,
            module=m,
            optim=optims[n],
            ema=EMAConfig(decay=0.9) if n == "generator" else None,
            total_steps=steps,
        )
        for n, m in nets.items()
    }
    obj = _objective(prepared["generator"].module, prepared["critic"].module, tiny_network(0), seed=11, ratio=ratio)
    conditions = make_conditions(codec)
    data = PoolStream(6, batch_size=1, seed=0, make_batch=lambda idx, gids: conditions(idx), rank=0, world_size=1)
    cfg = TrainerConfig(max_steps=steps, grad_accum=2, log_every=1, ckpt_every=ckpt_every, resume="auto")
    logger = MetricLogger(run_dir, LoggerConfig(progress_bar=False), is_main=True, total_steps=steps)
    ckpt = CheckpointManager(run_dir / "checkpoints", runtime, keep_last=2, fingerprint={"dmd": 1})
    try:
        res = train(
            objective=obj, networks=prepared, data=data, cfg=cfg, runtime=runtime, checkpoints=ckpt, logger=logger
        )
    finally:
        logger.close()
    return res, prepared


def _rows(run_dir: Path) -> dict:
    rows = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[r["step"]] = {k: v for k, v in r.items() if not k.startswith("perf/")}
    return rows


@pytest.mark.slow
def test_exact_resume_of_both_optimizers_ema_and_phase(runtime, codec, tmp_path):
    """5 steps at 2:1 (generator at steps 2 and 4, 1-based), grad_accum 2: uninterrupted == cut
    at step 3 (mid-phase, after one generator update) and resumed in fresh objects (the phase at the
    recipes' 5:1 is test_update_phase_is_5_to_1_critic_first's)."""
    steps = 5
    _, ref = _train(runtime, codec, tmp_path / "ref", steps=steps, ckpt_every=100, ratio=2)
    _train(runtime, codec, tmp_path / "cut", steps=3, ckpt_every=100, ratio=2)
    res, got = _train(runtime, codec, tmp_path / "cut", steps=steps, ckpt_every=100, ratio=2)
    assert res.resumed_from is not None and res.resumed_from.name == "step_00000003"
    a, b = _rows(tmp_path / "ref"), _rows(tmp_path / "cut")
    assert sorted(a) == list(range(1, steps + 1)) and a == b  # every logged loss and lr, bit for bit
    gen_steps = [s for s in sorted(a) if "train/grad_norm/generator" in a[s]]
    assert gen_steps == [2, 4]  # the 2:1 phase, continued across the cut
    assert ref["generator"].num_updates == got["generator"].num_updates == 2
    assert ref["critic"].num_updates == got["critic"].num_updates == steps
    for name in ("generator", "critic"):
        for p, q in zip(ref[name].raw.parameters(), got[name].raw.parameters()):
            assert torch.equal(p, q)
        sa, sb = ref[name].optimizer.state_dict()["state"], got[name].optimizer.state_dict()["state"]
        assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    for s, t in zip(ref["generator"].ema.shadow, got["generator"].ema.shadow):
        assert torch.equal(s, t)
