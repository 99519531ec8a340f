"""docs/causal-starts.md's study as written (lab/causal_starts.py): the three starts of the causal student from
the shipped teacher, costed by their probes, each then DMD, and the score of the six students. Shrunk to a step
or two of each stage on 13-frame clips of a small pool, and one held-out clip streamed to twice the horizon."""

import json
from pathlib import Path

import pytest
from test_docs_run import documented_line, run_documented, setting

from lab.causal_starts import ARMS

ROOT = Path(__file__).resolve().parents[2]
RUN = documented_line("docs/causal-starts.md", "lab.causal_starts", "run")
SCORE = documented_line("docs/causal-starts.md", "lab.causal_starts", "score")
TINY = ("data.pool_size=4", "data.batch_size=1", "data.num_frames=13")
# a start's budget of under a second gives each arm a step or two; three probe steps, the first two warm-up
RUN_ARGS = (
    *("--minutes", "0.01", "--dmd-steps", "2", "--pairs", "2", "--teacher-steps", "3", "--dmd-threads", "1"),
    *("--probe-steps", "3"),
)
SCORE_ARGS = ("--clips", "1", "--long-clips", "1", "--long-factor", "2", "--eval-teacher-steps", "3")


@pytest.mark.slow
@pytest.mark.multiproc
def test_the_documented_causal_starts_run_and_score(tmp_path):
    (tmp_path / "lab").symlink_to(ROOT / "lab")
    run_documented(RUN, tmp_path, args=(*RUN_ARGS, *setting(*TINY)))
    plan = json.loads((tmp_path / "RUN" / "plan.json").read_text())
    assert plan["num_pairs"] == 2 and plan["teacher_steps"] == 3 and plan["dmd_steps"] == 2
    assert all(v > 0 for v in plan["seconds_per_step"].values()) and plan["pairs_seconds"] > 0
    done = {d: json.loads((tmp_path / "RUN" / d / "results.json").read_text()) for d in ("tf", "cd", "tf_dmd")}
    assert done["tf"]["step"] == plan["steps"]["tf"] and done["cd"]["step"] == plan["steps"]["cd"]
    assert done["tf_dmd"]["step"] == 2

    # score writes into the checkout's docs/causal_starts unless told otherwise: --doc after the line's own
    doc = tmp_path / "doc"
    run_documented(SCORE, tmp_path, args=(*SCORE_ARGS, "--doc", str(doc)))
    result = json.loads((doc / "causal_starts.json").read_text())
    assert list(result["students"]) == [*ARMS, *(f"{a}_dmd" for a in ARMS)] and result["long_factor"] == 2
    assert all(r["epe_with_tracks"] > 0 and r["long_psnr_drop"] is not None for r in result["students"].values())
    table = (doc / "causal_starts.md").read_text()
    assert "| 2x: PSNR drop |" in table and f"| tf | {plan['steps']['tf']} |" in table
    assert (doc / "causal_starts.png").stat().st_size > 0
