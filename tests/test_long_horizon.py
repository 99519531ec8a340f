"""Rollouts past the teacher's horizon (trackstream/distill/horizons.py): the chunk arithmetic of every
distillation experiment, ODE init's distinct masks, and DMD's horizon-sized windows (N = 1 is the plain DMD)."""

from pathlib import Path

import pytest
import torch
from distill_helpers import H, W, null_text, tiny_codec, tiny_network
from hydra_helpers import typed

from trackstream.diffusion.schedule import sampling_sigmas
from trackstream.distill.horizons import (
    check_horizons,
    distinct_masks,
    rolled_chunks,
    rollout_frames,
    rollout_latents,
    split_windows,
)
from trackstream.models.channel_layouts import i2v_condition
from trackstream.models.conditioner import Conditioner
from trackstream.models.streaming import CausalConfig
from trackstream.models.tracks import latent_frames
from trackstream.train.dmd.objective import DMDConfig, DMDObjective

ROOT = Path(__file__).resolve().parents[1]
C3S1W1 = CausalConfig(3, 1, 1, first_chunk_frames=1)
TEXT_DIM = 24


def test_rolled_chunks_of_the_c3s1w1_layouts():
    assert rolled_chunks(C3S1W1, 7) == []  # 25 frames: chunk 2 sees the sink and chunk 1, adjacent
    assert rolled_chunks(C3S1W1, rollout_latents(7, 2)) == [3, 4]  # 49 frames
    assert rollout_frames(25, 2) == 49 and rollout_latents(7, 3) == 19
    sampled = CausalConfig(3, 1, 1, first_chunk_frames=None)
    assert rolled_chunks(sampled, 21) == [3, 4, 5, 6]  # the 1.3B recipes' 81 frames
    # two 1.3B horizons: 1 + 2 x 20 = 41 latents, run on to whole chunks (42 = 14 chunks, 165 frames)
    assert rollout_latents(21, 2, sampled) == 42 and rollout_frames(81, 2, sampled) == 165
    assert rollout_latents(21, 4, sampled) == 81 and rollout_latents(21, 1, sampled) == 21
    assert rollout_latents(7, 2, C3S1W1) == 13  # a given first chunk: whole chunks already
    assert rolled_chunks(CausalConfig(3, 0, 1, first_chunk_frames=1), 13) == []  # no sink: nothing rolls


def test_horizons_are_checked():
    sampled = CausalConfig(3, 1, 1, first_chunk_frames=None)
    check_horizons(sampled, 2, 81)  # the 1.3B: 21 latents = 7 sampled chunks
    with pytest.raises(ValueError, match="1 \\+ k latents \\(the first chunk is sampled\\) split into chunks of 3"):
        check_horizons(sampled, 2, 25)  # 7 latents: not whole sampled chunks
    with pytest.raises(ValueError, match="int >= 1"):
        DMDConfig(rollout_horizons=0)
    with pytest.raises(ValueError, match="k latents split into chunks of 3"):
        check_horizons(C3S1W1, 2, 21)  # 5 latents: windows of 4 generated latents, not whole chunks of 3
    check_horizons(C3S1W1, 2, 25)


def _experiments(kind: str) -> list[str]:
    """The experiments of one stage kind, by name (``dmd``, ``rl``, ``ode_init``: every size)."""
    names = (p.stem for p in (ROOT / "conf/experiment").glob("*.yaml"))
    return sorted(n for n in names if kind in n.split("_") or ("_" in kind and kind in n))


@pytest.mark.slow
@pytest.mark.parametrize("name", _experiments("dmd") + _experiments("rl"))
def test_every_dmd_and_rl_rollout_trains_at_least_two_rolled_chunks(name, tmp_path):
    """From the composed experiment's own chunk arithmetic: the rollout's latents (the teacher's horizon x
    stage.rollout_horizons) under the stage's chunking hold >= 2 chunks that see a rolled cache."""
    cfg = typed(tmp_path, f"experiment={name}")
    st = cfg.stage
    horizon = latent_frames(cfg.data.num_frames)
    latents = rollout_latents(horizon, st.rollout_horizons, st.causal)
    assert len(rolled_chunks(st.causal, latents)) >= 2, (name, latents, st.rollout_horizons)


@pytest.mark.slow
@pytest.mark.parametrize("name", _experiments("ode_init"))
def test_every_ode_init_draw_trains_its_own_mask(name, tmp_path):
    cfg = typed(tmp_path, f"experiment={name}")
    st = cfg.stage
    masks = distinct_masks(st.causal, st.sink_choices, st.window_choices, latent_frames(cfg.data.num_frames))
    assert len(set(masks.values())) == len(masks) >= 2, (name, masks)


# ----------------------------------------------------------------------------- DMD windows

T_LONG = 49  # two 25-frame horizons


def _conditioner(codec):
    class Text:
        def encode(self, captions):
            return torch.zeros(len(captions), 1, TEXT_DIM), torch.ones(len(captions), dtype=torch.long)

    return Conditioner(codec=codec, text_encoder=Text(), layout="wan_i2v", device=torch.device("cpu"))


def _batch(codec, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    frame = torch.rand(B, 3, H, W, generator=g) * 2 - 1
    start = torch.rand(B, 1, 5, 2, generator=g) * (W - 1)
    t = torch.arange(T_LONG, dtype=torch.float32)[None, :, None, None]
    return {
        "image": i2v_condition(codec, frame, num_frames=T_LONG),
        "image_latent": codec.encode(frame[:, :, None]),
        "tracks": (start + 0.3 * t).clamp(0, W - 1),
        "visibility": torch.ones(B, T_LONG, 5, dtype=torch.bool),
        "text_emb": torch.randn(B, 3, TEXT_DIM, generator=g),
        "text_len": torch.tensor([3, 2]),
        "gid": torch.tensor([4, 9]),
    }


def _objective(codec, *, horizons, conditioner=True, seed=0):
    nt, nl = null_text()
    return DMDObjective(
        tiny_network(1),
        tiny_network(0),
        tiny_network(0).eval().requires_grad_(False),
        cfg=DMDConfig(rollout_horizons=horizons),
        sigmas=sampling_sigmas(3, shift=5.0),
        shift=5.0,
        null_text=nt,
        null_text_lengths=nl,
        embed_dim=tiny_network(1).track_embed_dim,
        height=H,
        width=W,
        seed=seed,
        device=torch.device("cpu"),
        conditioner=_conditioner(codec) if conditioner else None,
        horizon_latents=7 if conditioner else None,
    )


def test_one_horizon_is_the_plain_dmd():
    codec = tiny_codec()
    batch = _batch(codec)
    batch = {
        k: (v[:, :, :7] if k == "image" else v[:, :25] if k in ("tracks", "visibility") else v)
        for k, v in batch.items()
    }
    losses = []
    for conditioner in (False, True):
        obj = _objective(codec, horizons=1, conditioner=conditioner)
        b = obj.prepare_batch(dict(batch))
        torch.manual_seed(0)
        losses.append((obj.generator_loss(b)[0], obj.critic_loss(b)[0]))
    assert torch.equal(losses[0][0], losses[1][0]) and torch.equal(losses[0][1], losses[1][1])
    x = torch.randn(2, 16, 7, 8, 8)
    assert split_windows(x, x, {"a": 1}, horizon_latents=7, conditioner=None) == (x, {"a": 1})


def test_two_horizons_are_two_windows_of_the_teachers_shape():
    codec = tiny_codec()
    obj = _objective(codec, horizons=2)
    batch = obj.prepare_batch(_batch(codec))
    x, committed = obj.rollout(batch, grad=False, with_committed=True)
    assert x.shape[2] == 13  # 1 + 2 x 6 latents: chunks 3 and 4 rolled
    xw, bw = split_windows(x, committed, batch, horizon_latents=7, conditioner=obj.conditioner)
    assert xw.shape == (4, *x.shape[1:2], 7, *x.shape[3:])
    assert torch.equal(xw[:2], x[:, :, :7])  # window 0: the rollout's first horizon, the user's frame 0
    assert torch.equal(xw[2:, :, 1:], x[:, :, 7:])  # window 1: the next 6 generated latents
    frame24 = codec.decode(committed[:, :, :7])[:, :, 24]  # the last frame before window 1
    torch.testing.assert_close(xw[2:, :, :1], codec.encode(frame24[:, :, None]))
    torch.testing.assert_close(bw["image_latent"][2:], xw[2:, :, :1])
    torch.testing.assert_close(bw["image"][2:], i2v_condition(codec, frame24, num_frames=25))
    assert torch.equal(bw["motion"][:2], batch["motion"][:, :, :25])
    assert torch.equal(bw["motion"][2:], batch["motion"][:, :, 24:49])  # tracks from the window's first frame
    assert bw["gid"].tolist() == [8, 18, 9, 19] and bw["text_emb"].shape[0] == 4


@pytest.mark.slow
def test_two_horizon_generator_loss_trains_the_generated_frames_only():
    codec = tiny_codec()
    obj = _objective(codec, horizons=2)
    batch = obj.prepare_batch(_batch(codec))
    loss, logs = obj.generator_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in obj.generator.parameters() if p.grad is not None]
    assert grads and any(bool(g.abs().sum() > 0) for g in grads)
    critic, _ = obj.critic_loss(batch)
    assert torch.isfinite(critic)


def test_a_sampled_first_chunk_rolls_out_whole_chunks_and_scores_whole_windows():
    """The 1.3B's chunking (chunk 0 sampled, the image in the conditioning channels), here with a 6-latent
    horizon: two horizons are 1 + 2 x 5 = 11 latents, rolled out to 12 (4 chunks); the windows are latents
    [0, 6) and the re-encoded frame 20 + latents [6, 11); latent 11 is rolled out and not scored."""
    codec = tiny_codec()
    sampled = CausalConfig(3, 1, 1, first_chunk_frames=None)
    assert rollout_latents(6, 2, sampled) == 12 and rollout_frames(21, 2, sampled) == 45
    nt, nl = null_text()
    obj = DMDObjective(
        tiny_network(1),
        tiny_network(0),
        tiny_network(0).eval().requires_grad_(False),
        cfg=DMDConfig(rollout_horizons=2, causal=sampled),
        sigmas=sampling_sigmas(3, shift=5.0),
        shift=5.0,
        null_text=nt,
        null_text_lengths=nl,
        embed_dim=tiny_network(1).track_embed_dim,
        height=H,
        width=W,
        seed=0,
        device=torch.device("cpu"),
        conditioner=_conditioner(codec),
        horizon_latents=6,
    )
    batch = _batch(codec)
    batch = {
        k: (v[:, :, :12] if k == "image" else v[:, :45] if k in ("tracks", "visibility") else v)
        for k, v in batch.items()
    }
    batch = obj.prepare_batch(batch)
    x, committed = obj.rollout(batch, grad=False, with_committed=True)
    assert x.shape[2] == 12
    xw, bw = split_windows(x, committed, batch, horizon_latents=6, conditioner=obj.conditioner)
    assert xw.shape[0] == 4 and xw.shape[2] == 6
    assert torch.equal(xw[:2], x[:, :, :6]) and torch.equal(xw[2:, :, 1:], x[:, :, 6:11])
    frame20 = codec.decode(committed[:, :, :6])[:, :, 20]
    torch.testing.assert_close(xw[2:, :, :1], codec.encode(frame20[:, :, None]))
    assert torch.equal(bw["motion"][2:], batch["motion"][:, :, 20:41])
    loss, _ = obj.generator_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and any(
        p.grad is not None and bool(p.grad.abs().sum() > 0) for p in obj.generator.parameters()
    )
