"""Documented commands run as written: the lines of the docs' tours that finish in seconds on the shipped assets
run verbatim (the docs' ``[optional part]`` included), one after the other as a reader runs them, in a folder
that holds the input files they name and links the checkout's ``assets/`` and ``lab/``, the venv's ``python``
and ``trackstream`` first on the path (through the tests' fork server, tests/forkserver.py). Each exits 0 and
writes the file its ``--out`` names; later lines read what earlier ones wrote (``cam.npy``, ``schedule.txt``).
The inputs are the embedded world's, at the shipped student's 64 x 64: ``first.png`` and ``robot.png`` first
frames of two of its clips, ``depth.npy`` a depth map, ``tracks.npy`` an 81-frame clip's tracks, ``dance.mp4`` a
clip to transfer.

The documented demo command is started as written too, asked for ``/health`` and its page, and stopped with
Ctrl-C. ``ELSEWHERE`` names the lines other tests run verbatim (``run_documented``) where they already pay for
that run, its size shrunk by ``TRACKSTREAM_OVERRIDES`` (trackstream/data/command_line.py) and never by editing the
line. Every other documented command (a longer training run, a real Wan release, a GPU benchmark) is parsed or
composed by the real front end in tests/test_documented_commands.py; ``RUN`` names the ones run here."""

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import bin_dir, cli_env, slurm_tasks
from test_documented_commands import COMMANDS, plain, words

from trackstream.data.clips import DataConfig, make_world
from trackstream.data.video_io import write_mp4

ROOT = Path(__file__).resolve().parents[1]
# (page, the line as the page shows it) in the order a reader runs them; a shell line that is not a trackstream
# command (the printf) is run by bash. Named by text, not line number: an edit above a line keeps it found.
RUN = [
    ("conf/README.md", "python -m trackstream.stages experiment=tiny_teacher --cfg job"),
    ("conf/README.md", "python -m trackstream.stages experiment=tiny_teacher debug=tiny"),  # a training run, seconds
    # memory plans: one recipe as a table, on 8 GPUs of another kind with sequence parallelism, as JSON, and every
    # recipe's table (tests/test_plan.py compares that table with the page's)
    ("docs/distributed.md", "trackstream plan experiment=teacher_wan1.3b_480p"),
    (
        "docs/distributed.md",
        "trackstream plan --gpus 8 --gpu h200 experiment=teacher_wan2.2_5b_704p parallel.sequence_parallel=2",
    ),
    ("docs/distributed.md", "trackstream plan --json experiment=dmd_wan1.3b_480p --gpus 8 model.lora.rank=64"),
    ("docs/distributed.md", "trackstream plan --table --gpus 1,8,32"),
    # camera tracks from a depth map, then the stream they drive
    (
        "docs/control.md",
        "trackstream camera --image first.png --depth depth.npy --path orbit --frames 81 --out cam.npy",
    ),
    (
        "docs/control.md",
        'trackstream generate --image first.png --tracks cam.npy --visibility cam.visibility.npy --prompt "a quiet '
        'street" --out street.mp4',
    ),
    (  # motion transfer
        "docs/control.md",
        'trackstream transfer --source dance.mp4 --image robot.png --grid 20 --out robot_dance.mp4 --prompt "a robot '
        'dancing"',
    ),
    # a prompt schedule, then the stream that switches prompts
    ("docs/control.md", "printf '0\\ta red ball on a table\\n40\\tthe ball turns into a blue cube\\n' > schedule.txt"),
    (
        "docs/control.md",
        "trackstream generate --image first.png --tracks tracks.npy --prompt-schedule schedule.txt --out switched.mp4 "
        "[--prompt-sink keep]",
    ),
    (  # the shipped student as a diffusers pipeline folder
        "docs/diffusers.md",
        "trackstream export --network assets/tiny-student/student --format pipeline --codec assets/tiny-teacher/codec.pt "
        "--out my-pipeline",
    ),
    ("docs/results.md", "python -m lab.ship_teacher verify"),  # the shipped teacher's files against its manifest
]
# lines run verbatim by the test that checks what they make (run_documented), with its shrinking overrides
TINY_DECODER = ("docs/tiny-decoder.md", "python -m trackstream.stages experiment=tiny_decoder hydra.run.dir=RUN")
TINY_DECODER_STREAM = (
    "docs/tiny-decoder.md",
    "trackstream generate --image first.png --tracks tracks.npy --decoder RUN/export/taehv.pth --out out.mp4",
)
TINY_LORA = (
    "docs/recipes.md",
    "trackstream train experiment=tiny_teacher_finetune model.init_from=assets/tiny-teacher/teacher model.lora.rank=8",
)


def documented_line(page: str, *parts: str) -> tuple[str, str]:
    """The one command ``page`` shows that holds every one of ``parts`` as a word (or, a part with a space, as a
    run of words): (page, its text as extracted)."""

    def holds(command: str, part: str) -> bool:
        return f" {part} " in f" {' '.join(command.split())} "

    found = [c for where, c in COMMANDS if where.rsplit(":", 1)[0] == page and all(holds(c, p) for p in parts)]
    assert len(found) == 1, f"{page}: {len(found)} commands hold {parts}"
    return page, found[0]


# docs/recipes.md's 1.3B chain (by run folder) and docs/rl.md's RL line, then the stream: the real-path rehearsal
# runs each as the tasks of a Slurm step; docs/rl.md's tiny RL line: the two-process RL test's one-process run
REAL_CHAIN = {
    **{
        run: documented_line("docs/recipes.md", f"hydra.run.dir=$R/{run}")
        for run in ("teacher", "pairs", "ode_init", "dmd", "teacher_forcing", "consistency", "dmd_from_consistency")
    },
    "finetune": documented_line("docs/recipes.md", "hydra.run.dir=$R/finetune"),  # a LoRA fine-tune
    "dmd_lora": documented_line("docs/recipes.md", "hydra.run.dir=$R/dmd_lora"),
    "rl": documented_line("docs/rl.md", "hydra.run.dir=$R/rl"),
    "generate": documented_line("docs/recipes.md", "trackstream.stream.generate"),
}
REAL_14B = {  # docs/recipes.md's 14B -> 1.3B chain: tests/test_real_path_14b.py
    run: documented_line("docs/recipes.md", f"hydra.run.dir=$R14/{run}")
    for run in ("teacher", "pairs", "ode_init", "dmd")
}
# docs/recipes.md's rehearsal by hand: a shrunk release folder, then the first command with the overrides it says
REHEARSAL_RELEASE = documented_line("docs/recipes.md", "trackstream rehearsal-release")
FIRST_RUN = documented_line("docs/recipes.md", "debug=teacher_1gpu", "+model.overrides.dim=64")
FIRST_COMMAND = (  # FIRST_RUN without the rehearsal's overrides: the real first run
    "docs/recipes.md",
    "trackstream train experiment=teacher_wan1.3b_480p debug=teacher_1gpu paths.data_dir=$D data.eval_shards=$D/eval_shards",
)
TINY_RL = documented_line("docs/rl.md", "experiment=rl_tiny")
DDP = documented_line("conf/README.md", "parallel=ddp")
SWEEP = documented_line("conf/README.md", "hydra/launcher=slurm_h100")  # tests/test_slurm.py: submitted
TINY_TEACHER_LINE = ("conf/README.md", "python -m trackstream.stages experiment=tiny_teacher")  # conftest's run
EXPORT_DIFFUSERS = documented_line("docs/checkpoints.md", "--format diffusers")
EXPORT_OFFICIAL = documented_line("docs/checkpoints.md", "--format official")
EVAL_RUN = documented_line("docs/evaluation.md", "run=$NET")
EVAL_RUNS = documented_line("docs/evaluation.md", '"runs={teacher: $TEACHER, student: $STUDENT}"')
CHAIN_RL = documented_line("docs/results.md", "lab.student_chain", "rl", "--run-dir RUN")
MINILM = documented_line("docs/small-world.md", "lab.small_world", "minilm")
PIPELINE_EXPORT = documented_line("docs/diffusers.md", "--network runs/x/export/student", "--format pipeline")
PERF = "docs/performance.md"
DISTILL_BENCH = "python -m trackstream.bench.distill"
ELSEWHERE = {
    TINY_DECODER: "tests/test_tiny_decoder.py",
    documented_line("conf/README.md", 'TRACKSTREAM_OVERRIDES="trainer.max_steps=2'): "tests/test_command_line.py",
    **{
        documented_line("docs/bench/cpu/realtime_small_sizes.md", f"--setup {setup}"): "tests/test_bench_realtime.py"
        for setup in ("tiny-student", "small")
    },
    (PERF, DISTILL_BENCH): "tests/test_bench_realtime.py",
    documented_line(PERF, DISTILL_BENCH, "--configs dmd_wan2.2_5b_704p,ode_init_wan2.2_5b_704p"): (
        "tests/test_bench_realtime.py"
    ),
    documented_line(PERF, DISTILL_BENCH, "--configs tiny_teacher_forcing,tiny_consistency,tiny_decoder"): (
        "tests/test_bench_distill_stages.py"
    ),
    documented_line(
        PERF, DISTILL_BENCH, "--configs teacher_forcing_wan1.3b_480p,consistency_wan1.3b_480p", "--batch 1"
    ): ("tests/test_bench_distill_stages.py"),
    **{
        documented_line(
            "docs/dragstream.md", "assets/tiny-student/student", f"--settings {s}"
        ): "tests/test_drag_bench.py"
        for s in ("ours", "reference")
    },
    documented_line("docs/control.md", "--depth-model $DEPTH"): "tests/test_camera.py",
    **{
        documented_line("docs/causal-starts.md", f"hydra.run.dir=runs/{run}"): "tests/test_teacher_forcing.py"
        for run in ("tf", "cd", "dmd")
    },
    **{
        documented_line("docs/results.md", f"lab.ship_teacher {action}"): "tests/test_teacher_asset.py"
        for action in ("start", "export", "pack", "unpack")
    },
    documented_line("docs/embedded-world.md", "lab.ship_teacher start", "data.world.texture_scale=S"): (
        "tests/test_ship_teacher.py"
    ),
    **{
        line: "tests/test_teacher_study.py"
        for line in (
            documented_line("docs/teacher_study.md", "--recipes 8px-2L-17f,4px-2L-25f"),
            documented_line("docs/teacher_study.md", "--recipes 4px-4L-17f"),
            documented_line("docs/teacher_study.md", "--plot docs/teacher_study"),
            documented_line("docs/embedded-world.md", "lab.teacher_study", "--evals 4"),
            documented_line("docs/embedded-world.md", "lab.teacher_study", "--cost"),
            documented_line("docs/embedded-world.md", "lab.objects_study", "--measure"),
        )
    },
    **{
        documented_line("docs/causal-starts.md", "lab.causal_starts", word): "tests/test_causal_starts.py"
        for word in ("run", "score")
    },
    documented_line("docs/results.md", "lab.long_dmd run"): "tests/test_pipeline.py",
    documented_line("docs/evaluation.md", "data_config=$R/dmd/config.yaml"): "tests/test_pipeline.py",
    documented_line("docs/dragstream.md", "--student runs/make-run/dmd/export/student"): "tests/test_pipeline.py",
    documented_line("docs/results.md", "lab.student_chain ship"): "tests/test_pipeline.py",
    documented_line("docs/results.md", "lab.student_chain rl", "--run-dir RUN2"): "tests/test_pipeline.py",
    documented_line("docs/results.md", "run=RUN2/rl/export/student"): "tests/test_pipeline.py",
    documented_line("docs/results.md", "trackstream.eval.drag_bench", "--student RUN2/rl/export/student"): (
        "tests/test_pipeline.py"
    ),
    TINY_DECODER_STREAM: "tests/test_tiny_decoder.py",
    TINY_LORA: "tests/test_lora.py",
    **{line: "tests/test_real_path.py" for line in (*REAL_CHAIN.values(), REHEARSAL_RELEASE, FIRST_RUN, FIRST_COMMAND)},
    **{line: "tests/test_real_path_14b.py" for line in REAL_14B.values()},
    TINY_RL: "tests/test_distill_rl_distributed.py",
    DDP: "tests/test_train_distributed.py",
    SWEEP: "tests/test_slurm.py",
    TINY_TEACHER_LINE: "tests/conftest.py",
    EXPORT_DIFFUSERS: "tests/test_checkpoint_io.py",
    EXPORT_OFFICIAL: "tests/test_checkpoint_io.py",
    PIPELINE_EXPORT: "tests/test_diffusers_pipeline.py",
    MINILM: "tests/test_small_world.py",
    CHAIN_RL: "tests/test_pipeline.py",
    EVAL_RUN: "tests/test_eval_command.py",
    EVAL_RUNS: "tests/test_eval_command.py",
}
# what a line writes (its --out), by the file's name
OUTPUTS = ("cam.npy", "street.mp4", "robot_dance.mp4", "schedule.txt", "switched.mp4", "my-pipeline/model_index.json")
DEMO = ("docs/demo.md", "python -m trackstream.stream.demo")
LOAD = documented_line("docs/demo.md", "trackstream.stream.demo.load")  # run against DEMO
LOAD_SECONDS = 15  # the load test's length (real-time pacing, so its wall time), through TRACKSTREAM_ARGS


def _documented(page: str, text: str) -> bool:
    """Whether ``page`` shows ``text``: as a command the docs test extracts, or as a whole shell line."""
    if any(where.rsplit(":", 1)[0] == page and command == text for where, command in COMMANDS):
        return True
    return any(line.strip() == text for line in (ROOT / page).read_text().splitlines())


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
    missing = [f"{page}: {text}" for page, text in [*RUN, DEMO, LOAD, *ELSEWHERE] if not _documented(page, text)]
    assert not missing, f"no longer shown as written (update RUN / ELSEWHERE): {missing}"
    for line, test in ELSEWHERE.items():  # each is run by the test named beside it
        text = (ROOT / test).read_text()
        assert "run_documented(" in text or "shell_line(" in text, (line, test)  # the line as bash runs it


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


def _run_line(page: str, text: str, cwd: Path, env: dict, variables: dict | None = None, procs: int = 1):
    variables = {k: str(v) for k, v in (variables or {}).items()}
    cmd = ["/bin/bash", "-c", shell_line(page, text, variables)]
    env = {**env, **variables}
    if procs > 1:  # the line as the tasks of one Slurm step (srun -n procs LINE): each task's SLURM_* variables
        r = slurm_tasks(procs, cmd, check=False, timeout=600, env=env, cwd=cwd)
    else:
        r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{page}: `{text}` exited {r.returncode}\n{r.stdout[-1500:]}{r.stderr[-3000:]}"
    return r


def run_documented(
    line: tuple[str, str],
    cwd: Path,
    *overrides: str,
    args: tuple[str, ...] = (),
    variables: dict | None = None,
    procs: int = 1,
) -> subprocess.CompletedProcess:
    """A documented ``line`` (page, text) run verbatim by bash in ``cwd`` (a ``reader_folder`` or a test's own),
    ``overrides`` appended through ``TRACKSTREAM_OVERRIDES`` and ``args`` through ``TRACKSTREAM_ARGS`` (the
    documented ways to shrink a Hydra / an argparse command, trackstream/data/command_line.py); ``variables``: the
    shell variables the page sets before the line (``D=/data``, ``R=runs/...``), here the test's paths; ``procs``
    > 1: the line as that many tasks of one Slurm step. Exits 0."""
    assert _documented(*line), f"no longer shown as written: {line}"
    env = {**_path_env(), "TRACKSTREAM_OVERRIDES": " ".join(overrides), "TRACKSTREAM_ARGS": shlex.join(args)}
    return _run_line(*line, cwd, env, variables, procs)


@pytest.mark.slow
@pytest.mark.multiproc
def test_the_tours_commands_run_verbatim(folder):
    env = _path_env()
    for page, text in RUN:
        _run_line(page, text, folder, env)
    for name in OUTPUTS:
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, f"nothing wrote {name}"
    assert list(folder.glob("runs/debug/runs/*/export/teacher/network.json"))  # the smoke run's export, in its run dir


@pytest.mark.slow
@pytest.mark.multiproc
def test_the_documented_demo_serves_its_page_and_stops_on_ctrl_c(folder):
    """docs/demo.md's ``python -m trackstream.stream.demo`` as written: it serves the page and ``/health`` on
    127.0.0.1:8000 with the shipped student, holds the page's load test (``LOAD``: its default two sessions
    stream, a third is refused, bad messages are refused while the stream goes on), and Ctrl-C (SIGINT) ends it
    with status 0."""
    import signal
    import time
    import urllib.request

    where = ":".join(DEMO)
    proc = subprocess.Popen(
        words(DEMO[1]),
        cwd=folder,
        env=_path_env(),
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
    fps, chunk_frames = 16, 12
    for s in report["sessions"]:
        # real-time pacing: a session gets ~LOAD_SECONDS of video (paced 1 s ahead), and never less than half
        assert s["frames"] >= 0.5 * LOAD_SECONDS * fps, s
        assert s["chunks"] >= 0.5 * LOAD_SECONDS * fps / chunk_frames, s
        assert s["dropped"] == 0, s  # a client that keeps up loses nothing
        assert s["bytes_per_frame"] < 4000, s  # binary JPEG frames
    bad = report["sessions"][0]
    assert len(bad["errors"]) == bad["bad_sent"] == 9, bad["errors"]
    assert bad["frames_after_bad"] > 5 * chunk_frames, "the session stopped after the bad messages"
    assert report["refused"]["first"]["type"] == "busy" and report["refused"]["close_code"] == 1013
    assert report["after"]["frames"] > 0  # the slots are free again once the sessions left
    assert report["rss_mb"]["last"] - report["rss_mb"]["first"] < 300, report["rss_mb"]  # no growth per chunk
