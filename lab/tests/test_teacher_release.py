"""The shipped tiny teacher's release command reproduces it: docs/results.md's release commands as written
(``lab.ship_teacher`` start, then export, pack and unpack of that run) log the manifest's first codec losses, and
the recorded training command's first teacher steps log its first teacher losses (CPU determinism: same seeds,
same data, same two threads). The codec fit and the teacher are checked separately so neither needs the other's
full run: the codec's first 10 steps, in its warm-up (their learning rates do not depend on the fit's length), and
the teacher's first 2 steps (the second after an update) start from the shipped codec, which is the file that run
fitted. A fine-tuned release (``fine_tuned_from``) kept its base release's codec and started from its weights: the
base is taken from the git history, its codec losses checked by the commands above, the fine-tune's first teacher
steps run from its weights (``lab.splat_study init``'s start folder, as the fine-tune was run)."""

import json
from pathlib import Path

import pytest
from test_docs_run import documented_line, run_documented, setting
from test_teacher_asset import RECORDED_MODULES, _manifest

from conftest import THREADS
from lab.release_records import logged_losses, release_in_history
from lab.ship_teacher import ROOT
from lab.splat_study import relabelled_release
from trackstream.pipeline.releases import ASSET_DIR, verify_asset

TEACHER_STEPS = 2
CODEC_STEPS = 10  # of the 20 recorded: inside the warm-up too
RTOL = 1e-3  # relative; the same machine reproduces them exactly, another CPU model may round differently

# docs/results.md's release commands: start, export, pack, unpack
SHIP = {
    action: documented_line("docs/results.md", f"lab.ship_teacher {action}")
    for action in ("start", "export", "pack", "unpack")
}
QUIET = ("eval.enabled=false", "trainer.sample_every=0", "logger.progress_bar=false")  # no evaluation, no samples


def _run(run_module, tmp_path: Path, name: str, manifest: dict, overrides: list[str]) -> Path:
    run = tmp_path / name
    cmd = manifest["command"].split()
    # the manifest records the command as run at its commit (-m train, -m trackstream.train, -m trackstream.stages)
    assert cmd[:2] == ["python", "-m"] and cmd[2] in RECORDED_MODULES, manifest["command"]
    args = [a for a in cmd[3:] if not a.startswith(("hydra.run.dir=", "model.init_from="))]
    run_module(
        "trackstream.train",
        *args,
        *overrides,
        *QUIET,
        f"hydra.run.dir={run}",
        timeout=900,
    )
    return run


@pytest.mark.slow
def test_release_command_reproduces_the_first_losses(tmp_path, run_module):
    m = base = _manifest()
    start: list[str] = []
    if "fine_tuned_from" in m:  # the release that fitted the codec, and the weights the fine-tune started from
        _, base = release_in_history(ROOT, "assets/tiny-teacher", m["fine_tuned_from"]["release"], tmp_path / "git")
        assert base["sha256"]["codec.pt"] == m["sha256"]["codec.pt"]  # its base's codec, kept
        init = relabelled_release(tmp_path / "git" / "assets" / "tiny-teacher", tmp_path / "init-bilinear", "bilinear")
        start = [f"model.init_from={init / 'teacher'}"]
    # docs/results.md's release commands as written (RUN, NEW: the page's variables), the run shrunk to its
    # codec's first steps and one teacher step, the held-out clips of the export's floors to 2; the release
    # folder and the resume bundle written here, not over the checkout's
    shell = {"RUN": tmp_path / "codec", "NEW": tmp_path / "moved"}
    steps = (f"codec.fit.steps={CODEC_STEPS}", "data.eval_samples=2", *QUIET)
    session = ("--until", "1", "--threads", str(THREADS), *setting(*steps))  # this session's, not the recipe's
    run_documented(SHIP["start"], tmp_path, args=session, variables=shell)
    run_documented(SHIP["export"], tmp_path, args=("--dest", str(tmp_path / "asset")), variables=shell)
    exported = verify_asset(tmp_path / "asset")  # the manifest it wrote: every file's sha256, the first losses
    assert exported["first_losses"]["codec"] == pytest.approx(base["first_losses"]["codec"][:CODEC_STEPS], rel=RTOL)
    recipe = [a for a in base["command"].split()[3:] if not a.startswith("hydra.run.dir=")]
    run_dir = (tmp_path / "codec").resolve()  # as start records it
    assert exported["command"].split()[3:] == [*recipe, f"hydra.run.dir={run_dir}"]  # the shipped one's recipe
    assert exported["steps"] == 1 and exported["floors"]["epe_codec_round_trip"] > 0
    bundle = ("--tar", str(tmp_path / "resume.tar.gz"))
    run_documented(SHIP["pack"], tmp_path, args=bundle, variables=shell)
    run_documented(SHIP["unpack"], tmp_path, args=bundle, variables=shell)
    moved = tmp_path / "moved"  # what a start there resumes: the checkpoint, the fitted codec, the record
    assert (moved / "checkpoints" / "step_00000001" / "meta.pt").is_file()
    assert (moved / "codec" / "codec.pt").read_bytes() == (tmp_path / "asset" / "codec.pt").read_bytes()
    assert json.loads((moved / "release_run.json").read_text())["command"][4:-1] == recipe[1:]
    # the teacher's first TEACHER_STEPS of the 20 recorded: inside the warm-up, so the shorter run's learning
    # rates are the release run's
    teacher_run = _run(
        run_module,
        tmp_path,
        "teacher",
        m,
        [*start, f"codec.checkpoint={ASSET_DIR / 'codec.pt'}", f"trainer.max_steps={TEACHER_STEPS}"],
    )
    teacher = [v for _, v in logged_losses(teacher_run / "metrics.jsonl", limit=TEACHER_STEPS)]
    assert teacher == pytest.approx(m["first_losses"]["teacher"][:TEACHER_STEPS], rel=RTOL)
