"""The small world's one device command (docs/small-world.md's ``python -m lab.small_world_call`` line, run as
written with shrinking options appended: 2 layers x 32, a few steps, a 2-minute budget, scoring on 2 clips):
every stage runs within its own budget, the teacher (given far more steps than its budget holds) is stopped at
its deadline and exported from its checkpoint, the later stages start from it and finish, and the output folder
holds what one device call brings back (<= 8 files of <= 16 MiB): the call's summary, the curves, the shipped
release's pieces, which join into a release whose student streams."""

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from docs_lines import ONESHOT
from test_docs_run import run_documented

from lab.small_world_oneshot import SHARES
from lab.small_world_ship import unpack_release

SHRINK = [
    *("--set", "debug=tiny", "--set", "model.overrides.dim=32", "--set", "model.overrides.ffn_dim=64"),
    *(
        "--set",
        "model.overrides.num_layers=2",
        "--set",
        "model.overrides.num_heads=1",
        "--set",
        "model.track_channels=8",
    ),
    *("--set", "trainer.num_threads=1"),
    *("--stage-set", "teacher:trainer.max_steps=100000", "--stage-set", "teacher:eval.periodic_clips=0"),
    *("--stage-set", "ode_init:stage.ode_pairs.num_pairs=4", "--stage-set", "ode_init:stage.ode_pairs.teacher_steps=3"),
    *("--stage-set", "ode_init:stage.ode_pairs.batch_size=2", "--stage-set", "ode_init:trainer.max_steps=4"),
    *(
        "--stage-set",
        "dmd:trainer.max_steps=5",
        "--stage-set",
        "rl:data.batch_size=1",
        "--stage-set",
        "rl:stage.group_size=2",
    ),
    *("--clips", "2", "--long-clips", "1", "--long-factor", "2", "--device", "cpu", "--dtype", "float32"),
]
ROOT = Path(__file__).resolve().parents[2]
# Two minutes: on an idle machine the stages after the teacher use about half of their shares; a loaded CI machine
# (both cores busy with other tests) needs the rest.
BUDGET = ("--budget-min", "2", "--finish-s", "6", "--grace-s", "15", "--min-stage-s", "2", "--pack-reserve-s", "4")


@pytest.mark.slow
def test_the_one_device_command_trains_every_stage_in_its_budget_and_packs_a_release_that_streams(tmp_path):
    (tmp_path / "lab").symlink_to(ROOT / "lab")  # the repository root's layout: lab/ beside the run folder
    out = tmp_path / "out"
    run_documented(ONESHOT, tmp_path, args=(*SHRINK, *BUDGET), variables={"OUT": out, "OMP_NUM_THREADS": 1})
    summary = json.loads((out / "oneshot.json").read_text())
    plan, stages = summary["plan_s"], summary["stages"]
    assert list(plan) == list(SHARES) and sum(plan.values()) <= 120 - 4 + 0.5
    teacher = stages["teacher"]
    assert teacher["status"] == "stopped at budget, exported" and teacher["stopped_at"] > 0
    assert teacher["seconds"] <= plan["teacher"] + 15  # its budget, the grace for a step in flight
    assert [stages[s]["status"] for s in ("ode_init", "dmd", "rl", "ship")] == ["done"] * 4
    assert summary["seconds"] <= 120 + 15 and summary["device"].startswith("cpu")
    assert {"teacher_epe_with_over_without", "dmd_epe_over_teacher"} <= set(stages["ship"]["targets"])

    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert all(p.parent == out for p in files) and len(files) <= 8
    assert all(p.stat().st_size <= 16 * 2**20 for p in files)
    assert {"oneshot.json", "logs.tar.gz", "oneshot.log", "release.json", "release-000.part"} <= {p.name for p in files}
    with tarfile.open(out / "logs.tar.gz") as tar:  # the curves of every stage
        names = set(tar.getnames())
    assert {f"{s}/metrics.jsonl" for s in ("teacher", "ode_init", "dmd", "rl")} | {"teacher/eval.json"} <= names
    assert "[small_world] ship: done" in (out / "oneshot.log").read_text()

    release = tmp_path / "small-world"
    manifest = unpack_release([out], release)  # the pieces join and check against the manifest
    assert manifest["steps"]["teacher"] == teacher["stopped_at"]
    from trackstream.stream.demo.limits import Limits
    from trackstream.stream.demo.protocol import Start
    from trackstream.stream.demo.session import DemoModel, Session

    model = DemoModel(release / "student", num_scenes=1, device="cpu", dtype="float32")  # its codec.pt beside it
    session = Session(model, Limits(max_points=8), seed=0)  # the demo streams the shipped student
    session.start(Start(scene=0))
    frames = session.next_chunk().frames
    assert frames.shape == (model.chunk_frames, model.height, model.width, 3) and np.isfinite(frames).all()
