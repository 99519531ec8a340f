"""Ulysses sequence parallelism (models.sequence_parallel, parallel.sequence_parallel): the slice layout
and its RoPE positions, the all-to-all round trip and its gradient on 2 gloo processes, and the tiny
network's loss and gradients after one backward under K = 2 (2 processes) and data 2 x sequence 2
(4 processes) against one process with the whole global batch."""

from pathlib import Path

import pytest
import torch
from sp_helpers import FRAMES, HEIGHT, WIDTH, build_net, global_batch, loss_of

from conftest import cli_env
from trackstream.models.rope import grid_positions, rope_cos_sin
from trackstream.models.sequence_parallel import SequenceShard

ROOT = Path(__file__).resolve().parents[1]

ROUND_TRIP = r"""
import sys, torch, torch.distributed as dist
torch.set_num_threads(1)
from trackstream.models.sequence_parallel import heads_to_seq, seq_to_heads
dist.init_process_group("gloo")
K, r = dist.get_world_size(), dist.get_rank()
B, L, N, D = 2, 6, 4, 3
full = torch.arange(B * L * N * D, dtype=torch.float64).view(B, L, N, D)  # the same on every rank
local = full[:, r * L // K : (r + 1) * L // K].clone().requires_grad_(True)  # this rank's slice
heads = seq_to_heads(local, dist.group.WORLD)
# the whole sequence (rank-major = grid order for contiguous slices) on this rank's N/K heads
assert torch.equal(heads, full[:, :, r * N // K : (r + 1) * N // K]), "seq_to_heads"
assert torch.equal(heads_to_seq(heads, dist.group.WORLD), local), "round trip"
# gradient: d sum(w * heads) / d local must be w routed back to the slice it came from
w = torch.randn(B, L, N, D, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
(heads * w[:, :, r * N // K : (r + 1) * N // K]).sum().backward()
assert torch.equal(local.grad, w[:, r * L // K : (r + 1) * L // K]), "all-to-all backward"
dist.barrier()
if r == 0:
    open(sys.argv[1], "w").write("ok")
dist.destroy_process_group()
"""

DRIVER = r"""
import os, sys
from pathlib import Path
import torch
import torch.distributed as dist
torch.set_num_threads(1)
sys.path.insert(0, os.environ["SP_TESTS"])
from sp_helpers import FRAMES, HEIGHT, WIDTH, build_net, global_batch, loss_of, take
from trackstream.trainer.dist import hard_exit, init_runtime
from trackstream.trainer.optim import OptimConfig
from trackstream.trainer.parallel import ParallelConfig, attach_sequence_parallel, prepare_network

strategy, K, out, recompute = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"
rt = init_runtime(strategy, sequence_parallel=K)
net = build_net()
attach_sequence_parallel(net, rt)
tn = prepare_network(rt, ParallelConfig(strategy=strategy, sequence_parallel=K, activation_checkpointing=recompute), name="dit", module=net,
                     optim=OptimConfig(lr=1e-3), ema=None, total_steps=1)
seen = []  # tokens entering a block on this rank: the slice, not the whole sequence
tn.raw.dit.blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
loss = loss_of(tn.module, take(global_batch(), rt.data_rank, rt.data_world_size))
tn.backward(loss, accum=1, last=True)
grads = {}
for name, p in tn.raw.named_parameters():
    g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
    grads[name] = g.detach().clone()
every = [torch.zeros(()) for _ in range(rt.world_size)]
dist.all_gather(every, loss.detach())
if rt.is_main:
    torch.save({"losses": torch.stack(every), "grads": grads, "data_world": rt.data_world_size, "tokens": seen},
               out / "result.pt")
rt.barrier()
hard_exit(0)
"""


def _launch(launcher, script: str, args: list[str], tmp_path: Path, nproc: int, timeout: int = 300):
    path = tmp_path / "driver.py"
    path.write_text(script)
    env = cli_env(OMP_NUM_THREADS="1", SP_TESTS=str(ROOT / "tests"))
    return launcher(nproc, str(path), *args, check=False, timeout=timeout, env=env)


def test_slice_layout_and_rope_positions():
    grid = (2, 4, 3)  # 2 frames of 12 tokens; K = 2: rank 1 holds rows 2-3 of every frame
    pos = grid_positions(grid, frame_offset=5)
    shard = SequenceShard(None, size=2, rank=1)
    local = shard.split(pos[None], grid)[0]
    want = torch.tensor([(f, h, w) for f in (5, 6) for h in (2, 3) for w in range(3)])
    assert torch.equal(local, want)
    cos, sin = rope_cos_sin(pos, 16)
    lcos, lsin = rope_cos_sin(local, 16)  # the slice's tables are the full table's rows of its tokens
    rows = torch.tensor([f * 12 + h * 3 + w for f in (0, 1) for h in (2, 3) for w in range(3)])
    assert torch.equal(lcos, cos[rows]) and torch.equal(lsin, sin[rows])
    # the two slices tile the sequence: each token exactly once
    both = torch.cat([SequenceShard(None, 2, k).split(pos[None], grid)[0] for k in (0, 1)])
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, pos.tolist()))


def test_refusals_name_the_option():
    with pytest.raises(ValueError, match=r"parallel.sequence_parallel=3 .*num_heads=4"):
        SequenceShard(None, 3, 0).check(4, (2, 4, 3))
    with pytest.raises(ValueError, match=r"parallel.sequence_parallel=5 .*tokens per latent frame"):
        SequenceShard(None, 5, 0).check(5, (2, 4, 3))
    net = build_net()
    net.dit.sequence_shard = SequenceShard(None, 2, 0)
    b = global_batch()
    with pytest.raises(ValueError, match=r"parallel.sequence_parallel > 1: this self-attention \(function"):
        net(b["x"], b["t"], text=b["text"], text_lengths=b["lens"], motion=b["motion"], attention=lambda *a: a[1])
    from trackstream.trainer.parallel import ParallelConfig

    with pytest.raises(ValueError, match="parallel.sequence_parallel=2 needs parallel=fsdp or ddp"):
        ParallelConfig(strategy="deepspeed", sequence_parallel=2)


@pytest.mark.multiproc
def test_all_to_all_round_trip_and_gradient(tmp_path, torchrun):
    r = _launch(torchrun, ROUND_TRIP, [str(tmp_path / "ok")], tmp_path, 2)
    assert (tmp_path / "ok").is_file(), r.stdout[-2000:] + r.stderr[-4000:]


def _reference():
    net = build_net()
    loss = loss_of(net, global_batch())
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in net.named_parameters()}


@pytest.mark.multiproc
@pytest.mark.parametrize("strategy, nproc, recompute", [("fsdp", 2, 0), ("fsdp", 4, 0), ("ddp", 2, 0), ("fsdp", 2, 1)])
def test_sequence_parallel_equals_one_process(strategy, nproc, recompute, tmp_path, srun):
    """K = 2; 4 processes: data 2 x sequence 2, each data rank with half the global batch; ``recompute``:
    activation checkpointing, whose backward runs the all-to-alls of the forward again."""
    r = _launch(srun, DRIVER, [strategy, "2", str(tmp_path), str(recompute)], tmp_path, nproc)
    assert (tmp_path / "result.pt").is_file(), r.stdout[-2000:] + r.stderr[-4000:]
    got = torch.load(tmp_path / "result.pt")
    assert got["data_world"] == nproc // 2
    assert got["tokens"] == [FRAMES * HEIGHT * WIDTH // 4 // 2]  # 2x2 patches, half of them on this rank
    ref_loss, ref_grads = _reference()
    losses = got["losses"].view(nproc // 2, 2)  # [data, seq]
    assert torch.equal(losses[:, 0], losses[:, 1])  # the ranks of a sequence group compute one loss
    torch.testing.assert_close(losses.mean(), ref_loss, rtol=1e-5, atol=1e-6)
    assert set(got["grads"]) == set(ref_grads)
    for name, g in ref_grads.items():
        assert g.abs().max() > 0, name  # no empty comparison
        torch.testing.assert_close(got["grads"][name], g, rtol=1e-5, atol=1e-5 * g.abs().max().item(), msg=name)


def _losses(run_dir: Path) -> list[float]:
    import json

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in sorted(rows, key=lambda r: r["step"]) if "train/loss" in r]


@pytest.mark.multiproc
def test_teacher_stage_through_the_cli_equals_one_process(tmp_path, run_module, srun):
    """``trackstream train`` on 2 processes with parallel.sequence_parallel=2 (one data rank): the codec
    fit, the 4 teacher steps, the collective evaluation and the export, with the losses of one process."""
    common = [
        "experiment=tiny_teacher",
        "debug=tiny",
        "parallel=ddp",
        "trainer.num_threads=1",
        "eval.save_videos=0",
        "stage.correspondence_weight=0",  # the probe reads one head of the whole sequence: refused under SP
    ]
    env = cli_env(OMP_NUM_THREADS="1")
    r = srun(
        2, "-m", "trackstream.train", *common, "parallel.sequence_parallel=2", f"hydra.run.dir={tmp_path / 'sp'}",
        check=False, timeout=300, env=env,
    )  # fmt: skip
    assert (tmp_path / "sp" / "results.json").is_file(), r.stdout[-2000:] + r.stderr[-4000:]
    assert "x 1 data ranks (each a sequence group of 2 processes)" in (tmp_path / "sp" / "train.log").read_text()
    r = run_module("trackstream.train", *common, f"hydra.run.dir={tmp_path / 'one'}", check=False, timeout=300, env=env)
    assert (tmp_path / "one" / "results.json").is_file(), r.stdout[-2000:] + r.stderr[-4000:]
    got, want = _losses(tmp_path / "sp"), _losses(tmp_path / "one")
    assert len(want) == 4
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-5, atol=0)


@pytest.mark.slow
def test_other_stages_refuse_sequence_parallel(tmp_path):
    from hydra_helpers import typed

    with pytest.raises(ValueError, match=r"parallel.sequence_parallel=2: stage 'codec' has no DiT to split"):
        typed(tmp_path, "experiment=tiny_codec", "parallel=fsdp", "parallel.sequence_parallel=2")
    for causal in ("tiny_ode_init", "tiny_dmd", "rl_tiny"):
        assert (
            typed(
                tmp_path, f"experiment={causal}", "parallel=fsdp", "parallel.sequence_parallel=2"
            ).parallel.sequence_parallel
            == 2
        )
    with pytest.raises(ValueError, match="stage.correspondence_weight=0"):
        typed(tmp_path, "experiment=tiny_teacher", "parallel=fsdp", "parallel.sequence_parallel=2")
    assert (
        typed(
            tmp_path,
            "experiment=tiny_teacher",
            "parallel=fsdp",
            "parallel.sequence_parallel=2",
            "stage.correspondence_weight=0",
        ).parallel.sequence_parallel
        == 2
    )
