"""The distillation stages through the real CLI at debug sizes, from the session's tiny teacher: ODE init (generates
the ODE pairs, regresses, exports) and DMD (two optimizers, exports, resumes keeping its 5:1-style phase) on one
process; and ODE pairs, ODE init (DDP, FSDP2, DeepSpeed ZeRO-2) and DMD (DDP and FSDP2) on 2 processes (gloo)
against that one process at the same global batch: the same pairs (each rank writes its share of the shards), the
same losses (per-sample draws keyed by global sample id; under DDP the DMD generator's gradients averaged by hand,
under FSDP2 each module of the streaming path its own unit), and an exact resume. Under
parallel.sequence_parallel (FSDP2): ODE pairs (the teacher sampling on token slices), ODE init (the block-causal
regression) and DMD (the rolling-cache rollout of the generator, the critic and the frozen teacher on token
slices) on K = 2 processes, and ODE init on data 2 x sequence 2 = 4 processes, against the same one process.
Two steps each: the second is taken after an update of every network, so it shows the reduced gradients, the
optimizer steps and (resumed) the restored state; more steps would repeat the same code. Tolerances: relative
1e-5 (ODE init) and 1e-4 (DMD) on losses, float reduction order only. The one-process runs (global batch 2) are
shared by the module's tests."""

import json
from pathlib import Path

import pytest
import torch

from conftest import cli_env, stopped_at
from trackstream.distill.pair_shards import load_ode_pairs
from trackstream.models.motion_wan import load_network
from trackstream.models.streaming import CausalConfig

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
    """``run(args, procs=N)``: ``python -m trackstream.train COMMON args`` as N tasks of a Slurm step (one: a
    plain process, no launcher)."""

    def run(args, *, procs: int = 1) -> None:
        if procs > 1:
            srun(procs, "-m", "trackstream.train", *COMMON, *args, timeout=600, env=_env())
        else:
            run_module("trackstream.train", *COMMON, *args, timeout=600, env=_env())

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


def _close(a: dict[int, float], b: dict[int, float], rel: float) -> None:
    assert a and sorted(a) == sorted(b), (a, b)
    for s in a:
        assert abs(a[s] - b[s]) <= rel * max(1.0, abs(a[s])), (s, a[s], b[s])


@pytest.fixture(scope="module")
def stages(run_module, srun):
    return _stages(run_module, srun)


@pytest.fixture(scope="module")
def one(tmp_path_factory, stages, tiny_teacher_run) -> dict:
    """The one-process ODE init (4 pairs generated, 2 steps at global batch 2): the reference of every ODE-init
    comparison, and the student and pairs of the DMD runs."""
    teacher = tiny_teacher_run / "export" / "teacher"
    ode = [
        "experiment=tiny_ode_init",
        f"stage.teacher={teacher}",
        "stage.ode_pairs.num_pairs=4",
        "stage.ode_pairs.teacher_steps=3",
        "stage.ode_pairs.batch_size=2",
        "stage.ode_pairs.shard_size=2",
        "trainer.max_steps=2",
    ]
    run = tmp_path_factory.mktemp("distill") / "one"
    stages([*ode, "data.batch_size=2", f"hydra.run.dir={run}"])
    dmd = [
        "experiment=tiny_dmd",
        f"stage.teacher={teacher}",
        f"stage.student={run / 'export' / 'student'}",
        f"stage.pairs={run / 'ode_pairs'}",
    ]
    return {"run": run, "ode": ode, "dmd": dmd, "pairs": f"stage.pairs={run / 'ode_pairs'}"}


# DMD from the ODE-init student and pairs, critic then generator at every step (update_ratio 1: the recipe's 5:1
# only spaces the same two updates out), global batch 2
DMD_STEPS = ["stage.update_ratio=1", "trainer.max_steps=2"]


@pytest.fixture(scope="module")
def dmd_one(one, stages) -> Path:
    """The one-process DMD run every DMD comparison is made against."""
    run = one["run"].parent / "dmd_one"
    stages([*one["dmd"], *DMD_STEPS, "data.batch_size=2", f"hydra.run.dir={run}"])
    return run


def _heads(run: Path) -> dict:
    return torch.load(run / "export" / "student" / "heads.pt", weights_only=True)


@pytest.mark.slow
def test_ode_init_through_the_cli_writes_its_pairs_and_exports_the_student(one):
    run = one["run"]
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "done" and res["num_pairs"] == 4
    pairs = load_ode_pairs(res["pairs"], student_steps=3, shift=3.0)
    assert pairs["trajectory"].shape[:2] == (4, 4)  # 4 pairs of the 3 student steps' 4 points
    assert (run / "export" / "student" / "network.json").is_file()
    losses = _losses(run)
    assert sorted(losses) == [1, 2] and len(set(losses.values())) == 2


@pytest.mark.slow
def test_dmd_through_the_cli_trains_both_networks_exports_and_resumes_in_phase(one, stages, tmp_path):
    """update_ratio 2: the critic every step, the generator every second; resumed after step 2, the phase is the
    global step's (step 3 critic only, step 4 both), not restarted."""
    d = tmp_path / "dmd"
    dmd = [*one["dmd"], "stage.update_ratio=2", "trainer.ckpt_every=2", "data.batch_size=2", f"hydra.run.dir={d}"]
    stages([*dmd, "trainer.max_steps=2"])
    res = json.loads((d / "results.json").read_text())
    assert (res["generator_updates"], res["critic_updates"]) == (1, 2)
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [("train/loss/generator" in r) for r in rows] == [False, True]
    stages([*dmd, "trainer.max_steps=4"])  # resumes at step 2, keeps the phase
    res = json.loads((d / "results.json").read_text())
    assert res["resumed_from"].endswith("step_00000002")
    assert (res["generator_updates"], res["critic_updates"]) == (2, 4)
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [("train/loss/generator" in r) for r in rows] == [False, True, False, True]
    assert _heads(d)  # the exported student carries its track head / text projection
    # ... and how it streams (CausalConfig + the step grid), read back typed
    conv = load_network(d / "export" / "student").conventions
    assert conv.clean_first_frame and conv.streaming.steps == 3
    assert conv.streaming.causal == CausalConfig(3, 1, 1, first_chunk_frames=1)
    assert conv.streaming.name == "c3s1w1k3"


@pytest.mark.multiproc
def test_ode_init_on_two_processes_matches_one_at_the_same_global_batch_and_resumes(one, stages, tmp_path):
    two, cut = tmp_path / "two", tmp_path / "cut"
    ddp = [*one["ode"], "parallel=ddp", "data.batch_size=1", "trainer.ckpt_every=1"]
    stages([*ddp, f"hydra.run.dir={two}"], procs=2)
    assert "ddp x 2" in (two / "train.log").read_text()
    # the pairs: 2 shards, one written by each rank, identical to the single process's
    a = load_ode_pairs(one["run"] / "ode_pairs", student_steps=3, shift=3.0)
    b = load_ode_pairs(two / "ode_pairs", student_steps=3, shift=3.0)
    assert sorted(p.name for p in (two / "ode_pairs").glob("*.safetensors")) == [
        "pairs_00000.safetensors",
        "pairs_00001.safetensors",
    ]
    for key in ("trajectory", "image", "tracks", "text_emb"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)

    # the losses at the same global batch (2 = 1 x 2 = 2 x 1): float reduction order only
    l1, l2 = _losses(one["run"]), _losses(two)
    assert sorted(l2) == [1, 2]
    _close(l1, l2, 1e-5)

    # 2 processes resumed from the uninterrupted run's step-1 checkpoint (a run stopped there, as far as the
    # checkpoint can tell): step 2 is the uninterrupted run's, bit for bit
    stopped_at(two, cut, 1, "ode_pairs")
    stages([*ddp, f"hydra.run.dir={cut}"], procs=2)
    l3 = _losses(cut)
    assert sorted(l3) == [2] and l3[2] == l2[2], (l3, l2)
    assert json.loads((cut / "results.json").read_text())["resumed_from"].endswith("step_00000001")


@pytest.mark.multiproc
def test_ode_init_under_fsdp_and_deepspeed_matches_one_process(one, stages, tmp_path):
    # FSDP2 (generator sharded, EMA sharded): the same losses and, gathered on rank 0, the same export
    fs, ds = tmp_path / "fsdp", tmp_path / "deepspeed"
    stages([*one["ode"], "parallel=fsdp", "data.batch_size=1", one["pairs"], f"hydra.run.dir={fs}"], procs=2)
    _close(_losses(one["run"]), _losses(fs), 1e-5)
    h1, h4 = _heads(one["run"]), _heads(fs)
    for k in h1:
        torch.testing.assert_close(h1[k], h4[k], rtol=1e-4, atol=1e-6)

    # DeepSpeed ZeRO-2 (the ODE-init student trains through its forward, which an engine sees): the same losses
    stages([*one["ode"], "parallel=deepspeed_zero2", "data.batch_size=1", one["pairs"], f"hydra.run.dir={ds}"], procs=2)
    _close(_losses(one["run"]), _losses(ds), 1e-5)


@pytest.mark.multiproc
def test_dmd_under_ddp_matches_one_process(one, dmd_one, stages, tmp_path):
    d2 = tmp_path / "dmd_ddp"
    stages([*one["dmd"], *DMD_STEPS, "parallel=ddp", "data.batch_size=1", f"hydra.run.dir={d2}"], procs=2)
    _same_dmd_losses(dmd_one, d2)
    w0, w1, w2 = _heads(one["run"]), _heads(dmd_one), _heads(d2)
    assert any(not torch.equal(w0[k], w1[k]) for k in w1)  # the generator moved ...
    for k in w1:  # ... and the same way on 1 and on 2 processes
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-6)


@pytest.mark.multiproc
def test_dmd_under_fsdp_matches_one_process_and_resumes_exactly(one, dmd_one, stages, tmp_path):
    """Generator, critic and the frozen teacher sharded: the same losses and export, and the run resumed from its
    step-1 checkpoint (both networks updated once) repeats step 2 exactly."""
    d3, d4 = tmp_path / "dmd_fsdp", tmp_path / "dmd_fsdp_cut"
    fsdp = [*one["dmd"], *DMD_STEPS, "trainer.ckpt_every=1", "parallel=fsdp", "data.batch_size=1"]
    stages([*fsdp, f"hydra.run.dir={d3}"], procs=2)
    _same_dmd_losses(dmd_one, d3)
    w1, w3 = _heads(dmd_one), _heads(d3)
    for k in w1:
        torch.testing.assert_close(w1[k], w3[k], rtol=1e-4, atol=1e-6)
    stopped_at(d3, d4, 1)
    stages([*fsdp, f"hydra.run.dir={d4}"], procs=2)
    assert json.loads((d4 / "results.json").read_text())["resumed_from"].endswith("step_00000001")
    for key in ("train/loss/critic", "train/loss/generator"):
        after = {s: v for s, v in _losses(d3, key).items() if s > 1}
        assert sorted(after) == [2] and _losses(d4, key) == after, key


@pytest.mark.multiproc
@pytest.mark.parametrize("procs, batch", [(2, 2), (4, 1)])
def test_ode_init_under_sequence_parallelism_equals_one_process(one, stages, procs, batch, tmp_path):
    """On 2 processes the pairs are sampled too, by the teacher on token slices (each group writes its data
    rank's shards): the one-process pairs within float32 rounding. On 4 the one-process pairs are read."""
    run = tmp_path / "ode_sp"
    pairs = [] if procs == 2 else [one["pairs"]]
    stages(
        [*one["ode"], f"data.batch_size={batch}", "parallel=fsdp", "parallel.sequence_parallel=2", *pairs,
         f"hydra.run.dir={run}"],
        procs=procs,
    )  # fmt: skip
    if not pairs:
        a = load_ode_pairs(one["run"] / "ode_pairs", student_steps=3, shift=3.0)
        b = load_ode_pairs(run / "ode_pairs", student_steps=3, shift=3.0)
        assert a["trajectory"].shape == b["trajectory"].shape
        torch.testing.assert_close(b["trajectory"], a["trajectory"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b["tracks"], a["tracks"], rtol=0, atol=0)
    log = (run / "train.log").read_text()
    assert f"x {procs // 2} data ranks (each a sequence group of 2 processes)" in log
    assert "sequence parallel: the generator runs 1/2 of each clip's tokens per rank" in log
    assert ("sequence parallel: the teacher (ODE pairs) runs 1/2" in log) is (not pairs)
    _close(_losses(one["run"]), _losses(run), 1e-5)


@pytest.mark.multiproc
def test_dmd_under_sequence_parallelism_equals_one_process(one, dmd_one, stages, tmp_path):
    sp = tmp_path / "dmd_sp"
    stages(
        [*one["dmd"], *DMD_STEPS, "data.batch_size=2", "parallel=fsdp", "parallel.sequence_parallel=2",
         f"hydra.run.dir={sp}"],
        procs=2,
    )  # fmt: skip
    log = (sp / "train.log").read_text()
    assert "x 1 data ranks (each a sequence group of 2 processes)" in log
    assert all(f"sequence parallel: the {n} runs 1/2" in log for n in ("generator", "critic", "teacher"))
    _same_dmd_losses(dmd_one, sp)
