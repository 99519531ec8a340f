"""Shared fixtures of both suites, the product's (tests/, make test) and the lab's (lab/tests/, make test-lab);
their helper modules (tests/forkserver.py, tests/docs_lines.py, ...) are importable from both (pytest.ini's
``pythonpath``). Tests run on CPU with tiny configs; determinism via fixed seeds.

* ``run_module``          ``python -m MODULE ARGS`` in the checkout as a user runs it (the one subprocess runner);
* ``torchrun``            ``python -m torch.distributed.run`` on N local processes, each launch its own port;
* ``srun``                N local processes started as ``srun`` starts a job step's tasks (``SLURM_*`` variables,
                          no launcher process): the entry points' own Slurm path, a launcher's start-up cheaper;
* ``tiny_network``        a factory of the tiny MotionWan (random head: the official init zeroes it);
* ``tiny_codec``          the tiny codec, random and frozen (one per session: never train it in a test);
* ``tiny_teacher_run``    a tiny teacher trained for a few steps by ``python -m trackstream.train`` (one per
                          session, read-only: copy it before changing it).

Every ``python`` command these launch (and every one that command launches with ``sys.executable``, and the
``python`` / ``trackstream`` / ``torchrun`` a shell line finds first on ``bin_dir()``) is a child of this test process's fork
server (tests/forkserver.py): a fresh process with its own argv, environment, streams and exit code that starts
with torch, Hydra and diffusers already imported (``TRACKSTREAM_TEST_FORK=0``: cold starts;
``TRACKSTREAM_TEST_FORK_LOG=FILE``: a JSON line per command with its CPU and wall seconds). Its environment is the
suite's (``base_env``): what a library sets in this process when a test imports it in-process is left out.
``TRACKSTREAM_TEST_CPU_LOG=FILE``: a JSON line per test with the CPU seconds its own process spent on it (setup,
call and teardown); ``python -m lab.suite_cost`` adds the two logs up per file and per test.

Markers (pytest.ini): ``slow`` (a command run, or over about half a second: not in ``make test-fast``), ``multiproc``
(launches processes).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

# Must be set before torch starts its OpenMP pool: with active spin-waiting, torch threads
# busy-wait on each other when the 2 cores are shared, making tests 10-50x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

# pytest rewrites every test module's asserts at import and caches the result beside it, unless bytecode writing is
# off (PYTHONDONTWRITEBYTECODE, as on some CI machines): then every worker of every run rewrites all of them again
# (about 8 s a worker on 2 cores, most of make test-fast's collection). The suite writes its caches whatever the
# environment says: the next run (make test-docs after make test, the edit loop) reads them.
sys.dont_write_bytecode = False

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# pytest-xdist (make test runs 3 workers, make test-fast 2): the cores are shared between the workers
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // _workers))
# the environment as the suite starts (base_env)
_START_ENV = dict(os.environ)

ROOT = Path(__file__).resolve().parent
TINY_TEACHER = ("experiment=tiny_teacher", "debug=tiny", "eval.enabled=false", "trainer.sample_every=0")


# seconds each test file took in the last recorded whole run of its suite (TRACKSTREAM_RECORD_DURATIONS=tests/durations.json
# make test / make test-lab write them): the order of the files (pytest_collection_modifyitems)
DURATIONS = ROOT / "tests" / "durations.json"
UNKNOWN_HEAVY_SECONDS = 60.0  # a file not in the record that holds slow or multi-process tests


def pytest_configure(config):
    """A process that runs tests (an xdist worker, or the one process of ``-n 0``) takes its share of the cores;
    the xdist controller runs none and leaves torch unimported (2 s of CPU while its workers start). Byte-compile the
    checkout's packages once, on the controller: with ``PYTHONDONTWRITEBYTECODE`` set (as on some CI machines) no
    import writes a ``.pyc``, and every command the tests launch would compile from source the modules it imports
    (about half a second a command); a fresh clone has none to start with."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        import torch

        torch.set_num_threads(THREADS)
    if not hasattr(config, "workerinput"):
        import compileall

        for package in ("trackstream", "lab", "tests"):
            compileall.compile_dir(ROOT / package, quiet=1, workers=1)


def pytest_collection_modifyitems(config, items):
    """The longest files first (their seconds in tests/durations.json; a file not recorded there counts 60 s
    when it holds slow or multi-process tests, else 0), each file's tests in their own order: with one file at
    a time per xdist worker (``make test`` passes ``--no-loadscope-reorder``, else xdist hands out the files with
    more tests first), a long file started last would leave the other worker idle at the end."""
    import json

    recorded = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    heavy = {item.path for item in items if any(m.name in ("slow", "multiproc") for m in item.iter_markers())}
    first_seen: dict = {}
    for i, item in enumerate(items):
        first_seen.setdefault(item.path, i)

    def cost(path) -> float:
        name = path.relative_to(ROOT).as_posix()
        return float(recorded.get(name, UNKNOWN_HEAVY_SECONDS if path in heavy else 0.0))

    items.sort(key=lambda item: (-cost(item.path), first_seen[item.path]))


_FILE_SECONDS: dict = {}


def pytest_runtest_logreport(report):
    """Per-file seconds (setup + call + teardown), gathered on the controller (xdist sends it every report)."""
    if os.environ.get("TRACKSTREAM_RECORD_DURATIONS"):
        name = report.nodeid.split("::")[0]
        _FILE_SECONDS[name] = _FILE_SECONDS.get(name, 0.0) + report.duration


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With ``TRACKSTREAM_TEST_CPU_LOG=FILE``: the test, its CPU seconds in this process (user + system, its
    fixtures' setup and teardown included) and those of the processes this one started and reaped meanwhile (not
    the fork server's commands: tests/forkserver.py logs those), and its wall seconds."""
    path = os.environ.get("TRACKSTREAM_TEST_CPU_LOG")
    if not path:
        yield
        return
    import json
    import resource
    import time

    def used(who) -> float:
        r = resource.getrusage(who)
        return r.ru_utime + r.ru_stime

    own, children, wall = used(resource.RUSAGE_SELF), used(resource.RUSAGE_CHILDREN), time.monotonic()
    yield
    line = dict(test=item.nodeid, cpu=round(used(resource.RUSAGE_SELF) - own, 3),
                children=round(used(resource.RUSAGE_CHILDREN) - children, 3), wall=round(time.monotonic() - wall, 3))  # fmt: skip
    with open(path, "a") as f:  # one short append per line: the workers' lines do not mix
        f.write(json.dumps(line) + "\n")


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("TRACKSTREAM_RECORD_DURATIONS")
    if out and _FILE_SECONDS and not hasattr(session.config, "workerinput"):  # the controller, not a worker
        import json

        opt = session.config.option
        suite = session.config.args
        if opt.markexpr or opt.keyword or suite not in (["tests"], ["lab/tests"]):
            # a part of a suite (make test-fast, -k, some files) would rank the files by the wrong seconds
            print(f"\n[conftest] {out} not written: only a whole suite's run records the files' seconds")
            return
        # the other suite's records are kept
        kept = json.loads(Path(out).read_text()) if Path(out).is_file() else {}
        seconds = {k: v for k, v in kept.items() if not k.startswith(suite[0] + "/")}
        seconds.update((k, round(v, 1)) for k, v in _FILE_SECONDS.items())
        ranked = dict(sorted(seconds.items(), key=lambda kv: -kv[1]))
        Path(out).write_text(json.dumps(ranked, indent=1) + "\n")


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield


def base_env() -> dict:
    """``os.environ`` without the import-time variables (tests/forkserver.py's ``AT_IMPORT``) that appeared in this
    process after the suite started: libraries set them here when a test imports them in-process (sklearn's and
    joblib's ``KMP_*``, accelerate's NVML check, the stages' CUDA allocator setting). They are not the commands'
    environment, and a command given them would start cold (the fork server loaded its modules without them).
    Nor a process group's variables code run in-process set here (``RANK``, ``MASTER_PORT``...): each command is
    a launch of its own, and two given one port would meet on it."""
    from forkserver import AT_IMPORT

    new = {k for k in os.environ if k not in _START_ENV and (k.startswith(AT_IMPORT) or k in LAUNCH_ENV)}
    return {k: v for k, v in os.environ.items() if k not in new}


LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def cli_env(**extra: str) -> dict:
    """The environment of a command a test runs: this checkout first on the path, offline W&B, passive
    OpenMP threads (they spin on shared cores otherwise), and the threads of this test process: with 2 xdist
    workers on 2 cores, two 2-process tests side by side would otherwise run 8 threads on 2 cores, each parallel
    region waiting for threads that are not scheduled."""
    env = dict(base_env(), PYTHONPATH=str(ROOT), WANDB_MODE="offline", OMP_WAIT_POLICY="PASSIVE")
    env.setdefault("OMP_NUM_THREADS", str(THREADS))
    return {**env, **extra}


def stopped_at(run: Path, new: Path, step: int, *keep: str) -> None:
    """``new``: a run directory holding ``run``'s checkpoint at ``step`` and the folders ``keep`` of ``run`` (e.g.
    the ODE pairs it wrote): ``run`` as if stopped after saving that checkpoint, for an exact-resume check
    against ``run`` without training the first steps twice."""
    import shutil

    name = f"step_{step:08d}"
    shutil.copytree(run / "checkpoints" / name, new / "checkpoints" / name)
    for folder in keep:
        shutil.copytree(run / folder, new / folder)


def free_port() -> int:
    """A TCP port free right now on localhost: each torchrun launch gets its own rendezvous port, so
    tests running side by side (pytest-xdist workers) never meet on one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SERVER = None


def _forkserver():
    """This test process's fork server (tests/forkserver.py), started on first use; None when
    ``TRACKSTREAM_TEST_FORK=0`` asks for cold starts."""
    global _SERVER
    if os.environ.get("TRACKSTREAM_TEST_FORK", "1") == "0":
        return None
    if _SERVER is None:
        import atexit

        from forkserver import Server

        _SERVER = Server(ROOT, cli_env())
        atexit.register(_SERVER.close)
    return _SERVER


def bin_dir() -> str:
    """The folder whose ``python``, ``trackstream`` and ``torchrun`` a shell line should find first on ``PATH``: the fork server's
    (started here), or the venv's own when commands start cold."""
    server = _forkserver()
    return server.bin if server is not None else str(Path(sys.executable).parent)


def launch_forked(mp: pytest.MonkeyPatch) -> None:
    """For code a test runs in-process that launches ``sys.executable`` with ``os.environ`` (lab's chain drivers,
    ship's re-runs): ``sys.executable`` becomes the fork server's ``python`` and the import-time variables that
    appeared in this process since the suite started are unset (``base_env``), so those launches start warm
    as ``run_module``'s do. ``mp`` undoes both."""
    server = _forkserver()
    if server is None:
        return
    mp.setattr(sys, "executable", os.path.join(server.bin, "python"))
    for key in set(os.environ) - set(base_env()):
        mp.delenv(key)


@pytest.fixture
def forked_launches(monkeypatch):
    """``launch_forked`` for one test."""
    launch_forked(monkeypatch)


def popen(cmd: list[str], *, cwd=ROOT, env: dict | None = None, stdin=None, stdout=None, stderr=None):
    """``subprocess.Popen(cmd, ...)`` for a ``python`` command: a child of the fork server (the interpreter's start
    already paid), or a cold process for anything else; streams are files or descriptors (not pipes)."""
    server = _forkserver()
    env = env or cli_env()
    if server is not None and server.runs(cmd):
        return server.popen(cmd, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr)
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr, text=True)


def run_command(cmd: list[str], *, cwd=ROOT, env: dict | None = None, timeout: float | None = None, input=None):
    """``subprocess.run(cmd, capture_output=True, text=True, ...)`` through ``popen``."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, tempfile.TemporaryFile("w+") as inp:
        if input is not None:
            inp.write(input)
            inp.flush()
            inp.seek(0)
        p = popen(cmd, cwd=cwd, env=env, stdin=inp, stdout=out, stderr=err)
        try:
            code = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(cmd, code, out.read(), err.read())


def _run(cmd: list[str], *, check: bool, timeout: int, env: dict | None) -> subprocess.CompletedProcess:
    r = run_command(cmd, env=env, timeout=timeout)
    if check:
        assert r.returncode == 0, (
            f"{' '.join(cmd[1:6])} ... exited {r.returncode}\n" + r.stdout[-2000:] + r.stderr[-4000:]
        )
    return r


@pytest.fixture(scope="session")
def run_module():
    """``run_module("trackstream.train", "experiment=tiny_teacher", ...)``: the command's CompletedProcess;
    ``check=True`` (the default) asserts it exited 0, showing the end of its output if not."""

    def run(module: str, *args: str, check: bool = True, timeout: int = 600, env: dict | None = None):
        return _run([sys.executable, "-m", module, *map(str, args)], check=check, timeout=timeout, env=env)

    return run


@pytest.fixture(scope="session")
def torchrun():
    """``torchrun(2, "-m", "trackstream.train", ...)``: N local processes on a fresh rendezvous port."""

    def launch(nproc: int, *args: str, check: bool = True, timeout: int = 900, env: dict | None = None):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
        cmd += ["--master_port", str(free_port()), *map(str, args)]
        return _run(cmd, check=check, timeout=timeout, env=env)

    return launch


def slurm_tasks(
    nproc: int, cmd: list[str], *, check: bool, timeout: int, env: dict | None, cwd=ROOT
) -> subprocess.CompletedProcess:
    """``cmd`` once per task with the variables ``srun`` gives a step's tasks on one node (the rendezvous address
    set, as a batch script's ``MASTER_ADDR`` is); like torchrun, the first task to fail stops the others. Each
    stream is the tasks' output in rank order."""
    import tempfile
    import time

    base = dict(env or cli_env())
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        base.pop(k, None)
    base.update(
        SLURM_NTASKS=str(nproc), SLURM_NTASKS_PER_NODE=str(nproc), SLURM_JOB_NODELIST="localhost",
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
    )  # fmt: skip
    files, procs = [], []
    for rank in range(nproc):
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        files.append((out, err))
        task = dict(base, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank))
        procs.append(popen(cmd, cwd=cwd, env=task, stdout=out, stderr=err))
    deadline, code = time.monotonic() + timeout, None
    try:
        while any(p.poll() is None for p in procs):
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed:
                code = failed[0]
                break
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(cmd, timeout)
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    if code is None:
        code = next((p.returncode for p in procs if p.returncode), 0)
    text = []
    for out, err in files:
        out.seek(0), err.seek(0)
        text.append((out.read(), err.read()))
        out.close(), err.close()
    r = subprocess.CompletedProcess(cmd, code, "".join(o for o, _ in text), "".join(e for _, e in text))
    if check:
        assert code == 0, f"{' '.join(cmd[1:6])} ... task exited {code}\n" + r.stdout[-2000:] + r.stderr[-4000:]
    return r


@pytest.fixture(scope="session")
def srun():
    """``srun(2, "-m", "trackstream.train", ...)`` (torchrun's arguments): ``python ARGS`` as N tasks of one
    Slurm step, for entry points that set up their processes through ``trainer.dist.init_runtime``."""

    def launch(nproc: int, *args: str, check: bool = True, timeout: int = 900, env: dict | None = None):
        return slurm_tasks(nproc, [sys.executable, *map(str, args)], check=check, timeout=timeout, env=env)

    return launch


@pytest.fixture(scope="session")
def tiny_network():
    """``tiny_network(seed, text_dim=24)``: tiny_teacher's default MotionWan with a random output head."""
    import torch

    from trackstream.models.motion_wan import ModelConfig, build_motion_wan

    def make(seed: int = 0, *, text_dim: int = 24, model: "ModelConfig | None" = None):
        torch.manual_seed(seed)
        net = build_motion_wan(model or ModelConfig(), text_encoder_dim=text_dim)
        torch.nn.init.normal_(net.dit.head.head.weight, std=0.05)  # the official init zeroes the head
        return net

    return make


@pytest.fixture(scope="session")
def tiny_codec():
    import torch

    from trackstream.models.codecs import build_codec

    torch.manual_seed(123)
    codec = build_codec("tiny-ae", width=16).eval()
    codec.requires_grad_(False)
    return codec


@pytest.fixture(scope="session")
def tiny_teacher_run(tmp_path_factory) -> Path:
    """A tiny teacher run directory (2 steps of ``experiment=tiny_teacher debug=tiny``): its export is
    ``export/teacher`` with the codec beside it. Shared by the session: copy before changing. Made by
    conf/README.md's first line as written, shrunk by overrides after its own."""
    from test_docs_run import TINY_TEACHER_LINE, run_documented

    run = tmp_path_factory.mktemp("shared") / "tiny_teacher"
    run_documented(TINY_TEACHER_LINE, run.parent, *TINY_TEACHER[1:], "trainer.max_steps=2", f"hydra.run.dir={run}")
    return run
