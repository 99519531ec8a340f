"""A fork server for the commands the tests launch: ``python -m trackstream...`` as users run it, without paying
the interpreter's start each time.

Every command a test runs is a fresh process (its own argv, environment, working directory, standard streams,
exit code and process group), but on 2 cores the start of each one is a large share of the suite: importing torch,
the torch._dynamo that every torch.optim optimizer imports on first use, Hydra, and diffusers / transformers (the
Wan VAE, the T5 and CLIP encoders) costs about 5 s of CPU a process. The server imports those once, with the
library below the training entry (``PRELOAD_OURS``: never a module a command runs as ``__main__``) and Hydra's
plugin scan, then forks a child per command;
the child takes the command's streams, directory, environment and argv and runs it with ``runpy`` as ``python``
would, then exits as the interpreter does (non-daemon threads joined, atexit handlers run, streams flushed).

A command whose environment differs from the server's in a variable read at import (``AT_IMPORT``: Hugging Face's
offline flag, torch's and the interpreter's settings) is not forked from what was loaded with other values: its
child execs the real interpreter (a cold start). OpenMP's thread pool is not started in the server (it runs no
tensor op), so each child starts its own, with the command's ``OMP_NUM_THREADS``. ``TRACKSTREAM_TEST_FORK=0`` runs
every command cold; ``TRACKSTREAM_TEST_FORK_LOG=FILE`` appends a JSON line per command (test, argv, cold, CPU and wall
seconds): where the suite's time goes, and which commands started cold.

Protocol (a Unix socket): the client sends an 8-byte length with its stdin / stdout / stderr descriptors, then the
JSON request {argv, cwd, env}; the server answers one line {"pid": N} when the child runs and one line
{"code": C} when it ends (C < 0: killed by signal -C, as subprocess reports it)."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

PRELOAD = (
    "numpy", "torch", "torch._dynamo", "torch.distributed", "hydra", "omegaconf", "yaml", "cv2",
    "diffusers.models.autoencoders", "transformers.models.umt5.modeling_umt5", "transformers.models.clip.modeling_clip",
)  # fmt: skip
# the library below the training command's entry (never a module a command runs as __main__: runpy would run a
# second copy of it), and Hydra's plugin scan, which every Hydra command repeats otherwise
PRELOAD_OURS = ("trackstream.train.app",)
# variables these modules (or the interpreter) read when they load: a command whose value differs from the
# server's starts cold instead (exec of the real interpreter in the child)
AT_IMPORT = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "DIFFUSERS_", "TORCHDYNAMO_", "TORCHINDUCTOR_", "TORCH_LOGS",
             "TORCH_COMPILE", "PYTORCH_", "OPENBLAS_", "MKL_", "KMP_", "OMP_WAIT_POLICY", "PYTHON")  # fmt: skip
HANDLED = ("PYTHONPATH", "PYTHONUNBUFFERED")
LOG = "TRACKSTREAM_TEST_FORK_LOG"  # a file: one JSON line per command (_log)


def _import_time_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith(AT_IMPORT) and k not in HANDLED}


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("fork client closed the connection")
        data += chunk
    return data


def _python_args(argv: list[str]) -> tuple[str, str, list[str]] | None:
    """``[python, -m mod | -c code | script, args...]`` -> (mode, target, args); None for what the server does not
    run (interpreter flags other than -u)."""
    rest = argv[1:]
    while rest and rest[0] == "-u":
        rest = rest[1:]
    if not rest:
        return None
    if rest[0] in ("-m", "-c") and len(rest) >= 2:
        return rest[0], rest[1], rest[2:]
    if rest[0].startswith("-"):
        return None
    return "script", rest[0], rest[1:]


def _child(req: dict, fds: list[int], base_path: list[str], shim: str) -> None:
    """Become the command: never returns."""
    code = 1
    try:
        os.setsid()  # its own process group: a timeout stops what the command started too
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
            os.close(fd)
        os.chdir(req["cwd"])
        if _import_time_env(req["env"]) != _import_time_env(SERVER_ENV):
            with open(os.path.join(os.path.dirname(shim), "cold.log"), "a") as f:  # which commands, and why
                diff = set(_import_time_env(req["env"]).items()) ^ set(_import_time_env(SERVER_ENV).items())
                f.write(json.dumps({"argv": req["argv"][1:4], "differs": sorted({k for k, _ in diff})}) + "\n")
            os.execve(REAL, req["argv"], req["env"])  # cold: what loaded here was read with other settings
        os.environ.clear()
        os.environ.update(req["env"])
        unbuffered = "-u" in req["argv"][1:2] or bool(os.environ.get("PYTHONUNBUFFERED"))
        sys.stdin = sys.__stdin__ = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = sys.__stdout__ = open(1, "w", buffering=1 if unbuffered else -1, closefd=False)  # noqa: SIM115
        sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False, errors="backslashreplace")  # noqa: SIM115
        import faulthandler

        faulthandler.enable(all_threads=True)  # a command that crashes (a signal, not an exception) says where
        mode, target, args = _python_args(req["argv"])
        extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        first = os.path.dirname(os.path.abspath(target)) if mode == "script" else os.getcwd()
        sys.path[:] = [first, *extra, *base_path]
        sys.executable = shim  # what the command starts with sys.executable comes back here
        if os.environ.get("OMP_NUM_THREADS", "").isdigit():  # OpenMP read it when the server loaded torch
            import torch

            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        import runpy
        import threading

        try:
            if mode == "-m":
                sys.argv = [target, *args]  # runpy replaces argv[0] with the module's file
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            elif mode == "-c":
                sys.argv = ["-c", *args]
                exec(compile(target, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
            else:
                sys.argv = [target, *args]
                runpy.run_path(target, run_name="__main__")
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            sys.excepthook(*sys.exc_info())
            code = 1
        threading._shutdown()  # as the interpreter does at exit: join non-daemon threads
        import atexit

        atexit._run_exitfuncs()
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a reader that closed its end: the exit code still goes back
                pass
        os._exit(code)


def _supervise(conn: socket.socket, base_path: list[str], shim: str) -> None:
    """In a forked supervisor: start the command's child, report its pid and its exit code; never returns."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        conn.settimeout(None)
        head, fds, _, _ = socket.recv_fds(conn, 8, 3)
        req = json.loads(_recv_exact(conn, int(head.decode())))
        pid = os.fork()
        if pid == 0:
            conn.close()
            _child(req, fds, base_path, shim)
        for fd in fds:
            os.close(fd)
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        started = time.monotonic()
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            # the client gone (a launcher killed it, its test ended): the command goes too
            if select.select([conn], [], [], 0.05)[0] and not conn.recv(1):
                _killpg(pid)
        conn.sendall(json.dumps({"code": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
        _log(req, usage, time.monotonic() - started)
    finally:
        os._exit(0)


def _log(req: dict, usage, wall: float) -> None:
    """A line per command in ``TRACKSTREAM_TEST_FORK_LOG`` (when the suite is started with it): the test, the
    command, whether it started cold, its CPU (user + system, what it waited for included) and wall seconds."""
    path = SERVER_ENV.get(LOG)
    if path:
        cold = _import_time_env(req["env"]) != _import_time_env(SERVER_ENV)
        line = dict(test=req["env"].get("PYTEST_CURRENT_TEST"), argv=req["argv"][1:], cold=cold,
                    cpu=round(usage.ru_utime + usage.ru_stime, 2), wall=round(wall, 2))  # fmt: skip
        with open(path, "a") as f:  # one short append per line: lines from concurrent commands do not mix
            f.write(json.dumps(line) + "\n")


def _killpg(pid: int) -> None:
    """Stop a command and what it started (its process group); nothing to do when it has already ended."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


SHIM = """#!{python} -SE
import json, os, signal, socket, sys
REAL = {python!r}
try:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect({path!r})
except OSError:  # no server: the interpreter itself
    os.execv(REAL, [REAL, *sys.argv[1:]])
body = json.dumps(dict(argv=[REAL, *sys.argv[1:]], cwd=os.getcwd(), env=dict(os.environ))).encode()
socket.send_fds(sock, [b"%08d" % len(body)], [0, 1, 2])
sock.sendall(body)
f = sock.makefile("rb")
pid = json.loads(f.readline())["pid"]
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(sig, lambda s, _: os.kill(pid, s))
code = json.loads(f.readline())["code"]
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


REAL = sys.executable
SERVER_ENV = dict(os.environ)


def serve(path: str) -> None:
    """Preload, then fork a supervisor per connection. ``path``'s folder also gets the ``python`` shim that forked
    commands see as ``sys.executable`` (a command's own launches, e.g. torchrun's ranks, come back here) and the
    ``trackstream`` and ``torchrun`` console scripts run by that shim: the folder first on ``PATH`` sends shell lines
    here too."""
    shim = os.path.join(os.path.dirname(path), "python")
    with open(shim, "w") as f:
        f.write(SHIM.format(python=sys.executable, path=path))
    os.chmod(shim, 0o755)
    for name in ("trackstream", "torchrun"):  # the console scripts a documented line starts with, on the shim
        script = os.path.join(os.path.dirname(sys.executable), name)
        if os.path.isfile(script):
            with open(script) as f:
                body = f.read().split("\n", 1)[1]
            front = os.path.join(os.path.dirname(path), name)
            with open(front, "w") as f:
                f.write(f"#!{shim}\n{body}")
            os.chmod(front, 0o755)
    for name in PRELOAD + PRELOAD_OURS:
        __import__(name)
    from hydra.core.plugins import Plugins

    Plugins.instance()  # scans hydra_plugins (the submitit launcher) once
    import gc

    gc.freeze()  # what was loaded stays out of the children's collections (and their pages stay shared)
    here = os.path.dirname(os.path.abspath(__file__))
    own = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    base_path = [p for p in sys.path[1:] if p not in own and p != here]
    parent = os.getppid()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(64)
    sock.settimeout(1.0)
    while os.getppid() == parent:  # the test process is gone: stop
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        if os.fork() == 0:
            sock.close()
            _supervise(conn, base_path, shim)
        conn.close()


class Forked:
    """A command running in a child of the server; the subset of ``subprocess.Popen`` the tests use."""

    def __init__(self, path: str, argv: list[str], *, cwd, env: dict, stdin=None, stdout=None, stderr=None):
        self.args, self.returncode = argv, None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        null = open(os.devnull, "r+")  # noqa: SIM115
        fds = [(s if isinstance(s, int) else (s or null).fileno()) for s in (stdin, stdout, stderr)]
        body = json.dumps({"argv": list(argv), "cwd": str(cwd), "env": dict(env)}).encode()
        socket.send_fds(self._sock, [b"%08d" % len(body)], fds)
        self._sock.sendall(body)
        null.close()
        self._buf = b""
        self.pid = self._line(None)["pid"]

    def _line(self, timeout: float | None) -> dict:
        self._sock.settimeout(timeout)
        while b"\n" not in self._buf:
            chunk = self._sock.recv(256)
            if not chunk:
                raise ConnectionError("the fork server's supervisor ended without a report")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = self._line(0.0)["code"]
            except (TimeoutError, BlockingIOError):
                return None
            self._sock.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            try:
                self.returncode = self._line(timeout)["code"]
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout) from None
            self._sock.close()
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            _killpg(self.pid)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)


class Server:
    """One server per test process, started on first use and stopped with it."""

    def __init__(self, root, env: dict):
        import tempfile

        self._dir = tempfile.mkdtemp(prefix="forkserver-")
        self.path = os.path.join(self._dir, "socket")
        self._proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), self.path], cwd=root, env=env)
        deadline = time.monotonic() + 120
        while not os.path.exists(self.path):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the tests' fork server did not start (exit {self._proc.poll()})")
            time.sleep(0.05)

    @property
    def bin(self) -> str:
        """The folder of the ``python``, ``trackstream`` and ``torchrun`` shims."""
        return self._dir

    def runs(self, argv: list[str]) -> bool:
        return argv[0] == sys.executable and _python_args(argv) is not None

    def popen(self, argv: list[str], **kw) -> Forked:
        return Forked(self.path, argv, **kw)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait()
        import shutil

        shutil.rmtree(self._dir, ignore_errors=True)


if __name__ == "__main__":
    serve(sys.argv[1])
