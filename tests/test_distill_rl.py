"""AR-Drag's RL stage (train/rl/objective.py, distill/grpo.py, eval/rewards.py): the SDE step's log-prob is a Gaussian
density; at noise level -> 0 the rollout is the streaming engine; exactly one SDE step per chunk, reproducible
from the per-rollout seeds; the recomputed log-prob under an unchanged policy is the recorded one (ratio 1,
KL 0); group advantages; clipping; rl_tiny composed like the CLI, run, cut mid-round and resumed exactly;
the motion reward prefers the ground truth to a still video."""

import copy
import json

import numpy as np
import pytest
import torch
from distill_helpers import H, W, make_conditions, tiny_codec, tiny_network
from hydra_helpers import typed
from rl_helpers import rl_source

import trackstream.train.rl.objective as rl
from trackstream.diffusion.schedule import sampling_sigmas
from trackstream.distill.grpo import clipped_surrogate, gaussian_log_prob, group_advantages
from trackstream.eval.rewards import (
    AppearanceReward,
    CombinedReward,
    MotionReward,
    Reward,
    RewardsConfig,
    build_rewards,
)
from trackstream.models.streaming import StreamConfig
from trackstream.stream.chunk_io import collect, tracks_from_array
from trackstream.stream.engine import StreamingGenerator
from trackstream.train.rl.objective import RLConfig, RLObjective

SHIFT, K, G = 5.0, 3, 2
REWARDS = {"motion": {"reference_width": None, "alpha": 256.0, "scale": 1 / 256}, "appearance": {"weight": 0.5}}


@pytest.fixture(scope="module")
def codec():
    return tiny_codec()


def _objective(gen, codec, *, seed=4, reference=True, **changes):
    cfg = RLConfig(group_size=G, rewards=RewardsConfig(**REWARDS), **changes)
    ref = copy.deepcopy(gen).requires_grad_(False) if reference else None
    sig = sampling_sigmas(K, shift=SHIFT)
    kw = dict(embed_dim=gen.track_embed_dim, height=H, width=W, seed=seed, device=torch.device("cpu"))
    return RLObjective(gen, ref, codec, build_rewards(cfg.rewards), cfg=cfg, sigmas=sig, **kw)


def test_sde_log_prob_is_the_gaussian_density():
    x, mean = torch.randn(3, 4, 2, 5, 5), torch.randn(3, 4, 2, 5, 5)
    std = torch.tensor([0.1, 0.5, 2.0])
    want = torch.distributions.Normal(mean.double(), std.double().view(-1, 1, 1, 1, 1)).log_prob(x.double())
    torch.testing.assert_close(gaussian_log_prob(x, mean, std), want.flatten(1).mean(1))


def test_group_advantages_have_zero_mean_and_unit_std():
    r = torch.tensor([1.0, 2.0, 4.0, 7.0, 3.0, 3.0, 3.0, 3.0, -1.0, 0.0, 5.0, 2.0])
    a = group_advantages(r, 4).view(3, 4)
    torch.testing.assert_close(a.mean(1), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(a[[0, 2]].std(1, unbiased=False), torch.ones(2), atol=1e-3, rtol=0)
    assert torch.equal(a[1], torch.zeros(4))  # a group that scored the same everywhere: no signal
    with pytest.raises(ValueError, match="groups of 5"):
        group_advantages(r, 5)


def test_clipping_engages_when_the_ratio_leaves_the_range():
    eps = 0.1
    old = torch.zeros(1, 4, dtype=torch.float64)
    logp = torch.log(torch.tensor([[1.0, 1.05, 1.3, 0.7]], dtype=torch.float64)).requires_grad_(True)
    adv = torch.tensor([1.0, 1.0, 1.0, -1.0])
    loss, stats = clipped_surrogate(logp, old, adv, clip_range=eps)
    loss.backward()
    # inside the range: the gradient of -A rho; outside in the advantage's direction: none
    torch.testing.assert_close(logp.grad[0, :2], -torch.tensor([1.0, 1.05], dtype=torch.float64) / 4)
    assert logp.grad[0, 2] == 0 and logp.grad[0, 3] == 0
    assert float(stats["clip_frac"]) == 0.5 and abs(float(stats["ratio_max"]) - 1.3) < 1e-9


def test_at_noise_level_zero_the_rollout_is_the_streaming_engine(codec):
    gen = tiny_network(1).eval()
    obj = _objective(gen, codec, reference=False)
    raw = make_conditions(codec)([0, 1])
    batch = obj.prepare_batch(raw)
    ro = obj.rollout(batch, noise_level=1e-7)
    rep, grouped = obj._group(raw), obj._group(batch)
    engine = StreamingGenerator(gen, codec, config=StreamConfig(shift=SHIFT, steps=K))
    image = rep["first_frame"].float() / 127.5 - 1
    state = engine.start(image, rep["text_emb"], rep["text_len"], track_ids=grouped["track_ids"], seed=4 + 1)
    _, latents, _ = collect(engine.stream(state, tracks_from_array(rep["tracks"], rep["visibility"]), num_chunks=3))
    torch.testing.assert_close(ro.committed, latents, atol=1e-5, rtol=0)
    assert ro.steps.shape == (2, 2 * G) and [x.shape for x in ro.x_in] == [(2 * G, 16, 3, H // 8, W // 8)] * 2


def _noise_log(monkeypatch) -> list:
    """Every re-noise ``denoise_chunk`` applies, per chunk: [chunk][transition] -> [R, C, f, h, w]."""
    log, real = [], rl.denoise_chunk

    def spy(*args, fresh_noise, **kw):
        log.append([])
        return real(*args, fresh_noise=lambda: log[-1].append(fresh_noise()) or log[-1][-1], **kw)

    monkeypatch.setattr(rl, "denoise_chunk", spy)
    return log


def test_exactly_one_sde_step_per_chunk_reproducible_from_the_seed(codec, monkeypatch):
    gen = tiny_network(1).eval()
    raw = {**make_conditions(codec)([0, 1]), "gid": torch.tensor([7, 8])}  # per-rollout seeds from the ids
    log = _noise_log(monkeypatch)
    runs = []
    for a in (0.7, 0.3, 0.7):
        obj = _objective(gen, codec, reference=False)
        runs.append(obj.rollout(obj.prepare_batch(raw), noise_level=a))
    a, b, again = runs
    assert torch.equal(a.steps, b.steps) and torch.equal(a.steps, again.steps)  # the SDE steps: from the seeds
    for name in ("committed", "log_prob"):
        assert torch.equal(getattr(a, name), getattr(again, name)), name
    for name in ("x_in", "x_next"):  # one state per generated chunk
        assert all(torch.equal(x, y) for x, y in zip(getattr(a, name), getattr(again, name), strict=True)), name
    for chunk in range(2):  # per chunk and rollout the noise differs between levels at the SDE step only
        diff = torch.stack([(x - y).flatten(1).abs().amax(1) > 0 for x, y in zip(log[chunk], log[2 + chunk])])
        assert diff.sum(0).tolist() == [1] * (2 * G)
        assert torch.equal(diff.float().argmax(0), a.steps[chunk])
    assert set(a.steps.flatten().tolist()) <= {0, 1}  # K - 1 = 2 re-noising transitions per chunk
    obj = _objective(gen, codec, reference=False)
    other = obj.rollout(obj.prepare_batch({**raw, "gid": torch.tensor([9, 10])}))
    assert not torch.equal(other.committed, a.committed)


def test_recomputed_log_prob_of_an_unchanged_policy_is_the_recorded_one(codec):
    gen = tiny_network(1)
    obj = _objective(gen, codec)
    batch = obj.prepare_batch(make_conditions(codec)([0, 1]))
    loss, metrics = obj.loss("generator", batch, step=0)
    assert float(metrics["rl/ratio_min"]) == float(metrics["rl/ratio_max"]) == 1.0  # on-policy: ratio 1 ...
    assert float(metrics["rl/kl"]) == 0.0 and float(metrics["rl/clip_frac"]) == 0.0  # ... KL 0 at the start
    assert {"rl/reward_motion", "rl/reward_appearance", "rl/reward_seconds", "rl/adv_abs"} <= set(metrics)
    loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in gen.parameters() if p.grad is not None) > 0
    assert all(p.grad is None for p in obj.reference.parameters())
    assert not obj.buffers  # a round of one update leaves nothing behind
    with pytest.raises(ValueError, match="schedule.student_steps=1"):
        RLObjective(gen, None, codec, None, cfg=RLConfig(), sigmas=sampling_sigmas(1, shift=SHIFT),
                    embed_dim=64, height=H, width=W, seed=0, device=torch.device("cpu"))  # fmt: skip


class Brightness(Reward):
    name = "brightness"

    def score(self, frames, condition):
        return frames.float().mean(dim=(1, 2, 3, 4))


@pytest.mark.slow
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_few_grpo_updates_move_the_videos_along_the_reward(codec, sign):
    """The learning signal's direction end to end (rollout, SDE credit, recomputation, surrogate): GRPO on
    +-mean brightness makes the clips brighter / darker. A large lr and clip range: a signal check only."""
    torch.manual_seed(0)
    gen = tiny_network(1)
    cfg = RLConfig(group_size=4, updates_per_rollout=2, kl_weight=0.0, clip_range=1e-2)
    kw = dict(embed_dim=gen.track_embed_dim, height=H, width=W, seed=0, device=torch.device("cpu"))
    obj = RLObjective(
        gen, None, codec, CombinedReward([(Brightness(), sign)]), cfg=cfg, sigmas=sampling_sigmas(K, shift=SHIFT), **kw
    )
    opt = torch.optim.AdamW(gen.parameters(), lr=3e-3, weight_decay=0.0)
    conditions, rewards = make_conditions(codec), []
    for step in range(12):  # 6 rounds
        raw = {**conditions([step % 8, (step + 3) % 8]), "gid": torch.tensor([2 * step, 2 * step + 1])}
        loss, metrics = obj.loss("generator", obj.prepare_batch(raw), step=step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if "rl/reward" in metrics:
            rewards.append(float(metrics["rl/reward"]))
    # a rise of 0.004-0.006 here; without updates (lr 0) the rounds' rewards differ by < 0.0006
    assert np.mean(rewards[-2:]) - np.mean(rewards[:2]) > 0.003, rewards


@pytest.mark.parametrize(
    "change,field",
    [
        ({"group_size": 1}, "stage.group_size"),
        ({"noise_level": 0.0}, "stage.noise_level"),
        ({"updates_per_rollout": 0}, "stage.updates_per_rollout"),
        ({"rewards": {"motion": {"weight": 0.0}}}, "every weight is 0"),
        ({"rewards": {"motion": {"tracker": "lk"}}}, "stage.rewards.motion.tracker"),
    ],
)
def test_config_errors_name_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        RLConfig(**change)


def test_motion_reward_prefers_the_ground_truth_to_a_still_video():
    from trackstream.data.clips import DataConfig, make_world
    from trackstream.data.trackers import build_tracker

    clip = make_world(DataConfig(height=64, width=64, num_frames=25)).generate(3)
    video = clip["frames"][None]  # [1, T, H, W, 3] uint8
    still = np.repeat(video[:, :1], video.shape[1], axis=1)
    cond = {"tracks": torch.from_numpy(clip["tracks"])[None], "visibility": torch.from_numpy(clip["visibility"])[None]}
    reward = MotionReward(build_tracker("lk_plain"), alpha=256.0, scale=1 / 256, reference_width=None)
    gt, frozen = float(reward(video, cond)), float(reward(still, cond))
    assert 0 < gt <= 1 and gt > frozen >= 0 and reward.last_seconds > 0
    appearance = AppearanceReward()
    first = torch.from_numpy(video[:, 0]).permute(0, 3, 1, 2)
    noisy = np.clip(video.astype(int) + np.random.default_rng(0).integers(-60, 60, video.shape), 0, 255).astype(
        np.uint8
    )
    assert float(appearance(still, {"first_frame": first})) == 0.0  # the first frame kept exactly
    assert float(appearance(noisy, {"first_frame": first})) < float(appearance(video, {"first_frame": first})) < 0


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return rl_source(tmp_path_factory.mktemp("rl_src"))


def _run(tmp_path, source, run_dir, steps: int) -> dict:
    from trackstream.train.app import run_stage
    from trackstream.trainer.dist import init_runtime, seed_everything

    cfg = typed(
        tmp_path,
        "experiment=rl_tiny",
        "debug=tiny",
        "data.num_frames=25",
        f"stage.student={source['student']}",
        f"stage.pairs={source['pairs']}",
        "stage.group_size=2",
        f"trainer.max_steps={steps}",
        "trainer.ckpt_every=3",
        "trainer.log_every=1",
    )
    seed_everything(cfg.trainer.seed)  # as train.app.start_run does
    return run_stage(cfg, init_runtime("single"), run_dir)


def _rows(run_dir) -> dict:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if not k.startswith("perf/") and "seconds" not in k} for r in rows}


@pytest.mark.slow
def test_rl_tiny_runs_through_the_stage_and_resumes_mid_round_exactly(source, tmp_path):
    """4 steps = 2 rounds of 2 updates; resumed in fresh objects from the step-3 checkpoint (inside the second
    round: its rollouts are in the checkpoint; a run stopped there, as far as the checkpoint can tell): step 4's
    logged values and the weights bit for bit."""
    from conftest import stopped_at

    ref = _run(tmp_path, source, tmp_path / "ref", 4)
    stopped_at(tmp_path / "ref", tmp_path / "cut", 3)
    res = _run(tmp_path, source, tmp_path / "cut", 4)
    assert res["resumed_from"].endswith("step_00000003") and res["policy_updates"] == ref["policy_updates"] == 4
    a, b = _rows(tmp_path / "ref"), _rows(tmp_path / "cut")
    assert sorted(a) == [1, 2, 3, 4] and sorted(b) == [4] and a[4] == b[4]
    assert ["train/rl/reward" in a[s] for s in (1, 2, 3, 4)] == [True, False, True, False]  # rollouts open rounds
    assert a[2]["train/rl/ratio_max"] != 1.0 and a[3]["train/rl/kl"] > 0  # off-policy update; moved from the start
    assert a[4]["train/rl/ratio_max"] != 1.0  # step 4 updates on step 3's rollouts, restored from the checkpoint
    wa = torch.load(tmp_path / "ref/checkpoints/step_00000004/generator.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "cut/checkpoints/step_00000004/generator.pt", weights_only=False)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (tmp_path / "ref/export/student/network.json").is_file()
    with pytest.raises(ValueError, match="stage.causal"):  # the student streams c3s1w1: a different window is refused
        from trackstream.train.exports import NetworkExport

        cfg = typed(tmp_path, "experiment=rl_tiny", "stage.causal.window_chunks=2")
        NetworkExport(source["student"], "stage.student").check_streams_as(cfg.schedule.streaming(cfg.stage.causal))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rl_wan1.3b_480p", "rl_wan2.2_5b_704p"])
def test_real_rl_recipes_keep_the_dmd_students_layout(name, tmp_path):
    cfg, dmd = typed(tmp_path, f"experiment={name}"), typed(tmp_path, f"experiment={name.replace('rl_', 'dmd_')}")
    assert isinstance(cfg.stage, RLConfig)
    for part in ("model", "data", "schedule", "codec", "parallel"):
        assert getattr(cfg, part) == getattr(dmd, part), part
    assert cfg.stage.causal == dmd.stage.causal and cfg.trainer.precision == "bf16"
    assert cfg.stage.group_size == 8 and cfg.stage.rewards.aesthetic.weight == cfg.stage.rewards.motion.weight == 1.0


def test_the_object_weighted_motion_reward_sees_an_object_that_does_not_move():
    from trackstream.data.synthetic import SyntheticWorld
    from trackstream.data.trackers import build_tracker
    from trackstream.eval.rewards import object_points

    world = SyntheticWorld(
        height=64, width=64, num_frames=13, camera_pan_prob=1.0, num_sprites=(1, 1), speed=(0.5, 0.6)
    )
    clip = world.generate(5)
    tracks, vis = clip["tracks"], clip["visibility"]
    on = object_points(tracks, vis)
    assert 0 < on.mean() < 0.5  # the sprite's points, not the panning background
    # the video keeps the camera's pan but the sprite's points are told to stay: only the object is wrong
    wrong = tracks.copy()
    wrong[:, on > 0] = tracks[:1, on > 0]
    cond = {"tracks": torch.from_numpy(wrong)[None], "visibility": torch.from_numpy(vis)[None]}
    video = clip["frames"][None]
    kw = dict(alpha=256.0, scale=1 / 256, reference_width=None)
    plain = MotionReward(build_tracker("lk_plain"), **kw)
    weighted = MotionReward(build_tracker("lk_plain"), object_weight=8.0, **kw)
    plain(video, cond), weighted(video, cond)
    assert float(weighted.extras["motion_mse_px2"]) > 2 * float(plain.extras["motion_mse_px2"])
    with pytest.raises(ValueError, match="object_weight"):
        RewardsConfig(motion={"object_weight": -1.0})
