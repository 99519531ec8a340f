"""Resume past a damaged FSDP2 checkpoint (trackstream/trainer/sharded.py): a truncated, garbage or missing
shard (``<network>/__R_0.distcp``), a missing index (``.metadata``) or one rank's missing rank file makes
every rank warn, naming the file, and resume from the checkpoint before it, bit-identical to the
uninterrupted run (2 steps, a checkpoint after each: the damaged one is the last); with every file whole, DCP's own refusal (another shape) and a config change are
raised as before. Two CPU processes (gloo), tasks of a Slurm step.
DeepSpeed's checkpoints (read by DeepSpeed itself) are out of scope."""

import json

import pytest
import torch
from test_train_distributed import TOY, _launch

from trackstream.models.formats.files import UnreadableFile
from trackstream.trainer.dist import Runtime
from trackstream.trainer.sharded import load_sharded, sharded_damage

DRIVER = (
    r"""
import json, logging, shutil, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from trackstream.trainer.dist import init_runtime, hard_exit
from trackstream.trainer.parallel import ParallelConfig, prepare_network
from trackstream.trainer.loop import TrainerConfig, train
from trackstream.trainer.checkpoint import CheckpointManager
from trackstream.trainer.metrics import MetricLogger, LoggerConfig
from trackstream.trainer.objective import Objective, generator_state, load_generator_state
from trackstream.data.pool_stream import PoolStream
from trackstream.models.motion_wan import ModelConfig, build_motion_wan
from trackstream.trainer.weights import initialise
from trackstream.trainer.ema import EMAConfig
from trackstream.trainer.optim import OptimConfig

out = Path(sys.argv[1])
pcfg = ParallelConfig(strategy="fsdp")
rt = init_runtime("fsdp")
warned = []
handler = logging.Handler(logging.WARNING)
handler.emit = lambda record: warned.append(record.getMessage())
logging.getLogger("trackstream.trainer.checkpoint").addHandler(handler)

"""
    + TOY
    + r"""
def run(d, *, dim=64, fingerprint=None):
    torch.manual_seed(0)
    mcfg = ModelConfig(flavor="tiny", layout="t2v", track_channels=0, overrides={"dim": dim, "ffn_dim": 128, "num_heads": 2})
    net = build_motion_wan(mcfg, text_encoder_dim=8, device="meta")
    tn = prepare_network(rt, pcfg, name="dit", module=net, optim=OptimConfig(lr=1e-3, decay_steps=2, schedule="cosine"),
                         ema=EMAConfig(decay=0.9), total_steps=2,
                         init_fn=lambda m: initialise(m, init_from=None, sharded=True, is_main=rt.is_main))
    data = PoolStream(32, batch_size=2, seed=0, make_batch=make, rank=rt.rank, world_size=rt.world_size)
    log = MetricLogger(d, LoggerConfig(progress_bar=False), is_main=rt.is_main, total_steps=2)
    ck = CheckpointManager(d / "checkpoints", rt, keep_last=2, fingerprint=fingerprint or {"toy": 1})
    try:
        res = train(objective=Toy(tn.module, seed=rt.rank), networks={"dit": tn}, data=data, runtime=rt, checkpoints=ck,
                    logger=log, cfg=TrainerConfig(max_steps=2, grad_accum=2, log_every=1, ckpt_every=1))
    finally:
        log.close()
    # full tensors (a collective): the same on every rank
    return res, [p.full_tensor() for p in tn.module.parameters()] + [s.full_tensor() for s in tn.ema.shadow]

def losses(d):
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows}

def copy_of(name, damage=None):
    d = out / name
    if rt.is_main:  # the checkpoints only: the metrics the case writes are its own
        shutil.copytree(out / "full" / "checkpoints", d / "checkpoints")
        if damage is not None:
            damage(d / "checkpoints" / "step_00000002")
    rt.barrier()
    return d

def truncated(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

def garbage_same_size(p):
    p.write_bytes((b"\x00garbage\xff" * p.stat().st_size)[: p.stat().st_size])

_, full_tensors = run(out / "full")
full_losses = losses(out / "full") if rt.is_main else None
cases = {
    "dit/__0_0.distcp truncated": ("dit/__0_0.distcp", truncated),
    "dit/__1_0.distcp garbage": ("dit/__1_0.distcp", garbage_same_size),
    "dit/__1_0.distcp missing": ("dit/__1_0.distcp", Path.unlink),
    "dit/.metadata missing": ("dit/.metadata", Path.unlink),
    "rank_00001.pt missing": ("rank_00001.pt", Path.unlink),
}
report = {}
for case, (file, how) in cases.items():
    warned.clear()
    d = copy_of(case.replace("/", "_").replace(" ", "_"), lambda ckpt: how(ckpt / file))
    res, tensors = run(d)
    report[case] = {
        "resumed_from": res.resumed_from.name,
        "warnings": list(warned),
        "same_tensors": all(torch.equal(a, b) for a, b in zip(full_tensors, tensors)),
        "same_losses": losses(d) == {2: full_losses[2]} if rt.is_main else None,
    }
for case, kw in {"another shape": {"dim": 32}, "another config": {"fingerprint": {"toy": 2}}}.items():
    d = copy_of(case.replace(" ", "_"))
    try:
        run(d, **kw)
        report[case] = "resumed"
    except BaseException as err:  # DCP's CheckpointException is a BaseException
        report[case] = f"{type(err).__name__}: {str(err)[:2000]}"
(out / f"report_{rt.rank}.json").write_text(json.dumps(report))
rt.barrier()
hard_exit(0)
"""
)

CASES = [
    "dit/__0_0.distcp truncated",
    "dit/__1_0.distcp garbage",
    "dit/__1_0.distcp missing",
    "dit/.metadata missing",
    "rank_00001.pt missing",
]


@pytest.fixture(scope="module")
def reports(tmp_path_factory, srun):
    tmp = tmp_path_factory.mktemp("fsdp_fallback")
    (tmp / "driver.py").write_text(DRIVER)
    r = _launch(srun, [str(tmp / "driver.py"), str(tmp)])
    found = [tmp / f"report_{rank}.json" for rank in (0, 1)]
    assert all(p.is_file() for p in found), r.stdout[-3000:] + r.stderr[-5000:]
    return [json.loads(p.read_text()) for p in found]


@pytest.mark.multiproc
@pytest.mark.parametrize("case", CASES)
def test_a_damaged_sharded_file_falls_back_on_every_rank_bit_identically(reports, case):
    file = case.split()[0]
    for rank, report in enumerate(reports):
        got = report[case]
        assert got["resumed_from"] == "step_00000001", (rank, got)
        assert any(
            "step_00000002 cannot be read" in m and file in m and "resuming from the one before it" in m
            for m in got["warnings"]
        ), (rank, got["warnings"])
        assert got["same_tensors"], (rank, "parameters or EMA differ from the uninterrupted run")
    assert reports[0][case]["same_losses"], "the loss of step 2 differs from the uninterrupted run's"


@pytest.mark.multiproc
def test_with_every_file_whole_a_refusal_is_raised_as_is(reports):
    for report in reports:
        assert report["another shape"].startswith("CheckpointException"), report["another shape"]
        assert "size mismatch" in report["another shape"].lower(), report["another shape"]
        assert report["another config"].startswith("ValueError") and "config changed" in report["another config"]


# ----------------------------------------------------------------------------- one process, no launcher


ONE = Runtime(
    accelerator=None, strategy="fsdp", device=torch.device("cpu"), rank=0, world_size=1, local_rank=0, precision="fp32"
)


def _saved(tmp_path):
    state = {"w": torch.arange(64.0), "opt": {"lr": 0.1, "m": torch.ones(32)}}
    import torch.distributed.checkpoint as dcp

    dcp.save(state, checkpoint_id=str(tmp_path))  # a single process: no process group needed
    return state


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
@pytest.mark.parametrize(
    "file, how, said",
    [
        (".metadata", "missing", ".metadata does not exist"),
        (".metadata", "truncated", ".metadata is truncated or garbage"),
        ("__0_0.distcp", "missing", "__0_0.distcp does not exist"),
        ("__0_0.distcp", "truncated", "__0_0.distcp is truncated"),
        ("__0_0.distcp", "garbage", "__0_0.distcp holds garbage at byte 0"),
    ],
)
def test_sharded_damage_names_the_file(tmp_path, file, how, said):
    _saved(tmp_path)
    assert sharded_damage(tmp_path) is None
    path = tmp_path / file
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(b"\x00garbage\xff" * path.stat().st_size)
    assert said in sharded_damage(tmp_path)
    with pytest.raises(UnreadableFile, match=said.replace(".", r"\.")):
        load_sharded({"w": torch.zeros(64), "opt": {"lr": 0.0, "m": torch.zeros(32)}}, tmp_path, ONE)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_whole_files_and_a_missing_key_is_dcps_refusal_not_damage(tmp_path):
    from torch.distributed.checkpoint.api import CheckpointException

    _saved(tmp_path)
    with pytest.raises(CheckpointException, match="Missing key in checkpoint state_dict: extra"):
        load_sharded({"w": torch.zeros(64), "extra": torch.zeros(2)}, tmp_path, ONE)
