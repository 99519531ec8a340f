"""Documented commands run as written: the lines of the docs' tours that finish in seconds on the shipped assets
run verbatim (the docs' ``[optional part]`` included), one after the other as a reader runs them, in a folder
that holds the input files they name and links the checkout's ``assets/`` and ``lab/``, the venv's ``python``
and ``trackstream`` first on the path. Each exits 0 and writes the file its ``--out`` names; later lines read
what earlier ones wrote (``cam.npy``, ``schedule.txt``). The inputs are the embedded world's, at the shipped
student's 64 x 64: ``first.png`` and ``robot.png`` first frames of two of its clips, ``depth.npy`` a depth map,
``tracks.npy`` an 81-frame clip's tracks, ``dance.mp4`` a clip to transfer.

The documented demo command is started as written too, asked for ``/health`` and its page, and stopped with
Ctrl-C. Every other documented command (a training run, a real Wan release, a GPU benchmark) is parsed or
composed by the real front end in tests/test_documented_commands.py; ``RUN`` names the ones run here."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_documented_commands import COMMANDS, words

from trackstream.data.clips import DataConfig, make_world
from trackstream.data.video_io import write_mp4

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTED = dict(COMMANDS)
# doc:line in the order a reader runs them (a shell line that is not a trackstream command is run by bash)
RUN = [
    "conf/README.md:42",  # the resolved job config
    # memory plans, as a table and as JSON (:109's options are computed by tests/test_plan.py, which also runs
    # :111's table of every recipe and compares it with the docs')
    "docs/distributed.md:108",
    "docs/distributed.md:110",
    "docs/control.md:14",  # camera tracks from a depth map, then the stream they drive
    "docs/control.md:16",
    "docs/control.md:48",  # motion transfer
    "docs/control.md:69",  # a prompt schedule (printf), then the stream that switches prompts
    "docs/control.md:70",
    "docs/diffusers.md:15",  # the shipped student as a diffusers pipeline folder
    "docs/results.md:182",  # the shipped teacher's files against its manifest
]
OUTPUTS = {
    "docs/control.md:14": "cam.npy",
    "docs/control.md:16": "street.mp4",
    "docs/control.md:48": "robot_dance.mp4",
    "docs/control.md:69": "schedule.txt",
    "docs/control.md:70": "switched.mp4",
    "docs/diffusers.md:15": "my-pipeline/model_index.json",
}


def _shell_line(where: str) -> str:
    doc, line = where.rsplit(":", 1)
    return (ROOT / doc).read_text().splitlines()[int(line) - 1].strip()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The reader's working folder: the inputs the commands name, the checkout's assets/ and lab/."""
    here = tmp_path_factory.mktemp("reader")
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
    missing = [w for w in RUN if w not in DOCUMENTED and not _shell_line(w).startswith("printf ")]
    assert not missing, f"no longer documented there (update RUN): {missing}"


@pytest.mark.slow
@pytest.mark.multiproc
def test_the_tours_commands_run_verbatim(folder):
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), OMP_WAIT_POLICY="PASSIVE")
    for where in RUN:
        if where in DOCUMENTED:
            cmd, shell = words(DOCUMENTED[where]), False
        else:
            cmd, shell = _shell_line(where), True
        r = subprocess.run(
            cmd, shell=shell, executable="/bin/bash" if shell else None, cwd=folder, env=env,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert r.returncode == 0, f"{where}: `{cmd}` exited {r.returncode}\n{r.stdout[-1500:]}{r.stderr[-3000:]}"
        if where in OUTPUTS:
            out = folder / OUTPUTS[where]
            assert out.is_file() and out.stat().st_size > 0, f"{where} wrote no {OUTPUTS[where]}"


@pytest.mark.slow
@pytest.mark.multiproc
def test_the_documented_demo_serves_its_page_and_stops_on_ctrl_c(folder):
    """docs/demo.md's ``python -m trackstream.stream.demo`` as written: it serves the page and ``/health`` on
    127.0.0.1:8000 with the shipped student, and Ctrl-C (SIGINT) ends it with status 0."""
    import signal
    import time
    import urllib.request

    where = "docs/demo.md:19"
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.Popen(
        words(DOCUMENTED[where]),
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C as a terminal delivers it: a test runner's worker may ignore SIGINT, and its children inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline, health = time.monotonic() + 120, None
        while health is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                health = urllib.request.urlopen("http://127.0.0.1:8000/health", timeout=2).read()
            except OSError:
                time.sleep(0.5)
        assert health is not None, f"{where}: no /health answer ({proc.poll()=})"
        page = urllib.request.urlopen("http://127.0.0.1:8000/", timeout=5).read().decode()
        assert "<canvas" in page
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, f"{where} ended with {proc.returncode} on Ctrl-C:\n{out[-2000:]}"
    assert "open http://127.0.0.1:8000" in out and "Traceback" not in out and "[demo] stopped" in out
