"""pipeline.stage_runner: a stage's output goes to its console.log, its command to the pipeline log,
and a failure is one line naming the logs."""

import os
import sys

import pytest

from trackstream.pipeline.stage_runner import StageFailed, run_logged

CHILD = """
import json, pathlib, sys, time
d = pathlib.Path(sys.argv[1])
(d / "config.yaml").write_text("trainer:\\n  max_steps: 4\\n")
for s in range(1, 5):
    with open(d / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": s, "train/loss": 1.0 / s}) + "\\n")
    print("noisy child line", s, flush=True)
    time.sleep(0.05)
sys.exit(int(sys.argv[2]))
"""


def _run(tmp_path, code):
    stage = tmp_path / "stage"
    stage.mkdir(exist_ok=True)
    cmd = [sys.executable, "-c", CHILD, str(stage), str(code)]
    run_logged(
        cmd,
        stage_dir=stage,
        label="teacher",
        env=dict(os.environ),
        cwd=tmp_path,
        pipeline_log=tmp_path / "pipeline.log",
        show_bar=False,
        poll_s=0.02,
    )
    return stage


def test_output_goes_to_the_logs(tmp_path, capsys):
    stage = _run(tmp_path, 0)
    assert "noisy child line 4" in (stage / "console.log").read_text()
    assert "noisy child line" not in capsys.readouterr().out
    assert "teacher: $ " in (tmp_path / "pipeline.log").read_text()


def test_a_failure_is_one_line_naming_the_log(tmp_path):
    with pytest.raises(StageFailed) as err:
        _run(tmp_path, 3)
    msg = str(err.value)
    assert "\n" not in msg and "exit 3" in msg and "console.log" in msg and "noisy child line 4" in msg
