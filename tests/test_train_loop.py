"""The generic loop on toy objectives: accumulation, EMA, schedules, seeds, a 2-optimizer 5:1
objective (the DMD protocol) with exact in-process resume, checkpoint hygiene."""

import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from trackstream.data.pool_stream import PoolStream
from trackstream.trainer.checkpoint import CheckpointManager, PreemptionHandler, find_latest
from trackstream.trainer.dist import init_runtime, seed_everything
from trackstream.trainer.ema import EMA, EMAConfig
from trackstream.trainer.loop import TrainerConfig, train
from trackstream.trainer.metrics import LoggerConfig, MetricLogger
from trackstream.trainer.objective import Objective, generator_state, load_generator_state
from trackstream.trainer.optim import OptimConfig, lr_factor, param_groups
from trackstream.trainer.parallel import ParallelConfig, prepare_network


@pytest.fixture(scope="module")
def runtime():
    return init_runtime("single")


def toy_stream(batch_size=4, seed=0):
    def make(idx, gids):
        g = torch.Generator().manual_seed(1000 + sum(gids))
        x = torch.randn(len(idx), 8, generator=g)
        return {"x": x, "y": x @ torch.linspace(-1, 1, 8)[:, None] + 0.1 * torch.randn(len(idx), 1, generator=g)}

    return PoolStream(64, batch_size=batch_size, seed=seed, make_batch=make, rank=0, world_size=1)


class Regression(Objective):
    networks = ("net",)

    def __init__(self, net):
        self.net = net

    def loss(self, name, batch, *, step):
        return (self.net(batch["x"]) - batch["y"]).square().mean(), {}


class TwoPlayer(Objective):
    """DMD-shaped: a 'critic' updated every step, a 'generator' every 5th, with own noise."""

    networks = ("critic", "generator")
    primary = "generator"

    def __init__(self, critic, generator, seed):
        self.critic, self.generator = critic, generator
        self.gen = torch.Generator().manual_seed(seed)

    def updates(self, step):
        return ["critic", "generator"] if step % 5 == 4 else ["critic"]

    def loss(self, name, batch, *, step):
        noise = torch.randn(batch["x"].shape, generator=self.gen)
        fake = self.generator(batch["x"] + 0.1 * noise)
        if name == "critic":
            return (self.critic(fake.detach()) - batch["y"]).square().mean(), {"critic/fake_mean": fake.mean().detach()}
        return (self.critic(fake) - batch["y"]).abs().mean(), {}

    def state_dict(self):
        return {"gen": generator_state(self.gen)}

    def load_state_dict(self, state):
        load_generator_state(self.gen, state["gen"])


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 1))


def _run(runtime, tmp, objective_fn, nets, *, steps, accum=1, batch=4, optim=None, ema=None, resume="auto"):
    prepared = {
        n: prepare_network(
            runtime, ParallelConfig(), name=n, module=m, optim=optim or OptimConfig(lr=1e-2), ema=ema, total_steps=steps
        )
        for n, m in nets.items()
    }
    objective = objective_fn({n: p.module for n, p in prepared.items()})
    cfg = TrainerConfig(max_steps=steps, grad_accum=accum, log_every=1, ckpt_every=3, resume=resume)
    logger = MetricLogger(tmp, LoggerConfig(progress_bar=False), is_main=True, total_steps=steps)
    ckpt = CheckpointManager(Path(tmp) / "checkpoints", runtime, keep_last=2, fingerprint={"toy": 1})
    try:
        res = train(
            objective=objective,
            networks=prepared,
            data=toy_stream(batch),
            cfg=cfg,
            runtime=runtime,
            checkpoints=ckpt,
            logger=logger,
        )
    finally:
        logger.close()
    return res, prepared


def _jsonl(path):
    import json

    rows = {}
    for line in (Path(path) / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[r["step"]] = r
    return rows


def test_gradient_accumulation_matches_the_big_batch(runtime):
    # two micro-batches of 4 accumulated == one batch of 8 (mean losses, loss / accum)
    net1, net2 = _net(1), _net(1)
    x, y = torch.randn(8, 8), torch.randn(8, 1)
    opt1, opt2 = torch.optim.SGD(net1.parameters(), lr=0.1), torch.optim.SGD(net2.parameters(), lr=0.1)
    (net1(x) - y).square().mean().backward()
    opt1.step()
    from trackstream.trainer.trained_network import DDPNetwork

    tn = DDPNetwork("n", net2, net2, opt2, torch.optim.lr_scheduler.LambdaLR(opt2, lambda u: 1.0), None, 0.0, runtime)
    for i, sl in enumerate((slice(0, 4), slice(4, 8))):
        tn.backward((net2(x[sl]) - y[sl]).square().mean(), accum=2, last=i == 1)
    tn.step()
    for p1, p2 in zip(net1.parameters(), net2.parameters()):
        torch.testing.assert_close(p1, p2, rtol=1e-6, atol=1e-7)
    assert tn.num_updates == 1


def test_loss_decreases_and_metrics_jsonl_has_the_contract(runtime, tmp_path):
    res, _ = _run(runtime, tmp_path, lambda n: Regression(n["net"]), {"net": _net()}, steps=30)
    rows = _jsonl(tmp_path)
    assert sorted(rows) == list(range(1, 31))
    assert all("train/loss" in r and "train/grad_norm/net" in r and "perf/samples_per_s" in r for r in rows.values())
    # the step's wait for its batch, a part of the step
    assert all(0 <= r["perf/data_time_s"] <= r["perf/step_time_s"] for r in rows.values())
    assert rows[30]["train/loss"] < 0.5 * rows[1]["train/loss"]
    assert res.status == "done" and find_latest(tmp_path / "checkpoints").name == "step_00000030"


def test_two_optimizers_5_to_1_and_exact_resume(runtime, tmp_path):
    def objective(n):
        return TwoPlayer(n["critic"], n["generator"], seed=7)

    def nets():
        return {"critic": _net(0), "generator": nn.Sequential(nn.Linear(8, 8))}

    optim = OptimConfig(lr=1e-2, warmup_steps=2, schedule="cosine", decay_steps=10)  # horizon fixed across the cut
    ema = EMAConfig(decay=0.9, start_step=1)
    _, full = _run(runtime, tmp_path / "full", objective, nets(), steps=10, optim=optim, ema=ema)
    assert full["critic"].num_updates == 10 and full["generator"].num_updates == 2  # 5:1
    # interrupted at 6 (checkpoint at 6), fresh objects, resumed to 10
    _run(runtime, tmp_path / "cut", objective, nets(), steps=6, optim=optim, ema=ema)
    _, resumed = _run(runtime, tmp_path / "cut", objective, nets(), steps=10, optim=optim, ema=ema)
    a, b = _jsonl(tmp_path / "full"), _jsonl(tmp_path / "cut")
    assert [a[s]["train/loss/critic"] for s in range(1, 11)] == [b[s]["train/loss/critic"] for s in range(1, 11)]
    assert a[10]["train/loss"] == b[10]["train/loss"]  # the generator's (primary) loss
    for name in ("critic", "generator"):
        for p, q in zip(full[name].raw.parameters(), resumed[name].raw.parameters()):
            assert torch.equal(p, q)
        for p, q in zip(full[name].ema.shadow, resumed[name].ema.shadow):
            assert torch.equal(p, q)
        assert full[name].lr() == resumed[name].lr()


def test_resume_refuses_a_changed_config(runtime, tmp_path):
    _run(runtime, tmp_path, lambda n: Regression(n["net"]), {"net": _net()}, steps=3)
    ckpt = CheckpointManager(tmp_path / "checkpoints", runtime, keep_last=2, fingerprint={"toy": 2})
    prepared = {
        "net": prepare_network(
            runtime, ParallelConfig(), name="net", module=_net(), optim=OptimConfig(), ema=None, total_steps=3
        )
    }
    with pytest.raises(ValueError, match="config changed"):
        ckpt.load(
            find_latest(tmp_path / "checkpoints"), networks=prepared, objective=Regression(prepared["net"].module)
        )


def test_checkpoints_are_atomic_and_pruned(runtime, tmp_path):
    (tmp_path / "checkpoints" / ".tmp-step_00000099").mkdir(parents=True)  # a crash mid-save
    (tmp_path / "checkpoints" / "step_00000098").mkdir()  # no meta.pt: incomplete
    _run(runtime, tmp_path, lambda n: Regression(n["net"]), {"net": _net()}, steps=9)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert "step_00000006" in names and "step_00000009" in names and "step_00000003" not in names
    assert not any(n.startswith(".tmp") for n in names)
    assert find_latest(tmp_path / "checkpoints").name == "step_00000009"


def test_ema_semantics():
    net = nn.Linear(2, 2)
    ema = EMA(net, EMAConfig(decay=0.5, start_step=1))
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)  # update 1 <= start_step: copy
    assert torch.equal(ema.shadow[0], net.weight)
    with torch.no_grad():
        net.weight.fill_(3.0)
    ema.update(net)  # 0.5 * 1 + 0.5 * 3
    assert torch.allclose(ema.shadow[0], torch.full((2, 2), 2.0))
    with ema.swapped(net):
        assert torch.allclose(net.weight, torch.full((2, 2), 2.0))
    assert torch.allclose(net.weight, torch.full((2, 2), 3.0))
    assert ema.shadow[0].dtype == torch.float32


def test_lr_schedules():
    cos = OptimConfig(lr=1.0, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, cos, total=104) == pytest.approx(1 / 5)
    assert lr_factor(4, cos, total=104) == pytest.approx(1.0)
    assert lr_factor(54, cos, total=104) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(104, cos, total=104) == pytest.approx(0.1)
    lin = OptimConfig(lr=1.0, schedule="linear")
    assert lr_factor(50, lin, total=100) == pytest.approx(0.5)
    assert lr_factor(10, OptimConfig(), total=100) == 1.0
    # warmup, stable, decay: held at 1 until decay_start, then linear to min_lr_ratio at decay_steps
    wsd = OptimConfig(schedule="linear", decay_start=2000, decay_steps=3000, min_lr_ratio=0.1)
    assert [lr_factor(u, wsd, total=3000) for u in (0, 1999, 2000)] == [1.0, 1.0, 1.0]
    assert lr_factor(2500, wsd, total=3000) == pytest.approx(0.55) and lr_factor(3000, wsd, total=3000) == 0.1
    with pytest.raises(ValueError, match="optim.decay_start=3000"):
        OptimConfig(schedule="linear", decay_start=3000, decay_steps=3000)


def test_param_groups_skip_decay_on_vectors_and_modulation():
    from trackstream.models.motion_wan import ModelConfig, build_motion_wan

    net = build_motion_wan(ModelConfig(), text_encoder_dim=384)
    decay, no_decay = param_groups(net, OptimConfig(weight_decay=0.1))
    assert all(p.ndim >= 2 for p in decay["params"])
    ids = {id(p) for p in no_decay["params"]}
    assert id(net.dit.blocks[0].modulation) in ids and id(net.dit.blocks[0].self_attn.q.bias) in ids
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


def test_seed_zero_is_a_real_seed():
    seed_everything(0)
    a = torch.randn(3)
    seed_everything(0)
    assert torch.equal(a, torch.randn(3))
    seed_everything(1)
    assert not torch.equal(a, torch.randn(3))


def test_preemption_handler_turns_signals_into_a_flag():
    with PreemptionHandler() as h:
        assert not h.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        assert h.requested and h.signum == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_a_restart_drops_the_rows_past_its_step_and_sends_no_step_twice_to_wandb(tmp_path, monkeypatch):
    """A killed attempt logged steps 1-5 (the last row cut short) and its last checkpoint is step 3: the run
    resumed there drops rows 4-5 from metrics.jsonl and eval.jsonl, and W&B (the same run id, which holds up to
    step 5 and refuses a step that goes back) gets only the steps past 5."""
    import json
    import sys
    import types

    from trackstream.trainer.metrics import WandbConfig

    sent = []
    run = types.SimpleNamespace(log=lambda d, step: sent.append(step), summary={}, finish=lambda: None)
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: run))
    rows = "".join(json.dumps({"step": s, "train/loss": 1.0 / s}) + "\n" for s in range(1, 6))
    (tmp_path / "metrics.jsonl").write_text(rows + '{"step": 6, "train/lo')
    (tmp_path / "eval.jsonl").write_text('{"step": 2, "epe": 1.0}\n{"step": 4, "epe": 0.5}\n')
    wandb_on = LoggerConfig(progress_bar=False, wandb=WandbConfig(enabled=True, mode="offline"))
    logger = MetricLogger(tmp_path, wandb_on, is_main=True, total_steps=8)
    logger.start_at(3)
    for step in range(4, 8):
        logger.log(step, {"train/loss": 1.0 / step})
    logger.log_eval(4, {"epe": 0.25})
    logger.log_eval(6, {"epe": 0.2})
    logger.close()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6, 7]
    evals = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert evals == [{"step": 2, "epe": 1.0}, {"step": 4, "epe": 0.25}, {"step": 6, "epe": 0.2}]
    assert sent == [6, 7, 6]  # the train rows, then the evaluation at 6


@pytest.mark.slow  # an offline W&B run: wandb starts its service process
def test_wandb_offline_logs_scalars_and_a_video_file_without_moviepy(tmp_path, monkeypatch):
    import numpy as np

    from trackstream.eval.teacher_eval import overlay_tracks, write_video
    from trackstream.trainer.metrics import WandbConfig

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    frames = np.zeros((9, 32, 32, 3), np.uint8)
    tracks = np.stack([np.stack([np.arange(9) * 2.0 + 4, np.full(9, 8.0)], -1)] * 3, 1)  # [T, N, 2]
    video = write_video(tmp_path / "v.mp4", overlay_tracks(frames, tracks, np.ones((9, 3), bool)), fps=8)
    logger = MetricLogger(
        tmp_path,
        LoggerConfig(progress_bar=False, wandb=WandbConfig(enabled=True, mode="offline")),
        is_main=True,
        total_steps=2,
        config={"a": 1},
    )
    logger.log(1, {"train/loss": 1.0})
    import wandb

    warned = []
    monkeypatch.setattr(wandb, "termwarn", lambda msg, *a, **k: warned.append(msg))
    logger.log_video(1, "samples/with_tracks/000", video, caption="t")
    assert not warned, warned  # a file's own frame rate: no "fps is ignored" line per video
    logger.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.mp4"))
    assert (tmp_path / "metrics.jsonl").read_text().strip() == '{"step": 1, "train/loss": 1.0}'
