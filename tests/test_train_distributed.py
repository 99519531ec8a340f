"""Two CPU processes (gloo) through the real launchers: DDP via the CLI, FSDP2 and DeepSpeed
ZeRO via a small driver on the tiny Wan (trackstream/trainer/parallel.py's strategies, checkpoint + exact
resume per strategy). The CPU traps these guard: accelerate's --cpu launch starting
one process; a plain Accelerator under torchrun without a GPU giving independent, unsynchronised
runs; gloo's sporadic SIGABRT at exit of 2-process runs (os._exit after flushing); DeepSpeed on CPU
needing an explicit gloo backend; accelerate's FSDP2 plugin not wrapping on CPU (fully_shard directly)."""

import json
from pathlib import Path

import pytest
from test_docs_run import DDP, run_documented

from conftest import cli_env, free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.multiproc

# the toy objective and batches of the drivers here and in test_resume_fallback_fsdp.py
TOY = r"""
class Toy(Objective):
    networks = ("dit",)
    def __init__(self, net, seed):
        self.net, self.gen = net, torch.Generator().manual_seed(seed)
    def loss(self, name, batch, *, step):
        x = batch["x"]
        t = torch.rand(x.shape[0], generator=self.gen) * 1000
        v = self.net(x, t, text=batch["text"], text_lengths=batch["lens"], image=None, motion=None)
        return (v - batch["y"]).square().mean(), {}
    def state_dict(self):
        return {"gen": generator_state(self.gen)}
    def load_state_dict(self, s):
        load_generator_state(self.gen, s["gen"])

def make(idx, gids):
    g = torch.Generator().manual_seed(sum(gids))
    x = torch.randn(len(idx), 16, 2, 4, 4, generator=g)
    return {"x": x, "y": -x, "text": torch.randn(len(idx), 3, 8, generator=g), "lens": torch.full((len(idx),), 3)}
"""

DRIVER = (
    r"""
import json, os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from trackstream.trainer.dist import init_runtime, hard_exit
from trackstream.trainer.parallel import ParallelConfig, prepare_network, deepspeed_config
from trackstream.trainer.loop import TrainerConfig, train
from trackstream.trainer.checkpoint import CheckpointManager
from trackstream.trainer.metrics import MetricLogger, LoggerConfig
from trackstream.trainer.objective import Objective, generator_state, load_generator_state
from trackstream.data.pool_stream import PoolStream
from trackstream.models.motion_wan import ModelConfig, build_motion_wan
from trackstream.trainer.weights import initialise
from trackstream.trainer.ema import EMAConfig
from trackstream.trainer.optim import OptimConfig

strategy, zero, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
world = int(os.environ["WORLD_SIZE"])
pcfg = ParallelConfig(strategy=strategy, zero_stage=zero)
ds = deepspeed_config(pcfg, micro_batch=2, grad_accum=2, world_size=world, clip=1.0, precision="fp32") if strategy == "deepspeed" else None
rt = init_runtime(strategy, deepspeed_config=ds)
assert rt.world_size == 2, rt

"""
    + TOY
    + r"""

def run(d, steps, max_steps):
    torch.manual_seed(0)
    mcfg = ModelConfig(flavor="tiny", layout="t2v", track_channels=0, overrides={"dim": 64, "ffn_dim": 128, "num_heads": 2})
    net = build_motion_wan(mcfg, text_encoder_dim=8, device="meta")
    tn = prepare_network(rt, pcfg, name="dit", module=net, optim=OptimConfig(lr=1e-3, decay_steps=max_steps, schedule="cosine"),
                         ema=None if zero == 3 else EMAConfig(decay=0.9), total_steps=max_steps,
                         init_fn=lambda m: initialise(m, init_from=None, sharded=strategy == "fsdp", is_main=rt.is_main))
    obj = Toy(tn.module, seed=rt.rank)
    data = PoolStream(32, batch_size=2, seed=0, make_batch=make, rank=rt.rank, world_size=rt.world_size)
    log = MetricLogger(d, LoggerConfig(progress_bar=False), is_main=rt.is_main, total_steps=steps)
    ck = CheckpointManager(d / "checkpoints", rt, keep_last=2, fingerprint={})
    res = train(objective=obj, networks={"dit": tn}, data=data, runtime=rt, checkpoints=ck, logger=log,
                cfg=TrainerConfig(max_steps=steps, grad_accum=2, log_every=1, ckpt_every=2))
    log.close()
    return tn, res

full, _ = run(out / "full", 4, 4)
run(out / "cut", 2, 4)
resumed, res = run(out / "cut", 4, 4)
assert res.resumed_from is not None and res.resumed_from.name == "step_00000002", res
# replicated strategies: every rank holds identical parameters
if strategy != "fsdp" and zero != 3:
    for p in resumed.raw.parameters():
        q = p.detach().clone()
        torch.distributed.broadcast(q, 0)
        assert torch.equal(p.detach(), q), "parameters differ across ranks"
if rt.is_main:
    (out / "done.json").write_text(json.dumps({"distributed_type": str(rt.accelerator.distributed_type)}))
rt.barrier()
hard_exit(0)
"""
)


def _launch(torchrun, args, *, timeout=400):
    """``args`` on 2 processes; the caller reads what they wrote (the exit status is not checked)."""
    env = cli_env(
        OMP_NUM_THREADS="1", TORCH_EXTENSIONS_DIR=str(Path.home() / ".cache" / "trackstream_torch_extensions")
    )
    return torchrun(2, *args, check=False, timeout=timeout, env=env)


def _losses(d: Path) -> list[float]:
    rows = {}
    for line in (d / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[r["step"]] = r["train/loss"]
    return [rows[s] for s in sorted(rows)]


@pytest.mark.parametrize("strategy, zero", [("fsdp", 0), ("deepspeed", 2), ("deepspeed", 3)])
def test_two_process_strategy_trains_checkpoints_and_resumes_exactly(strategy, zero, tmp_path, torchrun):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    r = _launch(torchrun, [str(driver), strategy, str(zero), str(tmp_path)])
    assert (tmp_path / "done.json").is_file(), r.stdout[-3000:] + r.stderr[-5000:]
    full, cut = _losses(tmp_path / "full"), _losses(tmp_path / "cut")
    assert len(full) == 4 and full == cut  # interrupted at 2 and resumed: identical losses
    kind = json.loads((tmp_path / "done.json").read_text())["distributed_type"]
    assert kind.endswith("DEEPSPEED" if strategy == "deepspeed" else "MULTI_CPU"), kind


def test_ddp_two_processes_through_the_cli(tmp_path):
    """conf/README.md's torchrun line as written (torchrun's rendezvous port through its PET_MASTER_PORT variable,
    free for this test), shrunk by overrides after its own."""
    run_dir = tmp_path / "run"
    r = run_documented(
        DDP, tmp_path, "debug=tiny", "trainer.num_threads=1", "eval.save_videos=0",
        variables=dict(RUN_DIR=run_dir, PET_MASTER_PORT=free_port()),
    )  # fmt: skip
    assert (run_dir / "results.json").is_file(), r.stdout[-3000:] + r.stderr[-5000:]
    summary = json.loads((run_dir / "results.json").read_text())
    assert summary["status"] == "done" and summary["step"] == 4
    assert "ddp x 2" in (run_dir / "train.log").read_text()
    assert len(_losses(run_dir)) == 4
    import torch

    meta = torch.load(run_dir / "checkpoints" / "step_00000004" / "meta.pt", weights_only=False)
    assert meta["world_size"] == 2
    assert (run_dir / "checkpoints" / "step_00000004" / "rank_00001.pt").is_file()
    assert summary["epe_with_tracks"] > 0


@pytest.mark.multiproc
def test_a_checkpoint_of_another_network_under_fsdp_is_one_line_on_every_rank(tmp_path, torchrun):
    """FSDP reads the file on rank 0 and broadcasts it: rank 0 checks it first and every rank stops with the
    same one-line error naming model.init_from (not a size mismatch inside the broadcast, not a hang)."""
    from trackstream.models.flavors import build_wan
    from trackstream.models.wan_io import save_wan

    save_wan(build_wan("tiny-i2v", dim=64, num_heads=2), tmp_path / "wide")  # tiny_teacher's DiT is 128 wide
    r = _launch(
        torchrun,
        ["-m", "trackstream.train", "experiment=tiny_teacher", "debug=tiny", "parallel=fsdp",
         f"model.init_from={tmp_path / 'wide'}", f"hydra.run.dir={tmp_path / 'run'}", "trainer.num_threads=1"],
    )  # fmt: skip
    assert r.returncode != 0
    # both ranks refuse; counted in the whole stream, as two processes' writes to one pipe may share a line
    assert r.stderr.count("does not match the network") == 2, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if "does not match the network" in line]
    assert "model.init_from=" in errors[0] and "shape mismatches" in errors[0], r.stderr[-3000:]
    # no traceback from our code (torchrun's own launcher reports the failed children with one of its own)
    ours = f'"{ROOT / "trackstream"}/'  # the package's files, wherever the clone is
    assert not [line for line in r.stderr.splitlines() if 'File "' in line and ours in line], r.stderr[-3000:]
