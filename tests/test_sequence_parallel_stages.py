"""The causal stages under parallel.sequence_parallel through ``trackstream train`` on the tiny recipes: ODE
pairs (the teacher sampling on token slices), ODE init (the block-causal regression) and DMD (the rolling-cache rollout of the generator, the critic and the
frozen teacher on token slices) on K = 2 processes, and ODE init on data 2 x sequence 2 = 4 processes, give the
losses of one process at the same global batch (relative 1e-5 / 1e-4: float reduction order only). Two steps: the
second follows an update of every network (DMD: critic and generator at every step)."""

import pytest
import torch
from test_distill_distributed import _losses, _same_dmd_losses, _stages

from trackstream.distill.pair_shards import load_ode_pairs

pytestmark = pytest.mark.multiproc


@pytest.fixture(scope="module")
def stages(run_module, srun):
    """``stages(args, procs=N)``: ``python -m trackstream.stages`` on N processes."""
    return _stages(run_module, srun)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, stages, tiny_teacher_run):
    """A tiny teacher (the session's), its ODE pairs and a one-process ODE init (the reference), shared by the
    tests."""
    root = tmp_path_factory.mktemp("sp_chain")
    t = tiny_teacher_run
    stage = [
        f"stage.teacher={t / 'export' / 'teacher'}",
        "stage.ode_pairs.num_pairs=4",
        "stage.ode_pairs.teacher_steps=3",
        "stage.ode_pairs.batch_size=2",
        "stage.ode_pairs.shard_size=2",
        "data.batch_size=2",
        "trainer.max_steps=2",
    ]
    one = root / "ode_one"
    stages(["experiment=tiny_ode_init", *stage, f"hydra.run.dir={one}"])
    return {"root": root, "teacher": t / "export" / "teacher", "stage": stage, "ode": one}


def _close(a: dict, b: dict, rel: float) -> None:
    assert a and sorted(a) == sorted(b), (a, b)
    for s in a:
        assert abs(a[s] - b[s]) <= rel * max(1.0, abs(a[s])), (s, a[s], b[s])


@pytest.mark.parametrize("procs, batch", [(2, 2), (4, 1)])
def test_ode_init_under_sequence_parallelism_equals_one_process(chain, procs, batch, tmp_path, stages):
    """On 2 processes the pairs are sampled too, by the teacher on token slices (each group writes its data
    rank's shards): the one-process pairs within float32 rounding. On 4 the one-process pairs are read."""
    run = tmp_path / "ode_sp"
    stage = [s for s in chain["stage"] if not s.startswith("data.batch_size")]
    pairs = [] if procs == 2 else [f"stage.pairs={chain['ode'] / 'ode_pairs'}"]
    stages(
        ["experiment=tiny_ode_init", *stage, f"data.batch_size={batch}", "parallel=fsdp",
         "parallel.sequence_parallel=2", *pairs, f"hydra.run.dir={run}"],
        procs=procs,
    )  # fmt: skip
    if not pairs:
        a = load_ode_pairs(chain["ode"] / "ode_pairs", student_steps=3, shift=3.0)
        b = load_ode_pairs(run / "ode_pairs", student_steps=3, shift=3.0)
        assert a["trajectory"].shape == b["trajectory"].shape
        torch.testing.assert_close(b["trajectory"], a["trajectory"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b["tracks"], a["tracks"], rtol=0, atol=0)
    log = (run / "train.log").read_text()
    assert f"x {procs // 2} data ranks (each a sequence group of 2 processes)" in log
    assert "sequence parallel: the generator runs 1/2 of each clip's tokens per rank" in log
    assert ("sequence parallel: the teacher (ODE pairs) runs 1/2" in log) is (not pairs)
    _close(_losses(chain["ode"]), _losses(run), 1e-5)


def test_dmd_under_sequence_parallelism_equals_one_process(chain, tmp_path, stages):
    dmd = [
        f"stage.teacher={chain['teacher']}",
        f"stage.student={chain['ode'] / 'export' / 'student'}",
        f"stage.pairs={chain['ode'] / 'ode_pairs'}",
        "data.batch_size=2",
        "stage.update_ratio=1",
        "trainer.max_steps=2",
    ]
    one, sp = tmp_path / "dmd_one", tmp_path / "dmd_sp"
    stages(["experiment=tiny_dmd", *dmd, f"hydra.run.dir={one}"])
    stages(
        ["experiment=tiny_dmd", *dmd, "parallel=fsdp", "parallel.sequence_parallel=2", f"hydra.run.dir={sp}"], procs=2
    )
    log = (sp / "train.log").read_text()
    assert "x 1 data ranks (each a sequence group of 2 processes)" in log
    assert all(f"sequence parallel: the {n} runs 1/2" in log for n in ("generator", "critic", "teacher"))
    _same_dmd_losses(one, sp)
