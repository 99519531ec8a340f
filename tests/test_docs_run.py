"""Documented commands run as written: the lines of the docs' tours that finish in seconds on the shipped assets
run verbatim (the docs' ``[optional part]`` included), one after the other as a reader runs them, in a folder
that holds the input files they name and links the checkout's ``assets/`` and ``lab/``, the venv's ``python``
and ``trackstream`` first on the path (through the tests' fork server, tests/forkserver.py). Each exits 0 and
writes the file its ``--out`` names; later lines read what earlier ones wrote (``cam.npy``, ``schedule.txt``).
The inputs are the embedded world's, at the shipped student's 64 x 64: ``first.png`` and ``robot.png`` first
frames of two of its clips, ``depth.npy`` a depth map, ``tracks.npy`` an 81-frame clip's tracks, ``dance.mp4`` a
clip to transfer.

The documented demo command is started as written too, asked for ``/health`` and its page, holds the page's load
test, and is stopped with Ctrl-C. ``run_documented`` is how every other test runs a documented line as written
(shrunk only by words typed after it, as a user could: Hydra overrides, argparse options, a lab study's
``--set KEY=VALUE`` for the stages it launches; never by editing the line's own words). tests/docs_lines.py names
the lines by what runs them (``RUN`` here, ``ELSEWHERE``) or why nothing can here (``NOT_RUN``: GPU-only, 8
processes, inputs not downloadable), and every documented command is in one of them; all are parsed or composed
by the real front end in tests/test_documented_commands.py."""

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from docs_lines import (  # noqa: F401 - the line names other tests import from here
    CHAIN_RL,
    DDP,
    DEMO,
    ELSEWHERE,
    EVAL_RUN,
    EVAL_RUNS,
    EXPORT_DIFFUSERS,
    EXPORT_OFFICIAL,
    FIRST_COMMAND,
    FIRST_RUN,
    LOAD,
    LOAD_SECONDS,
    MINILM,
    NOT_RUN,
    PIPELINE_EXPORT,
    REAL_14B,
    REAL_CHAIN,
    REHEARSAL_RELEASE,
    RUN,
    SMOKE,
    SWEEP,
    TINY_DECODER,
    TINY_DECODER_STREAM,
    TINY_LORA,
    TINY_RL,
    TINY_TEACHER_LINE,
    documented,
    documented_line,
)
from test_documented_commands import COMMANDS, plain, words

from conftest import bin_dir, cli_env, slurm_tasks
from trackstream.data.clips import DataConfig, make_world
from trackstream.data.video_io import write_mp4

ROOT = Path(__file__).resolve().parents[1]
# what a line writes (its --out), by the file's name
OUTPUTS = ("cam.npy", "street.mp4", "robot_dance.mp4", "schedule.txt", "switched.mp4", "my-pipeline/model_index.json")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return reader_folder(tmp_path_factory.mktemp("reader"))


def reader_folder(here: Path) -> Path:
    """The reader's working folder: the inputs the commands name, the checkout's assets/ and lab/."""
    here.mkdir(parents=True, exist_ok=True)
    for name in ("assets", "lab"):
        (here / name).symlink_to(ROOT / name)
    world = make_world(DataConfig(num_frames=81))
    clip, other = world.generate(7), world.generate(8)
    cv2.imwrite(str(here / "first.png"), clip["frames"][0][..., ::-1])  # RGB -> OpenCV's BGR
    cv2.imwrite(str(here / "robot.png"), other["frames"][0][..., ::-1])
    H, W = clip["frames"].shape[1:3]
    np.save(here / "depth.npy", np.linspace(2.0, 1.0, H, dtype=np.float32)[:, None].repeat(W, axis=1))
    np.save(here / "tracks.npy", clip["tracks"].astype(np.float32))  # [81, N, 2] pixels
    write_mp4(here / "dance.mp4", other["frames"], fps=16)
    return here


def test_the_run_list_names_documented_lines():
    missing = [f"{page}: {text}" for page, text in [*RUN, DEMO, LOAD, *ELSEWHERE] if not documented(page, text)]
    assert not missing, f"no longer shown as written (update RUN / ELSEWHERE): {missing}"
    assert any(text.startswith(f"{SMOKE[1]} ") and page == SMOKE[0] for page, text in RUN)  # with one more word
    for line, test in ELSEWHERE.items():  # each is run by the test named beside it
        text = (ROOT / test).read_text()
        assert "run_documented(" in text or "shell_line(" in text, (line, test)  # the line as bash runs it


def test_every_documented_command_is_run_or_says_why_not():
    """Each command the docs show is run (``RUN``, ``ELSEWHERE``, the demo) or in ``NOT_RUN`` with its reason; a
    line in both, or a new line in neither, fails here."""
    ran = {*RUN, DEMO, LOAD, *ELSEWHERE}
    shown = {(where.rsplit(":", 1)[0], command) for where, command in COMMANDS}
    neither = sorted(f"{page}: {text}" for page, text in shown - ran - set(NOT_RUN))
    assert not neither, f"run these as written (ELSEWHERE) or say why not (NOT_RUN): {neither}"
    assert not ran & set(NOT_RUN), sorted(ran & set(NOT_RUN))


def test_words_are_typed_after_the_lines_command():
    """``run_documented``'s words: at the end of a plain line, after a ``VAR=value`` prefix's command, before a
    redirection, a pipe or the next command of a list (quoted operators are words), quoted as a shell reads them."""
    assert with_words("python -m m a=1", ["b=2", "runs={x: 1}"]) == "python -m m a=1 b=2 'runs={x: 1}'"
    assert with_words("V=1 trackstream x --a 1", ["--a", "2"]) == "V=1 trackstream x --a 1 --a 2"
    assert with_words("m a 2>&1 | tee log", ["b"]) == "m a b 2>&1 | tee log"
    assert with_words("m 'a|b' > out && n", ["c"]) == "m 'a|b' c > out && n"
    assert with_words("m a", []) == "m a"


def _path_env() -> dict:
    """The commands' environment (``cli_env``: the suite's threads per command) with the venv's ``python`` and
    ``trackstream`` first on the path."""
    return cli_env(PATH=bin_dir() + os.pathsep + os.environ.get("PATH", ""))


def shell_line(page: str, text: str, variables: dict) -> str:
    """The line as bash runs it (the docs' ``[optional part]`` included); every ``$VAR`` it reads given."""
    assert not re.search(r"<[^<>]*>", text), f"{page}: `{text}` has a <placeholder>: not runnable as written"
    unset = sorted(set(re.findall(r"\$\{?([A-Za-z_]\w*)", text)) - set(variables))
    assert not unset, f"{page}: `{text}` reads ${unset[0]}: give it (variables=)"
    return plain(text)


def _run_line(page: str, text: str, cwd: Path, env: dict, variables: dict | None = None, procs: int = 1, *, more=()):
    variables = {k: str(v) for k, v in (variables or {}).items()}
    cmd = ["/bin/bash", "-c", with_words(shell_line(page, text, variables), more)]
    env = {**env, **variables}
    if procs > 1:  # the line as the tasks of one Slurm step (srun -n procs LINE): each task's SLURM_* variables
        r = slurm_tasks(procs, cmd, check=False, timeout=600, env=env, cwd=cwd)
    else:
        r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{page}: `{text}` exited {r.returncode}\n{r.stdout[-1500:]}{r.stderr[-3000:]}"
    return r


def with_words(line: str, words) -> str:
    """``line`` (a shell line) with ``words`` typed after its command's own: before the first redirection, pipe or
    list operator outside quotes (``cmd > log``, ``cmd 2>&1 | tee log``, ``cmd && next``), else at the end. A
    leading ``VAR=value`` prefix stays in front of the command, as bash reads it."""
    if not words:
        return line
    quote, escaped, end = None, False, len(line)
    for i, ch in enumerate(line):
        if escaped or (ch == "\\" and quote != "'"):
            escaped = not escaped
        elif quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "|&;<>":
            fd = len(line[:i].rstrip("0123456789"))  # a redirection's descriptor (2>&1) is a word of its own
            end = fd if fd < i and (fd == 0 or line[fd - 1].isspace()) else i
            break
    head, tail = line[:end].rstrip(), line[end:]
    return f"{head} {shlex.join(words)}" + (f" {tail}" if tail else "")


def setting(*overrides: str) -> tuple[str, ...]:
    """A lab study's options that give every stage it launches ``overrides`` after its own (``--set KEY=VALUE``)."""
    return tuple(word for o in overrides for word in ("--set", o))


def run_documented(
    line: tuple[str, str],
    cwd: Path,
    *overrides: str,
    args: tuple[str, ...] = (),
    variables: dict | None = None,
    procs: int = 1,
) -> subprocess.CompletedProcess:
    """A documented ``line`` (page, text) run by bash in ``cwd`` (a ``reader_folder`` or a test's own) as a user
    would type it with more words after it: the ``overrides`` (a Hydra command's ``key=value`` words, after the
    line's own: the later wins where both set a key), then the options ``args`` (an argparse command's; the later
    wins where both give one, a repeatable one gains them; a lab study passes ``--set KEY=VALUE`` on to every stage
    it launches), both on the line's command itself (``with_words``: before a redirection or pipe; after a leading
    ``VAR=value``). ``variables``: the shell variables the page sets before the line (``D=/data``,
    ``R=runs/...``), here the test's paths; ``procs`` > 1: the line as that many tasks of one Slurm step. Exits 0."""
    assert documented(*line), f"no longer shown as written: {line}"
    return _run_line(*line, cwd, _path_env(), variables, procs, more=(*overrides, *args))


@pytest.mark.slow
@pytest.mark.multiproc
@pytest.mark.docs
def test_the_tours_commands_run_verbatim(folder):
    env = _path_env()
    for page, text in RUN:
        _run_line(page, text, folder, env)
    for name in OUTPUTS:
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, f"nothing wrote {name}"
    assert list(folder.glob("runs/tiny_teacher/runs/*/export/teacher/network.json"))  # the smoke run, by recipe


def start_server(argv: list[str], cwd: Path, port: int, *, wait_s: float = 120):
    """A server command (the demo) started as a terminal starts it, until it answers ``/health`` on ``port``:
    (the process, its health answer as JSON or None when it never answered). The caller stops it with Ctrl-C
    (``proc.send_signal(signal.SIGINT)``)."""
    import signal
    import time
    import urllib.request

    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=_path_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C as a terminal delivers it: a test runner's worker may ignore SIGINT, and its children inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline, health = time.monotonic() + wait_s, None
    while health is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read())
        except OSError:
            time.sleep(0.3)
    return proc, health


@pytest.mark.slow
@pytest.mark.multiproc
@pytest.mark.docs
def test_the_documented_demo_serves_its_page_and_stops_on_ctrl_c(folder):
    """docs/demo.md's ``python -m trackstream.stream.demo`` as written: it serves the page and ``/health`` on
    127.0.0.1:8000 with the shipped student, holds the page's load test (``LOAD``: its default two sessions
    stream, a third is refused, bad messages are refused while the stream goes on), and Ctrl-C (SIGINT) ends it
    with status 0."""
    import signal
    import urllib.request

    where = ":".join(DEMO)
    proc, health = start_server(words(DEMO[1]), folder, 8000)
    try:
        assert health is not None, f"{where}: no /health answer ({proc.poll()=})"
        page = urllib.request.urlopen("http://127.0.0.1:8000/", timeout=5).read().decode()
        assert "<canvas" in page
        run_documented(LOAD, folder, args=("--seconds", str(LOAD_SECONDS)))
        _check_load(json.loads((folder / "load.json").read_text()))
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, f"{where} ended with {proc.returncode} on Ctrl-C:\n{out[-2000:]}"
    assert "open http://127.0.0.1:8000" in out and "Traceback" not in out and "[demo] stopped" in out


def _check_load(report: dict) -> None:
    """The load report (trackstream/stream/demo/load.py) of sessions at the server's limit; a copy in
    ``test-artifacts/demo/``."""
    (ROOT / "test-artifacts" / "demo").mkdir(parents=True, exist_ok=True)
    (ROOT / "test-artifacts" / "demo" / "load.json").write_text(json.dumps(report, indent=1))
    chunk_frames = 12
    for s in report["sessions"]:
        # both sessions stream side by side (how fast is the demo's rate, a benchmark: a loaded machine streams
        # fewer chunks in the same seconds, and this test must hold there too)
        assert s["chunks"] >= 3 and s["frames"] >= 3 * chunk_frames, s
        assert s["dropped"] == 0, s  # a client that keeps up loses nothing
        assert s["bytes_per_frame"] < 4000, s  # binary JPEG frames
    bad = report["sessions"][0]
    assert len(bad["errors"]) == bad["bad_sent"] == 9, bad["errors"]
    assert bad["frames_after_bad"] >= 2 * chunk_frames, "the session stopped after the bad messages"
    assert report["refused"]["first"]["type"] == "busy" and report["refused"]["close_code"] == 1013
    assert report["after"]["frames"] > 0  # the slots are free again once the sessions left
    assert report["rss_mb"]["last"] - report["rss_mb"]["first"] < 300, report["rss_mb"]  # no growth per chunk
