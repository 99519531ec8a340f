"""Slurm: the srun environment becomes torch.distributed's, and a preemption signal sent from outside
(Slurm's ``--signal=USR1@120``) saves, calls ``scontrol requeue <job>`` and exits; the same command
then resumes with the uninterrupted run's losses. ``scontrol`` is a fake on PATH that logs its calls.
Then the launch files without a cluster (fake srun / scontrol / sbatch logging their arguments): each
stage's sbatch template builds its exact command line and keeps its run directory across a requeue,
the batch-shell traps requeue, slurm/chain.sh submits the dependent jobs with the previous outputs,
and every submitit preset composes and renders (through the plugin) a multi-node requeueable job;
a sweep point submitted through the submitit launcher, preempted with USR2 and rerun, resumes."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import cli_env, free_port, popen
from trackstream.trainer.checkpoint import PreemptionHandler
from trackstream.trainer.dist import export_slurm_env

ROOT = Path(__file__).resolve().parents[1]
STEPS = 16  # the signal lands at step 2 or soon after: the rest is the resume
COMMON = [
    "experiment=tiny_teacher",
    "debug=tiny",
    f"trainer.max_steps={STEPS}",
    "trainer.ckpt_every=1000",
    "trainer.log_every=1",
    "eval.enabled=false",
    "trainer.num_threads=1",
    "codec.fit.steps=2",
    "data.pool_size=4",
]


def _fake_scontrol(tmp_path: Path) -> tuple[Path, Path]:
    bin_dir, log = tmp_path / "bin", tmp_path / "scontrol.log"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(
        f'#!/bin/sh\necho "$@" >> {log}\nif [ "$1 $2" = "show hostnames" ]; then echo gpu03; echo gpu04; fi\n'
    )
    script.chmod(0o755)
    return bin_dir, log


def test_srun_environment_becomes_the_torch_distributed_environment(tmp_path, monkeypatch):
    bin_dir, log = _fake_scontrol(tmp_path)
    monkeypatch.setattr(os, "environ", os.environ.copy())  # export_slurm_env writes the environment
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(k, None)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for k, v in {
        "SLURM_PROCID": "3",
        "SLURM_NTASKS": "4",
        "SLURM_LOCALID": "1",
        "SLURM_NTASKS_PER_NODE": "2(x2)",
        "SLURM_JOB_NODELIST": "gpu[03-04]",
        "SLURM_JOB_ID": "4242",
    }.items():
        monkeypatch.setenv(k, v)
    export_slurm_env()
    got = {
        k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    assert got == {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "gpu03",
        "MASTER_PORT": str(20000 + 4242),
    }
    assert "show hostnames gpu[03-04]" in log.read_text()
    # a torchrun-launched job (RANK already set) is left alone; so is a single task
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "8")
    export_slurm_env()
    assert os.environ["WORLD_SIZE"] == "8"


def test_requeue_asks_scontrol_for_this_job(tmp_path, monkeypatch):
    bin_dir, log = _fake_scontrol(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    PreemptionHandler.requeue()
    assert log.read_text().split("\n")[0] == "requeue 777"


def _losses(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "train/loss" in rec:
            out[rec["step"]] = rec["train/loss"]
    return out


@pytest.mark.multiproc
def test_a_preemption_signal_from_outside_saves_requeues_and_resumes_identically(tmp_path, run_module):
    bin_dir, log = _fake_scontrol(tmp_path)
    env = cli_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SLURM_JOB_ID="9001")

    ref = tmp_path / "uninterrupted"
    run_module("trackstream.train", *COMMON, f"hydra.run.dir={ref}", timeout=300, env=env)
    expected = _losses(ref)
    assert sorted(expected) == list(range(1, STEPS + 1))

    run = tmp_path / "preempted"
    args = [*COMMON, f"hydra.run.dir={run}", f"codec.checkpoint={ref / 'codec' / 'codec.pt'}"]
    cmd = [sys.executable, "-m", "trackstream.train", *args]  # signalled mid-run: not run_module
    with tempfile.TemporaryFile("w+") as log_file:
        proc = popen(cmd, env=env, stdout=log_file, stderr=log_file)
        deadline = time.time() + 240
        while time.time() < deadline:  # wait for the second logged step, then signal as Slurm would
            if (run / "metrics.jsonl").is_file() and len(_losses(run)) >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR1)
        code = proc.wait(timeout=240)
        log_file.seek(0)
        assert code == 0, log_file.read()[-3000:]
    summary = json.loads((run / "results.json").read_text())
    assert summary["status"] == "preempted" and 2 <= summary["step"] < STEPS, summary
    assert "requeue 9001" in log.read_text()

    run_module("trackstream.train", *args, timeout=300, env=env)  # the requeued job: the same command
    summary = json.loads((run / "results.json").read_text())
    assert summary["status"] == "done" and summary["resumed_from"] is not None
    assert _losses(run) == expected  # bit-identical, every step


# SIGTERM with loader workers (the endless synthetic stream read by 2 workers per rank): torchrun relays it to each
# rank's whole process group (os.killpg), Slurm signals every process of a step and `kill -- -PGID` a group, so
# the workers get it too. "every process": torchrun, its ranks and their workers, as Slurm's signal reaches them.
WORKERS = [a for a in COMMON if not a.startswith("data.pool_size")] + ["data.pool_size=null", "data.num_workers=2"]
LAYOUTS = {"single": [], "torchrun": ["parallel=ddp"]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, run_module, torchrun):
    """``layout`` -> (losses of the uninterrupted run, the codec it fitted or was given), each run made once."""
    made: dict = {}

    def get(layout: str) -> tuple[dict, Path]:
        if layout not in made:
            ref = tmp_path_factory.mktemp("uninterrupted") / layout
            args = [*WORKERS, *LAYOUTS[layout], f"hydra.run.dir={ref}"]
            if layout == "single":
                run_module("trackstream.train", *args, timeout=300, env=cli_env())
                made[layout] = _losses(ref), ref / "codec" / "codec.pt"
            else:
                codec = get("single")[1]
                torchrun(2, "-m", "trackstream.train", *args, f"codec.checkpoint={codec}", timeout=600, env=cli_env())
                made[layout] = _losses(ref), codec
        return made[layout]

    return get


def _descendants(pid: int) -> list[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = [c for c, p in parents.items() if p == parent]
        out += children
        todo += children
    return out


def _start(layout: str, args: list[str], log_file):
    if layout == "single":  # a child of the fork server: a session of its own, its loader workers in its group
        return popen(
            [sys.executable, "-m", "trackstream.train", *args], env=cli_env(), stdout=log_file, stderr=log_file
        )
    # real processes, so that torchrun's ranks are its children: started cold
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    return subprocess.Popen(
        [*cmd, "-m", "trackstream.train", *args],
        env=cli_env(),
        stdout=log_file,
        stderr=log_file,
        start_new_session=True,
    )


def _terminate(proc, target: str) -> None:
    if target == "group":
        os.killpg(proc.pid, signal.SIGTERM)
    elif target == "launcher":
        proc.send_signal(signal.SIGTERM)
    else:
        for pid in [proc.pid, *_descendants(proc.pid)]:
            os.kill(pid, signal.SIGTERM)


@pytest.mark.slow  # two training commands (the torchrun ones cold), and the uninterrupted runs once a layout
@pytest.mark.multiproc
@pytest.mark.parametrize(
    "layout, target", [("single", "group"), ("torchrun", "launcher"), ("torchrun", "every process")]
)
def test_sigterm_with_loader_workers_saves_and_resumes_identically(
    layout, target, tmp_path, uninterrupted, run_module, torchrun
):
    expected, codec = uninterrupted(layout)
    run = tmp_path / "preempted"
    args = [*WORKERS, *LAYOUTS[layout], f"hydra.run.dir={run}", f"codec.checkpoint={codec}"]
    with tempfile.TemporaryFile("w+") as log_file:
        proc = _start(layout, args, log_file)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:  # the second logged step, then the signal
            if (run / "metrics.jsonl").is_file() and len(_losses(run)) >= 2:
                break
            time.sleep(0.05)
        _terminate(proc, target)
        code = proc.wait(timeout=240)
        log_file.seek(0)
        out = log_file.read()
    summary = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
    assert summary.get("status") == "preempted" and 2 <= summary["step"] < STEPS, (code, out[-4000:])
    assert (run / "checkpoints" / f"step_{summary['step']:08d}" / "meta.pt").is_file()
    assert "received SIGTERM" in out and "killed by signal" not in out, out[-3000:]  # no loader worker lost
    if layout == "single":
        assert code == 0, out[-3000:]
    else:  # torchrun itself exits 1 on the signal; its ranks saved within its shutdown timeout (no SIGKILL)
        assert "forcefully" not in out and "exitcode" not in out, out[-3000:]

    if layout == "single":  # the requeued job: the same command
        run_module("trackstream.train", *args, timeout=300, env=cli_env())
    else:
        torchrun(2, "-m", "trackstream.train", *args, timeout=600, env=cli_env())
    summary = json.loads((run / "results.json").read_text())
    assert summary["status"] == "done" and summary["resumed_from"] is not None
    assert _losses(run) == expected  # bit-identical, every step


# ---------------------------------------------------------------------------------------------------
# The sbatch templates (slurm/*.sbatch), the chain (slurm/chain.sh) and the submitit presets
# (conf/hydra/launcher/slurm_*.yaml), under fake srun / scontrol / sbatch that log their arguments.
# ---------------------------------------------------------------------------------------------------

SLURM = ROOT / "slurm"
# per-stage file -> (module, default experiment, nodes, --signal)
STAGES = {
    "teacher": ("trackstream.train", "teacher_wan1.3b_480p", "4", "USR1@120"),
    "ode_pairs": ("trackstream.train.pairs", "ode_init_wan1.3b_480p", "8", "B:USR1@120"),
    "ode_init": ("trackstream.train", "ode_init_wan1.3b_480p", "4", "USR1@120"),
    "dmd": ("trackstream.train", "dmd_wan1.3b_480p", "4", "USR1@120"),
    "rl": ("trackstream.train", "rl_wan1.3b_480p", "1", "USR1@120"),
}
JOB = "4242"
FAKE_SRUN = """#!/bin/bash
{ echo ---; printf '%s\\n' "$@"
  for v in RUN_DIR MASTER_ADDR MASTER_PORT WANDB_MODE OMP_NUM_THREADS; do echo "ENV $v=${!v-}"; done
  if [ -n "${TORCH_ELASTIC_SHUTDOWN_TIMEOUT+set}" ]; then echo "ENV TORCH_ELASTIC_SHUTDOWN_TIMEOUT=$TORCH_ELASTIC_SHUTDOWN_TIMEOUT"; fi
} >> LOGDIR/srun.log
if [ -n "${FAKE_SRUN_SLEEP:-}" ]; then
    trap 'echo "srun TERM" >> LOGDIR/events.log; kill $! 2>/dev/null; exit 143' TERM
    echo "srun started" >> LOGDIR/events.log
    sleep "$FAKE_SRUN_SLEEP" & wait $!
fi
"""
FAKE_SCONTROL = """#!/bin/sh
echo "scontrol $*" >> LOGDIR/events.log
if [ "$1 $2" = "show hostnames" ]; then echo gpu03; echo gpu04; fi
"""


def _write_tool(bin_dir: Path, name: str, text: str, log_dir: Path) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(text.replace("LOGDIR", str(log_dir)))
    (bin_dir / name).chmod(0o755)


def _slurm_env(tmp_path: Path, **extra: str) -> dict:
    """A batch job's environment on 2 nodes: fake srun / scontrol first on PATH."""
    bin_dir = tmp_path / "bin"
    _write_tool(bin_dir, "srun", FAKE_SRUN, tmp_path)
    _write_tool(bin_dir, "scontrol", FAKE_SCONTROL, tmp_path)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SLURM_")
        and k
        not in (
            "RUN_DIR",
            "RUN_ROOT",
            "EXPERIMENT",
            "STAGE",
            "LAUNCHER",
            "PYTHON",
            "WANDB_MODE",
            "OMP_NUM_THREADS",
            "TORCH_ELASTIC_SHUTDOWN_TIMEOUT",
            "SIGNAL_LEAD",
        )
    }
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        SLURM_JOB_ID=JOB,
        SLURM_JOB_NODELIST="gpu[03-04]",
        SLURM_NNODES="2",
        SLURM_JOB_NUM_NODES="2",
        SLURM_CPUS_PER_TASK="12",
        SLURM_SUBMIT_DIR=str(ROOT),
    )
    env.update(extra)
    return env


def _srun_calls(tmp_path: Path) -> list[tuple[list[str], dict]]:
    """(argv, selected environment) of every srun call, in order."""
    calls = []
    for block in (tmp_path / "srun.log").read_text().split("---\n")[1:]:
        lines = block.splitlines()
        env = dict(x[4:].split("=", 1) for x in lines if x.startswith("ENV "))
        calls.append(([x for x in lines if not x.startswith("ENV ")], env))
    return calls


def _batch(script: str, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run a template as the batch shell would, from a submission directory inside tmp_path."""
    work = tmp_path / "submit"
    work.mkdir(exist_ok=True)
    return subprocess.run(
        ["bash", str(SLURM / script), *args],
        cwd=work,
        env=_slurm_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _header(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line[len("#SBATCH --") :].partition("=")
            out[key] = value
    return out


def test_every_template_is_valid_bash_with_requeue_and_a_warning_signal_train_catches():
    templates = sorted(p.name for p in SLURM.glob("*.sbatch"))
    assert templates == [
        "dmd.sbatch",
        "ode_init.sbatch",
        "ode_pairs.sbatch",
        "prepare.sbatch",
        "rl.sbatch",
        "stage.sbatch",
        "teacher.sbatch",
        "teacher_torchrun.sbatch",
    ]
    for name in [*templates, "chain.sh"]:
        r = subprocess.run(["bash", "-n", str(SLURM / name)], capture_output=True, text=True)
        assert r.returncode == 0, (name, r.stderr)
    for name in templates:
        h = _header(SLURM / name)
        whole_node = name != "prepare.sbatch"  # the training stages take whole nodes; a prepare task one GPU
        assert h["requeue"] == "" and h["open-mode"] == "append" and (h["mem"] == "0") == whole_node, (name, h)
    for stage, (_, _, nodes, sig) in STAGES.items():
        h = _header(SLURM / f"{stage}.sbatch")
        assert (h["nodes"], h["ntasks-per-node"], h["gpus-per-node"], h["signal"]) == (nodes, "8", "8", sig), stage
    tr = _header(SLURM / "teacher_torchrun.sbatch")  # one torchrun per node, TERM to the batch shell
    assert (tr["ntasks-per-node"], tr["gpus-per-node"], tr["signal"]) == ("1", "8", "B:TERM@120")
    # the per-rank warning signals are ones train's PreemptionHandler turns into save + requeue
    assert signal.SIGUSR1 in PreemptionHandler.SIGNALS and signal.SIGTERM in PreemptionHandler.SIGNALS


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_each_stage_template_builds_its_command_and_keeps_its_run_dir_across_a_requeue(stage, tmp_path):
    module, experiment, _, _ = STAGES[stage]
    run_dir = (tmp_path / "submit").resolve() / "runs" / experiment / JOB
    expected = [
        "--kill-on-bad-exit=1",
        "--cpus-per-task=12",  # the job's, given to the step (srun >= 22.05 does not inherit it)
        "--cpu-bind=none",
        ".venv/bin/python",
        "-m",
        module,
        f"experiment={experiment}",
        f"hydra.run.dir={run_dir}",
        "stage.teacher=/runs/t/export/teacher",
        "trainer.log_every=5",
    ]
    first = _batch(f"{stage}.sbatch", tmp_path, "stage.teacher=/runs/t/export/teacher", "trainer.log_every=5")
    requeued = _batch(
        f"{stage}.sbatch",
        tmp_path,
        "stage.teacher=/runs/t/export/teacher",
        "trainer.log_every=5",
        SLURM_RESTART_COUNT="1",
    )
    other = _batch(f"{stage}.sbatch", tmp_path, SLURM_JOB_ID="4243")
    for r in (first, requeued, other):
        assert r.returncode == 0, r.stderr
    (a, env_a), (b, env_b), (c, _) = _srun_calls(tmp_path)
    assert a == expected and b == expected  # same job id after the requeue -> same run directory
    assert c[7] == f"hydra.run.dir={run_dir.parent / '4243'}"
    assert (
        env_a
        == env_b
        == {
            "RUN_DIR": str(run_dir),
            "MASTER_ADDR": "gpu03",
            "MASTER_PORT": str(20000 + int(JOB)),
            "WANDB_MODE": "offline",
            "OMP_NUM_THREADS": "12",
        }
    )
    assert run_dir.is_dir() and "(restart 1)" in requeued.stdout and "(restart 0)" in first.stdout
    assert f"[slurm] srun {' '.join(expected)}" in first.stdout


def test_stage_template_takes_experiment_and_run_dir_from_the_environment(tmp_path):
    run_dir = tmp_path / "mine"
    r = _batch(
        "stage.sbatch",
        tmp_path,
        "trainer.max_steps=3",
        STAGE="dmd",
        EXPERIMENT="tiny_dmd",
        RUN_DIR=str(run_dir),
        PYTHON="/opt/py/bin/python",
    )
    assert r.returncode == 0, r.stderr
    assert _srun_calls(tmp_path)[0][0] == [
        "--kill-on-bad-exit=1",
        "--cpus-per-task=12",
        "--cpu-bind=none",
        "/opt/py/bin/python",
        "-m",
        "trackstream.train",
        "experiment=tiny_dmd",
        f"hydra.run.dir={run_dir}",
        "trainer.max_steps=3",
    ]
    # no STAGE (or an unknown one): refused before anything runs
    (tmp_path / "srun.log").unlink()
    for stage in ("", "distill"):
        r = _batch("stage.sbatch", tmp_path, STAGE=stage)
        assert r.returncode == 2 and "set STAGE to teacher, ode_pairs, ode_init, dmd or rl" in r.stderr
    assert not (tmp_path / "srun.log").exists()


def test_torchrun_template_starts_one_torchrun_per_node(tmp_path):
    run_dir = (tmp_path / "submit").resolve() / "runs" / "teacher_wan1.3b_480p" / JOB
    r = _batch("teacher_torchrun.sbatch", tmp_path, "optim.lr=2e-5", SLURM_CPUS_PER_TASK="96", SLURM_GPUS_ON_NODE="8")
    assert r.returncode == 0, r.stderr
    argv, env = _srun_calls(tmp_path)[0]
    assert argv == [
        "--kill-on-bad-exit=1",
        "--cpus-per-task=96",
        "--nodes=2",
        "--ntasks=2",
        "--ntasks-per-node=1",
        ".venv/bin/python",
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc_per_node=8",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=gpu03:{20000 + int(JOB) % 20000}",  # the job's port: two jobs on a node do not collide
        f"--rdzv_id={JOB}",
        "-m",
        "trackstream.train",
        "experiment=teacher_wan1.3b_480p",
        f"hydra.run.dir={run_dir}",
        "trainer.requeue_on_preempt=false",
        "optim.lr=2e-5",
    ]
    assert env["OMP_NUM_THREADS"] == "12"  # 96 CPUs / 8 workers
    assert env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "100"  # the ranks' time to save after TERM, under the 120 s lead
    r = _batch("teacher_torchrun.sbatch", tmp_path, SLURM_CPUS_PER_TASK="96", SIGNAL_LEAD="300")
    assert r.returncode == 0, r.stderr
    assert _srun_calls(tmp_path)[-1][1]["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "280"  # follows a longer lead


def _signal_batch_shell(script: str, sig: int, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list]:
    work = tmp_path / "submit"
    work.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        ["bash", str(SLURM / script)],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_slurm_env(tmp_path, FAKE_SRUN_SLEEP="60", **env),
    )
    events = tmp_path / "events.log"
    deadline = time.time() + 20
    while time.time() < deadline and not (events.is_file() and "srun started" in events.read_text()):
        time.sleep(0.02)
    start = time.time()
    proc.send_signal(sig)  # what Slurm's --signal=B:... does
    out, err = proc.communicate(timeout=30)
    assert time.time() - start < 10  # the step was ended, not waited for
    lines = [x for x in events.read_text().splitlines() if not x.startswith("scontrol show")]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), lines


def test_ode_pairs_warning_reaches_the_batch_shell_which_requeues_then_ends_the_step(tmp_path):
    r, events = _signal_batch_shell("ode_pairs.sbatch", signal.SIGUSR1, tmp_path)
    assert events == ["srun started", f"scontrol requeue {JOB}", "srun TERM"], (events, r.stdout, r.stderr)
    assert f"USR1: requeue job {JOB}" in r.stdout


def test_torchrun_warning_lets_the_step_save_before_the_batch_shell_requeues(tmp_path):
    r, events = _signal_batch_shell("teacher_torchrun.sbatch", signal.SIGTERM, tmp_path, SLURM_CPUS_PER_TASK="96")
    assert events == ["srun started", "srun TERM", f"scontrol requeue {JOB}"], (events, r.stdout, r.stderr)


# ----- the chain -------------------------------------------------------------------------------------

FAKE_SBATCH = """#!/bin/bash
n=$(( $(cat LOGDIR/sbatch.n 2>/dev/null || echo 100) + 1 ))
echo $n > LOGDIR/sbatch.n
{ echo ---; printf '%s\\n' "$@"; } >> LOGDIR/sbatch.log
echo "RUN_DIR=${RUN_DIR-unset}" >> LOGDIR/sbatch.env
if [ "$n" = "${FAKE_SBATCH_FAIL_AT:-}" ]; then echo "sbatch: error: Batch job submission failed" >&2; exit 1; fi
echo "Submitted batch job $n"
"""


def _chain(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    bin_dir = tmp_path / "bin"
    _write_tool(bin_dir, "sbatch", FAKE_SBATCH, tmp_path)
    full = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_EXPERIMENT", "_SBATCH", "_OVERRIDES"))
        and k not in ("MODEL", "TEACHER", "RUN_ROOT", "RUN_DIR", "SBATCH", "CONF_DIR", "RL", "SIGNAL_LEAD")
    }
    full.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", RUN_ROOT=str(tmp_path / "runs"), **env)
    r = subprocess.run(
        ["bash", str(SLURM / "chain.sh"), *args], cwd=tmp_path, env=full, capture_output=True, text=True, timeout=60
    )
    log = tmp_path / "sbatch.log"
    calls = [b.splitlines() for b in log.read_text().split("---\n")[1:]] if log.is_file() else []
    return r, calls


def LOG(runs: Path) -> str:
    """The log option every submission carries: the job's log under the run root, not the repository."""
    return f"--output={runs}/slurm/%x-%j.out"


def test_chain_submits_four_dependent_jobs_each_given_the_previous_outputs(tmp_path):
    r, calls = _chain(
        tmp_path,
        "paths.data_dir=/data",
        TEACHER_EXPERIMENT="tiny_teacher",
        ODE_INIT_EXPERIMENT="tiny_ode_init",
        DMD_EXPERIMENT="tiny_dmd",
        DMD_SBATCH="--nodes=1 --time=2:00:00",
        DMD_OVERRIDES="trainer.grad_accum=8",
        RUN_DIR="/x/shared",
    )
    assert r.returncode == 0, r.stderr
    runs = tmp_path / "runs"
    teacher, pairs = runs / "tiny_teacher/101/export/teacher", runs / "tiny_ode_init/102/ode_pairs"
    student = runs / "tiny_ode_init/103/export/student"
    after = ["--kill-on-invalid-dep=yes"]
    assert calls == [
        [
            f"--export=ALL,EXPERIMENT=tiny_teacher,RUN_ROOT={runs}",
            LOG(runs),
            "slurm/teacher.sbatch",
            "paths.data_dir=/data",
        ],
        [
            "--dependency=afterok:101",
            *after,
            f"--export=ALL,EXPERIMENT=tiny_ode_init,RUN_ROOT={runs}",
            LOG(runs),
            "slurm/ode_pairs.sbatch",
            f"stage.teacher={teacher}",
            "paths.data_dir=/data",
        ],
        [
            "--dependency=afterok:102",
            *after,
            f"--export=ALL,EXPERIMENT=tiny_ode_init,RUN_ROOT={runs}",
            LOG(runs),
            "slurm/ode_init.sbatch",
            f"stage.teacher={teacher}",
            f"stage.pairs={pairs}",
            "paths.data_dir=/data",
        ],
        [
            "--dependency=afterok:103",
            *after,
            f"--export=ALL,EXPERIMENT=tiny_dmd,RUN_ROOT={runs}",
            LOG(runs),
            "--nodes=1",
            "--time=2:00:00",
            "slurm/dmd.sbatch",
            f"stage.teacher={teacher}",
            f"stage.pairs={pairs}",
            f"stage.student={student}",
            "trainer.grad_accum=8",
            "paths.data_dir=/data",
        ],
    ]
    assert f"the streaming student will be {runs}/tiny_dmd/104/export/student" in r.stdout
    # an exported RUN_DIR would reach every job through --export=ALL: the chain drops it
    assert (tmp_path / "sbatch.env").read_text().splitlines() == ["RUN_DIR=unset"] * 4
    # the folders it hands on are the ones the stage template derives from the job ids
    env = _slurm_env(tmp_path, SLURM_JOB_ID="102", EXPERIMENT="tiny_ode_init", RUN_ROOT=str(runs))
    subprocess.run(["bash", str(SLURM / "ode_pairs.sbatch")], cwd=tmp_path, env=env, check=True, capture_output=True)
    assert _srun_calls(tmp_path)[0][0][7] == f"hydra.run.dir={pairs.parent}"


def test_chain_appends_the_rl_stage_after_dmd_when_asked(tmp_path):
    r, calls = _chain(tmp_path, "paths.data_dir=/data", RL="1", RL_OVERRIDES="stage.group_size=4")
    assert r.returncode == 0, r.stderr
    runs = tmp_path / "runs"
    assert len(calls) == 5 and calls[4] == [
        "--dependency=afterok:104",
        "--kill-on-invalid-dep=yes",
        f"--export=ALL,EXPERIMENT=rl_wan1.3b_480p,RUN_ROOT={runs}",
        LOG(runs),
        "slurm/rl.sbatch",
        f"stage.student={runs}/dmd_wan1.3b_480p/104/export/student",
        f"stage.pairs={runs}/ode_init_wan1.3b_480p/102/ode_pairs",
        "stage.group_size=4",
        "paths.data_dir=/data",
    ]
    assert f"the streaming student will be {runs}/rl_wan1.3b_480p/105/export/student" in r.stdout
    (tmp_path / "typo").mkdir()
    r, calls = _chain(tmp_path / "typo", RL_EXPERIMENT="rl_nope")
    assert r.returncode == 2 and calls == [] and "no experiment rl_nope" in r.stderr


def test_chain_defaults_to_the_1_3b_480p_experiments(tmp_path):
    r, calls = _chain(tmp_path)
    assert r.returncode == 0, r.stderr
    scripts = [next(x for x in c if x.endswith(".sbatch")) for c in calls]
    exports = [next(x for x in c if x.startswith("--export")).split(",")[1] for c in calls]
    assert list(zip(scripts, exports)) == [
        ("slurm/teacher.sbatch", "EXPERIMENT=teacher_wan1.3b_480p"),
        ("slurm/ode_pairs.sbatch", "EXPERIMENT=ode_init_wan1.3b_480p"),
        ("slurm/ode_init.sbatch", "EXPERIMENT=ode_init_wan1.3b_480p"),
        ("slurm/dmd.sbatch", "EXPERIMENT=dmd_wan1.3b_480p"),
    ]


def test_chain_default_names_finetune_and_an_existing_teacher(tmp_path):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    for name in (
        "teacher_wan2.2_5b_704p",
        "teacher_wan2.2_5b_704p_finetune",
        "ode_init_wan2.2_5b_704p",
        "dmd_wan2.2_5b_704p",
    ):
        (conf / f"{name}.yaml").write_text("# @package _global_\n")
    r, calls = _chain(
        tmp_path,
        MODEL="wan2.2_5b_704p",
        FINETUNE_EXPERIMENT="teacher_wan2.2_5b_704p_finetune",
        CONF_DIR=str(tmp_path / "conf"),
    )
    assert r.returncode == 0, r.stderr
    runs = tmp_path / "runs"
    assert [next(x for x in c if x.startswith("--export")) for c in calls] == [
        f"--export=ALL,EXPERIMENT={e},RUN_ROOT={runs}"
        for e in (
            "teacher_wan2.2_5b_704p",
            "teacher_wan2.2_5b_704p_finetune",
            "ode_init_wan2.2_5b_704p",
            "ode_init_wan2.2_5b_704p",
            "dmd_wan2.2_5b_704p",
        )
    ]
    assert calls[1][0] == "--dependency=afterok:101" and calls[1][-2:] == [
        "slurm/teacher.sbatch",
        f"model.init_from={runs}/teacher_wan2.2_5b_704p/101/export/teacher",
    ]
    assert calls[2][-1] == f"stage.teacher={runs}/teacher_wan2.2_5b_704p_finetune/102/export/teacher"

    # an existing teacher: three jobs, the first without a dependency
    (tmp_path / "sbatch.log").unlink()
    r, calls = _chain(tmp_path, TEACHER="exports/teacher", MODEL="wan2.2_5b_704p", CONF_DIR=str(tmp_path / "conf"))
    assert r.returncode == 0, r.stderr
    assert [c[c.index(next(x for x in c if x.endswith(".sbatch")))] for c in calls] == [
        "slurm/ode_pairs.sbatch",
        "slurm/ode_init.sbatch",
        "slurm/dmd.sbatch",
    ]
    assert calls[0] == [
        f"--export=ALL,EXPERIMENT=ode_init_wan2.2_5b_704p,RUN_ROOT={runs}",
        LOG(runs),
        "slurm/ode_pairs.sbatch",
        f"stage.teacher={tmp_path / 'exports/teacher'}",
    ]


def test_chain_submits_nothing_for_an_unknown_experiment_and_names_what_a_failed_submit_left(tmp_path):
    r, calls = _chain(tmp_path, MODEL="wan9_typo")
    assert r.returncode == 2 and calls == []
    assert "no experiment ode_init_wan9_typo" in r.stderr and "nothing submitted" in r.stderr
    r, calls = _chain(
        tmp_path,
        TEACHER_EXPERIMENT="tiny_teacher",
        ODE_INIT_EXPERIMENT="tiny_ode_init",
        DMD_EXPERIMENT="tiny_dmd",
        FAKE_SBATCH_FAIL_AT="103",
    )
    assert r.returncode == 1 and len(calls) == 3
    assert "sbatch failed for ode_init; already submitted: 101 102" in r.stderr


# ----- the submitit presets ----------------------------------------------------------------------------

# preset -> (nodes, hours, an experiment of that stage)
LAUNCHERS = {
    "slurm_h100": (1, 72, "tiny_teacher"),
    "slurm_teacher": (4, 72, "tiny_teacher"),
    "slurm_ode_pairs": (8, 12, "tiny_ode_init"),
    "slurm_ode_init": (4, 24, "tiny_ode_init"),
    "slurm_dmd": (4, 24, "tiny_dmd"),
}


def _launcher_cfg(tmp_path: Path, *overrides: str):
    from hydra import compose, initialize_config_dir

    from trackstream.train.config import register_configs
    from trackstream.train.recipes import CONFIG_DIR

    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            "train", overrides=[*overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}"], return_hydra_config=True
        )


def _rendered_sbatch(cfg, tmp_path: Path, monkeypatch) -> tuple[str, object]:
    """Run the plugin's real launch() up to submission (map_array faked) and render its sbatch file."""
    import submitit
    from hydra.utils import instantiate

    _write_tool(tmp_path / "bin", "srun", FAKE_SRUN, tmp_path)  # submitit's Slurm executor looks for srun
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    seen = {}

    class _Job:
        def results(self):
            return ["done"]

    def fake_map_array(executor, fn, *args):
        seen["executor"] = executor._executor
        return [_Job() for _ in args[0]]

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    assert launcher.launch([["optim.lr=1e-5"]], initial_job_idx=0) == ["done"]
    return seen["executor"]._make_submission_file_text("python -u -m submitit.core._submit x", "uid"), seen["executor"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_each_submitit_preset_composes_into_a_multi_node_requeueable_job(name, tmp_path, monkeypatch):
    nodes, hours, experiment = LAUNCHERS[name]
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = _launcher_cfg(tmp_path, f"hydra/launcher={name}", f"experiment={experiment}")
    la = cfg.hydra.launcher
    assert la._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (la.nodes, la.tasks_per_node, la.gpus_per_node, la.timeout_min) == (nodes, 8, 8, hours * 60)
    assert (la.signal_delay_s, la.max_num_timeout, la.additional_parameters.requeue) == (120, 20, True)
    assert la.name == experiment and la.setup == [
        'test -z "$TRACKSTREAM_SETUP" || . "$TRACKSTREAM_SETUP"',  # the site's setup hook, when given
        "export WANDB_MODE=offline",
        "export OMP_NUM_THREADS=12",
    ]

    text, executor = _rendered_sbatch(cfg, tmp_path, monkeypatch)
    flags = {x for x in text.splitlines() if x.startswith("#SBATCH")}
    assert {
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8",
        f"#SBATCH --time={hours * 60}",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        f"#SBATCH --job-name={experiment}",
        "#SBATCH --cpus-per-task=12",
    } <= flags, flags
    (sig,) = [x.split("=")[1] for x in flags if x.startswith("#SBATCH --signal=")]
    name_, _, delay = sig.partition("@")
    assert delay == "120" and getattr(signal, f"SIG{name_}") in PreemptionHandler.SIGNALS  # submitit's USR2
    assert executor.max_num_timeout == 20
    assert (tmp_path / "sweep").is_dir()


@pytest.mark.slow
def test_submitit_tasks_follow_the_gpu_count(tmp_path, monkeypatch):
    cfg = _launcher_cfg(
        tmp_path,
        "hydra/launcher=slurm_dmd",
        "experiment=tiny_dmd",
        "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.nodes=2",
        "hydra.launcher.cpus_per_task=6",
    )
    text, _ = _rendered_sbatch(cfg, tmp_path, monkeypatch)
    assert {
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=6",
    } <= set(text.splitlines())
    assert "export OMP_NUM_THREADS=6" in text


@pytest.mark.slow
def test_the_documented_sweep_submits_one_job_per_point(tmp_path):
    """conf/README.md's sweep line as written, in a folder of its own with a fake sbatch first on the path: the
    submitit launcher composes the real recipe at each learning rate and submits them as one 8-GPU array job
    (what the jobs then do on the nodes: the test below). ``submits`` rather than ``runs``: the client would
    wait for the cluster, so it is stopped once both points are pickled."""
    from test_docs_run import SWEEP, bin_dir, shell_line

    _write_tool(tmp_path / "bin", "sbatch", '#!/bin/sh\necho "Submitted batch job 555"\n', tmp_path)
    _write_tool(tmp_path / "bin", "srun", "#!/bin/sh\nexit 0\n", tmp_path)  # submitit looks for it
    env = {k: v for k, v in cli_env().items() if not k.startswith(("SLURM_", "SUBMITIT_")) and k != "RUN_DIR"}
    env["PATH"] = os.pathsep.join([str(tmp_path / "bin"), bin_dir(), os.environ["PATH"]])
    client = subprocess.Popen(
        ["/bin/bash", "-c", shell_line(*SWEEP, {})], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tmp_path.glob("runs/**/*_submitted.pkl"))) < 2 and client.poll() is None:
        time.sleep(0.1)
    client.kill()
    _, err = client.communicate()
    pickled = sorted(tmp_path.glob("runs/**/*_submitted.pkl"))
    assert len(pickled) == 2, err[-3000:]
    script = next(tmp_path.glob("runs/**/.submitit/**/*_submission.sh")).read_text()
    for line in ("--array=0-1%2", "--gpus-per-node=8", "--ntasks-per-node=8", "--job-name=teacher_wan1.3b_480p"):
        assert f"#SBATCH {line}\n" in script, (line, script)


@pytest.mark.multiproc
def test_a_submitit_sweep_point_preempted_with_usr2_is_rerun_into_the_same_directory_and_resumes(tmp_path, run_module):
    """The real path without a cluster: `python -m trackstream.train -m hydra/launcher=slurm_teacher ...` submits
    through a fake sbatch; the pickled job is then run as a Slurm task would run it, preempted with
    submitit's USR2 (train saves, rank 0 requeues) and run again, as after the requeue."""
    bin_dir = tmp_path / "bin"
    _write_tool(bin_dir, "sbatch", '#!/bin/sh\necho "Submitted batch job 555"\n', tmp_path)
    _write_tool(bin_dir, "srun", "#!/bin/sh\nexit 0\n", tmp_path)
    _write_tool(bin_dir, "scontrol", FAKE_SCONTROL, tmp_path)
    _write_tool(bin_dir, "sacct", '#!/bin/sh\necho "JobID|State|NodeList"\necho "555|RUNNING|gpu01"\n', tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_")) and k != "RUN_DIR"}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(ROOT),
        WANDB_MODE="offline",
        OMP_WAIT_POLICY="PASSIVE",
    )
    sweep = tmp_path / "sweep"
    args = [x for x in COMMON if not x.startswith("trainer.max_steps=")] + ["trainer.max_steps=12"]
    client = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trackstream.train",
            "-m",
            "hydra/launcher=slurm_teacher",
            *args,
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pickled = sweep / ".submitit" / "555" / "555_submitted.pkl"
    deadline = time.time() + 120
    while time.time() < deadline and not pickled.is_file() and client.poll() is None:
        time.sleep(0.05)
    client.kill()  # it would wait for the job's result
    _, err = client.communicate()
    assert pickled.is_file(), err[-3000:]
    assert "#SBATCH --nodes=4" in (sweep / ".submitit" / "555" / "555_submission.sh").read_text()

    task = dict(
        env,
        SLURM_JOB_ID="555",
        SLURM_PROCID="0",
        SLURM_NTASKS="1",
        SLURM_LOCALID="0",
        SLURM_NODEID="0",
        SLURM_JOB_NUM_NODES="1",
        SLURM_JOB_NODELIST="gpu01",
        SUBMITIT_EXECUTOR="slurm",
    )
    job_folder = str(sweep / ".submitit" / "%j")
    worker = [sys.executable, "-u", "-m", "submitit.core._submit", job_folder]  # signalled mid-run: not run_module
    run = sweep / "0"  # the sweep point's directory
    with tempfile.TemporaryFile("w+") as log_file:
        proc = popen(worker, env=task, stdout=log_file, stderr=log_file)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if (run / "metrics.jsonl").is_file() and len(_losses(run)) >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR2)  # submitit's --signal=USR2@120
        code = proc.wait(timeout=240)
        log_file.seek(0)
        assert code == 0, log_file.read()[-3000:]
    first = json.loads((run / "results.json").read_text())
    assert first["status"] == "preempted" and 2 <= first["step"] < 12, first
    assert "scontrol requeue 555" in (tmp_path / "events.log").read_text()

    run_module(
        "submitit.core._submit", job_folder, timeout=240, env=dict(task, SLURM_RESTART_COUNT="1")
    )  # the rerun after the requeue
    done = json.loads((run / "results.json").read_text())
    assert done["status"] == "done" and done["resumed_from"].endswith(f"step_{first['step']:08d}"), done
    assert sorted(_losses(run)) == list(range(1, 13))


def _submit(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    _write_tool(bin_dir, "sbatch", FAKE_SBATCH, tmp_path)
    keep = ("NODES", "GPUS_PER_NODE", "CPUS_PER_GPU", "MEM", "TIME", "RUN_ROOT", "LAUNCHER", "SBATCH", "STAGE")
    keep += ("SIGNAL_LEAD",)
    full = {k: v for k, v in os.environ.items() if k not in keep}
    full.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", RUN_ROOT=str(tmp_path / "runs"), **env)
    r = subprocess.run(
        ["bash", str(SLURM / "submit.sh"), *args], cwd=tmp_path, env=full, capture_output=True, text=True, timeout=60
    )
    log = tmp_path / "sbatch.log"
    calls = [b.splitlines() for b in log.read_text().split("---\n")[1:]] if log.is_file() else []
    if log.is_file():
        log.unlink()
    return r, calls[0] if calls else []


def test_submit_takes_resources_from_variables_and_keeps_the_stage_defaults_otherwise(tmp_path):
    runs = tmp_path / "runs"
    export = f"--export=ALL,STAGE=dmd,LAUNCHER=srun,RUN_ROOT={runs}"
    r, call = _submit(tmp_path, "dmd", "stage.teacher=/t")
    assert r.returncode == 0, r.stderr
    assert call == [export, LOG(runs), "slurm/dmd.sbatch", "stage.teacher=/t"]  # the file's #SBATCH defaults
    assert (runs / "slurm").is_dir()  # the log's folder exists before Slurm opens the file
    r, call = _submit(tmp_path, "dmd", NODES="2", GPUS_PER_NODE="4", CPUS_PER_GPU="16", MEM="480G", TIME="8:00:00")
    assert call == [
        export,
        "--nodes=2",
        "--gpus-per-node=4",
        "--ntasks-per-node=4",
        "--cpus-per-task=16",
        "--mem=480G",
        "--time=8:00:00",
        LOG(runs),
        "slurm/dmd.sbatch",
    ]
    r, call = _submit(tmp_path, "teacher", LAUNCHER="torchrun", GPUS_PER_NODE="4", CPUS_PER_GPU="16")
    assert call[1:5] == ["--gpus-per-node=4", "--ntasks-per-node=1", "--cpus-per-task=64", LOG(runs)]
    assert call[5] == "slurm/teacher_torchrun.sbatch" and "LAUNCHER=torchrun" in call[0]
    r, call = _submit(tmp_path, "distill")
    assert r.returncode == 2 and call == [] and "teacher|ode_pairs|ode_init|dmd|rl" in r.stderr


def test_signal_lead_keeps_each_stage_files_receiver_and_signal(tmp_path):
    """SIGNAL_LEAD (the warning `trackstream plan` computes for a recipe) replaces the lead of the stage file's own
    --signal: every rank (USR1), the batch shell (B:USR1, B:TERM); a lead that is not whole seconds is refused in
    one line before anything is submitted."""
    for stage, launcher, want in [
        ("dmd", "srun", "--signal=USR1@180"),
        ("ode_pairs", "srun", "--signal=B:USR1@180"),
        ("teacher", "torchrun", "--signal=B:TERM@180"),
    ]:
        r, call = _submit(tmp_path, stage, SIGNAL_LEAD="180", LAUNCHER=launcher)
        assert r.returncode == 0, r.stderr
        assert want in call and call.index(want) < len(call) - 1, call
    r, call = _submit(tmp_path, "dmd", SIGNAL_LEAD="3m")
    assert r.returncode == 2 and call == [] and "SIGNAL_LEAD=3m" in r.stderr, r.stderr
    r, calls = _chain(tmp_path, TEACHER_EXPERIMENT="tiny_teacher", SIGNAL_LEAD="240", DMD_SBATCH="--signal=USR1@600")
    assert r.returncode == 0, r.stderr
    signals = [[a for a in c if a.startswith("--signal=")] for c in calls]
    assert signals == [
        ["--signal=USR1@240"],
        ["--signal=B:USR1@240"],
        ["--signal=USR1@240"],
        ["--signal=USR1@240", "--signal=USR1@600"],
    ]  # a stage's own sbatch options come last: sbatch takes the last --signal


def test_stage_sources_the_site_setup_and_logs_into_the_run_directory(tmp_path):
    setup = tmp_path / "site.sh"
    setup.write_text('export WANDB_MODE=from-site\n[ -z "$UNSET_IN_SITE_SCRIPTS" ]\n')  # reads an unset var
    run_dir = tmp_path / "run"
    r = _batch("stage.sbatch", tmp_path, STAGE="dmd", RUN_DIR=str(run_dir), TRACKSTREAM_SETUP=str(setup))
    assert r.returncode == 0, r.stderr
    assert _srun_calls(tmp_path)[0][1]["WANDB_MODE"] == "from-site"  # the tasks inherit the site's environment
    log = (run_dir / f"slurm-{JOB}.log").read_text()
    assert f"[slurm] setup: source {setup}" in log and "[slurm] srun" in log


def test_prepare_runs_as_an_array_each_task_its_share_of_the_shards(tmp_path):
    """slurm/prepare.sbatch: array task k of N runs prepare with num_jobs=N job_index=k (the array's first index
    counted from 0), its cores as workers and as the step's --cpus-per-task; not an array: refused in one line."""
    r = _batch(
        "prepare.sbatch", tmp_path, "input=/data/videos", "output=/data/shards",
        SLURM_ARRAY_TASK_ID="7", SLURM_ARRAY_TASK_MIN="2", SLURM_ARRAY_TASK_COUNT="8", SLURM_ARRAY_JOB_ID="900",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    argv, env = _srun_calls(tmp_path)[0]
    assert argv == [
        "--cpus-per-task=12",
        ".venv/bin/python",
        "-m",
        "trackstream.data.prepare",
        "input=/data/videos",
        "output=/data/shards",
        "num_jobs=8",
        "job_index=5",
        "num_workers=12",
    ]
    assert env["OMP_NUM_THREADS"] == "12" and "array task 5 of 8 (job 900_7)" in r.stdout
    assert "#SBATCH --requeue" in (SLURM / "prepare.sbatch").read_text()
    (tmp_path / "srun.log").unlink()
    r = _batch("prepare.sbatch", tmp_path, "input=/data/videos")
    assert r.returncode == 2 and "submit it with --array=0-<N-1>" in r.stderr
    assert not (tmp_path / "srun.log").exists()
