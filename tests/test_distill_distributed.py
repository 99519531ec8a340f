"""ODE pairs, ODE init (DDP, FSDP2, DeepSpeed ZeRO-2) and DMD (DDP and FSDP2) on 2 processes (gloo) against 1 process at
the same global batch: the same pairs (each rank writes its share of the shards), the same losses (per-sample
draws keyed by global sample id; under DDP the DMD generator's gradients averaged by hand, under FSDP2 each
module of the streaming path its own unit), and an exact resume. Two steps each: the second is taken after an
update of every network, so it shows the reduced gradients, the optimizer steps and (resumed) the restored
state; more steps would repeat the same code. Tolerances: relative 1e-5 (ODE init) and 1e-4 (DMD) on losses,
float reduction order only."""

import json
from pathlib import Path

import pytest
import torch
from conftest import cli_env, stopped_at

from trackstream.distill.pair_shards import load_ode_pairs

ROOT = Path(__file__).resolve().parents[1]
COMMON = [
    "debug=tiny",
    "data.num_frames=25",
    "trainer.num_threads=1",
    "eval.enabled=false",
    "logger.progress_bar=false",
    "trainer.log_every=1",
]


def _env():
    return cli_env(OMP_NUM_THREADS="1")


def _stages(run_module, srun):
    """``run(args, procs=N)``: ``python -m trackstream.stages COMMON args`` as N tasks of a Slurm step (one: a
    plain process, no launcher)."""

    def run(args, *, procs: int = 1) -> None:
        if procs > 1:
            srun(procs, "-m", "trackstream.stages", *COMMON, *args, timeout=600, env=_env())
        else:
            run_module("trackstream.stages", *COMMON, *args, timeout=600, env=_env())

    return run


def _losses(run: Path, key: str = "train/loss") -> dict[int, float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows if key in r}


def _same_dmd_losses(a_run: Path, b_run: Path) -> None:
    """Both networks' DMD losses at every logged step, within relative 1e-4 (reduction order only)."""
    for key in ("train/loss/critic", "train/loss/generator"):
        a, b = _losses(a_run, key), _losses(b_run, key)
        assert a and sorted(a) == sorted(b), (key, a, b)
        for s in a:
            assert abs(a[s] - b[s]) <= 1e-4 * max(1.0, abs(a[s])), (key, s, a[s], b[s])


@pytest.mark.multiproc
def test_ode_init_on_two_processes_matches_one_at_the_same_global_batch(tmp_path, run_module, srun, tiny_teacher_run):
    stages = _stages(run_module, srun)
    teacher = tiny_teacher_run / "export" / "teacher"
    stage = [
        f"stage.teacher={teacher}",
        "stage.ode_pairs.num_pairs=4",
        "stage.ode_pairs.teacher_steps=3",
        "stage.ode_pairs.batch_size=2",
        "stage.ode_pairs.shard_size=2",
        "trainer.max_steps=2",
        "trainer.ckpt_every=1",
    ]
    ode = ["experiment=tiny_ode_init", *stage]
    one, two, cut = tmp_path / "one", tmp_path / "two", tmp_path / "cut"
    stages([*ode, "data.batch_size=4", f"hydra.run.dir={one}"])
    stages([*ode, "parallel=ddp", "data.batch_size=2", f"hydra.run.dir={two}"], procs=2)

    assert "ddp x 2" in (two / "train.log").read_text()
    # the pairs: 2 shards, one written by each rank, identical to the single process's
    a = load_ode_pairs(one / "ode_pairs", student_steps=3, shift=3.0)
    b = load_ode_pairs(two / "ode_pairs", student_steps=3, shift=3.0)
    assert sorted(p.name for p in (two / "ode_pairs").glob("*.safetensors")) == [
        "pairs_00000.safetensors",
        "pairs_00001.safetensors",
    ]
    for key in ("trajectory", "image", "tracks", "text_emb"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)

    # the losses at the same global batch (4 = 1 x 4 = 2 x 2): float reduction order only
    l1, l2 = _losses(one), _losses(two)
    assert sorted(l1) == sorted(l2) == [1, 2] and len(set(l1.values())) == 2
    for s in l1:
        assert abs(l1[s] - l2[s]) <= 1e-5 * max(1.0, abs(l1[s])), (s, l1[s], l2[s])

    # 2 processes resumed from the uninterrupted run's step-1 checkpoint (a run stopped there, as far as the
    # checkpoint can tell): step 2 is the uninterrupted run's, bit for bit
    stopped_at(two, cut, 1, "ode_pairs")
    stages([*ode, "parallel=ddp", "data.batch_size=2", f"hydra.run.dir={cut}"], procs=2)
    l3 = _losses(cut)
    assert sorted(l3) == [2] and l3[2] == l2[2], (l3, l2)
    assert json.loads((cut / "results.json").read_text())["resumed_from"].endswith("step_00000001")

    # FSDP2 (generator sharded, EMA sharded): the same losses and, gathered on rank 0, the same export
    fs = tmp_path / "fsdp"
    pairs = f"stage.pairs={one / 'ode_pairs'}"
    stages([*ode, "parallel=fsdp", "data.batch_size=2", pairs, f"hydra.run.dir={fs}"], procs=2)
    l4 = _losses(fs)
    assert sorted(l4) == [1, 2]
    for s in l1:
        assert abs(l1[s] - l4[s]) <= 1e-5 * max(1.0, abs(l1[s])), (s, l1[s], l4[s])
    h1 = torch.load(one / "export" / "student" / "heads.pt", weights_only=True)
    h4 = torch.load(fs / "export" / "student" / "heads.pt", weights_only=True)
    for k in h1:
        torch.testing.assert_close(h1[k], h4[k], rtol=1e-4, atol=1e-6)

    # DeepSpeed ZeRO-2 (the ODE-init student trains through its forward, which an engine sees): the same losses
    ds = tmp_path / "deepspeed"
    stages([*ode, "parallel=deepspeed_zero2", "data.batch_size=2", pairs, f"hydra.run.dir={ds}"], procs=2)
    l5 = _losses(ds)
    assert sorted(l5) == [1, 2]
    for s in l1:
        assert abs(l1[s] - l5[s]) <= 1e-5 * max(1.0, abs(l1[s])), (s, l1[s], l5[s])

    # DMD from the same student and pairs, critic then generator at every step (update_ratio 1: the recipe's
    # 5:1 only spaces the same two updates out), global batch 2
    dmd = [
        "experiment=tiny_dmd",
        f"stage.teacher={teacher}",
        f"stage.student={one / 'export' / 'student'}",
        pairs,
        "stage.update_ratio=1",
        "trainer.max_steps=2",
        "trainer.ckpt_every=1",
    ]
    d1, d2 = tmp_path / "dmd1", tmp_path / "dmd2"
    stages([*dmd, "data.batch_size=2", f"hydra.run.dir={d1}"])
    stages([*dmd, "parallel=ddp", "data.batch_size=1", f"hydra.run.dir={d2}"], procs=2)
    _same_dmd_losses(d1, d2)
    w1 = torch.load(d1 / "export" / "student" / "heads.pt", weights_only=True)
    w2 = torch.load(d2 / "export" / "student" / "heads.pt", weights_only=True)
    w0 = torch.load(one / "export" / "student" / "heads.pt", weights_only=True)
    assert any(not torch.equal(w0[k], w1[k]) for k in w1)  # the generator moved ...
    for k in w1:  # ... and the same way on 1 and on 2 processes
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-6)

    # DMD under FSDP2 (generator, critic and the frozen teacher sharded): the same losses and export,
    # and the run resumed from its step-1 checkpoint (both networks updated once) repeats step 2 exactly
    d3, d4 = tmp_path / "dmd_fsdp", tmp_path / "dmd_fsdp_cut"
    fsdp = [*dmd, "parallel=fsdp", "data.batch_size=1"]
    stages([*fsdp, f"hydra.run.dir={d3}"], procs=2)
    _same_dmd_losses(d1, d3)
    w3 = torch.load(d3 / "export" / "student" / "heads.pt", weights_only=True)
    for k in w1:
        torch.testing.assert_close(w1[k], w3[k], rtol=1e-4, atol=1e-6)
    stopped_at(d3, d4, 1)
    stages([*fsdp, f"hydra.run.dir={d4}"], procs=2)
    assert json.loads((d4 / "results.json").read_text())["resumed_from"].endswith("step_00000001")
    for key in ("train/loss/critic", "train/loss/generator"):
        after = {s: v for s, v in _losses(d3, key).items() if s > 1}
        assert sorted(after) == [2] and _losses(d4, key) == after, key
