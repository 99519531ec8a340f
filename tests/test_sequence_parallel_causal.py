"""Ulysses sequence parallelism on the causal student's two attention paths (models.causal): the block-causal
training forward (the ODE-init regression; the mask in the all-to-all's rank-major order) and the rolling KV
cache of the streaming step (the DMD / RL rollout; each rank caches its K-th of the heads), on K = 2 gloo
processes, against the same network without a shard: outputs, the cache's layout, and the group's mean
parameter gradient (what data-parallel averaging hands the optimizer)."""

from pathlib import Path

import pytest
import torch

from conftest import cli_env
from trackstream.models.sequence_parallel import SequenceShard
from trackstream.models.streaming import CausalConfig

ROOT = Path(__file__).resolve().parents[1]

DRIVER = r"""
import sys, torch, torch.distributed as dist
torch.set_num_threads(1)
from trackstream.models.block_causal import block_causal_forward
from trackstream.models.causal import new_cache, stream_step
from trackstream.models.streaming import CausalConfig
from trackstream.models.flavors import build_wan
from trackstream.models.sequence_parallel import SequenceShard
dist.init_process_group("gloo")
K, out = dist.get_world_size(), sys.argv[1]
torch.manual_seed(0)
dit = build_wan("tiny", device="cpu", dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_len=8).double()
with torch.no_grad():
    for p in dit.parameters():
        p.copy_(torch.randn_like(p) * 0.1)  # the official init zeroes the head: no empty comparison
g = torch.Generator().manual_seed(1)
B, F = 2, 5
x = torch.randn(B, 16, F, 8, 8, generator=g, dtype=torch.float64)
t = torch.rand(B, F, generator=g, dtype=torch.float64) * 1000
ctx = torch.randn(B, 6, 64, generator=g, dtype=torch.float64)
report = {}

def grads():
    gs = {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in dit.named_parameters()}
    dit.zero_grad()
    return gs

def mean_over_group(gs):
    for v in gs.values():
        dist.all_reduce(v)
        v /= K
    return gs

def block(cfg):
    return block_causal_forward(dit, cfg, x, t, ctx, backend="sdpa")

def stream(cfg):
    cache, preds, nbytes, start = new_cache(dit, cfg, ctx), [], [], 0
    for i in range(cfg.num_chunks(F)):
        n = cfg.chunk_len(i)
        xi = x[:, :, start : start + n]
        pred, _ = stream_step(dit, cache, xi, t[:, start : start + n])
        preds.append(pred)
        _, kv = stream_step(dit, cache, 0.5 * xi, torch.zeros(B, dtype=torch.float64))  # the clean pass it caches
        cache = cache.append(kv)
        nbytes.append(cache.nbytes())
        start += n
    return torch.cat(preds, dim=2), nbytes

for name, cfg in (("c1s1w1f1", CausalConfig(1, 1, 1, 1)), ("c2s1w1f1", CausalConfig(2, 1, 1, 1))):
    for path, run in (("block", block), ("stream", stream)):
        dit.sequence_shard = None
        ref = run(cfg)
        ref_out = ref[0] if isinstance(ref, tuple) else ref
        ref_out.square().mean().backward()
        ref_grads = grads()
        dit.sequence_shard = SequenceShard.of(dist.group.WORLD)
        got = run(cfg)
        got_out = got[0] if isinstance(got, tuple) else got
        got_out.square().mean().backward()
        got_grads = mean_over_group(grads())
        report[(name, path)] = dict(
            out=(got_out - ref_out).abs().max().item(),
            scale=ref_out.abs().max().item(),
            grad=max(((got_grads[n] - ref_grads[n]).abs().max() / ref_grads[n].abs().max().clamp_min(1e-30)).item()
                     for n in ref_grads),
            empty=[n for n, v in ref_grads.items() if v.abs().max() == 0],
            nbytes=(ref[1], got[1]) if isinstance(ref, tuple) else None,
        )
dist.barrier()
if dist.get_rank() == 0:
    torch.save(report, out)
dist.destroy_process_group()
"""


def test_rank_major_order_is_what_the_all_to_all_delivers():
    grid = (2, 2, 4)  # 2 frames of 8 tokens; K = 2: rank 0 holds tokens 0-3 of each frame, rank 1 tokens 4-7
    order = SequenceShard(None, 2, 0).order(grid)
    assert order.tolist() == [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15]
    assert sorted(order.tolist()) == list(range(16))


@pytest.mark.multiproc
@pytest.mark.parametrize("nproc", [2])
def test_causal_paths_under_sequence_parallelism_equal_one_process(nproc, tmp_path, torchrun):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = cli_env(OMP_NUM_THREADS="1")
    r = torchrun(nproc, str(script), str(tmp_path / "report.pt"), check=False, timeout=300, env=env)
    assert (tmp_path / "report.pt").is_file(), r.stdout[-2000:] + r.stderr[-4000:]
    report = torch.load(tmp_path / "report.pt")
    assert len(report) == 4
    for key, row in report.items():
        # the DiT keeps its time embedding and head in float32: float32 tolerances (sums in another order)
        assert row["out"] <= 1e-6 * row["scale"], (key, row)
        assert row["grad"] <= 1e-5, (key, row)
        assert not row["empty"], (key, row["empty"])
        if row["nbytes"] is not None:  # each rank caches N/K of the heads: 1/K of the bytes
            ref, got = row["nbytes"]
            assert [b // nproc for b in ref] == got, key
    # both chunkings evict (window 1 after a sink): the sink's second RoPE table is exercised
    assert CausalConfig(1, 1, 1, 1).num_chunks(5) == 5 and CausalConfig(2, 1, 1, 1).num_chunks(5) == 3
