"""lab.suite_cost: the suite's two CPU logs added up per file and per test, from a real (one-test) run of the suite."""

import json
import os
import subprocess
import sys

import pytest
from test_docs_run import documented_line, run_documented

from conftest import ROOT, cli_env
from lab import suite_cost

SUITE_COST = documented_line("docs/results.md", "lab.suite_cost")

CPU = [
    {"test": "tests/test_a.py::test_x[1]", "cpu": 1.0, "children": 0.5, "wall": 2.0},
    {"test": "tests/test_a.py::test_x[2]", "cpu": 2.0, "children": 0.0, "wall": 2.0},
    {"test": "tests/test_b.py::test_y", "cpu": 0.25, "children": 0.0, "wall": 9.0},
]
FORK = [
    {"test": "tests/test_b.py::test_y (call)", "argv": ["-m", "trackstream.train"], "cpu": 6.0, "wall": 7.0},
    {"test": "tests/test_b.py::test_y (setup)", "argv": ["-m", "trackstream.train"], "cpu": 3.0, "wall": 3.0},
    {"test": "tests/test_a.py::test_x[2] (call)", "argv": ["-c", "pass"], "cpu": 0.5, "wall": 0.5},
    {"test": None, "argv": ["-c", "pass"], "cpu": 0.0, "wall": 0.1},  # the fork server's own, outside any test
]


def test_the_logs_add_up_per_test_file_and_function():
    per = suite_cost.costs(CPU, FORK)
    assert per["tests/test_b.py::test_y"] == {"own": 0.25, "commands": 9.0, "children": 0.0, "n_commands": 2}
    files = suite_cost.grouped(per, suite_cost._file)
    assert files["tests/test_a.py"]["own"] == 3.0 and files["tests/test_a.py"]["commands"] == 0.5
    text = suite_cost.report(per, cores=2)
    assert text.startswith("3 tests, 13 CPU seconds: 3 in the test processes, 10 in 4 commands, 0 in other")
    assert "(7 s of wall time on 2 busy cores)" in text.splitlines()[0]
    # the heaviest first; the parametrised cases of a test are one row
    assert text.index("| `tests/test_b.py` | 9.2 |") < text.index("| `tests/test_a.py` | 4.0 |")
    assert "| `tests/test_a.py::test_x` | 4.0 | 30.2 | 3.0 | 0.5 (1) | 0.5 |" in text


def test_a_missing_log_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "cpu.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CPU))
    with pytest.raises(
        SystemExit, match=r"error: .*fork.jsonl: no such log \(start the suite with TRACKSTREAM_TEST_FORK_LOG"
    ):
        suite_cost.main([str(tmp_path / "cpu.jsonl"), str(tmp_path / "fork.jsonl")])


@pytest.mark.slow
def test_a_run_of_the_suite_writes_both_logs(tmp_path):
    cpu, fork = tmp_path / "cpu.jsonl", tmp_path / "fork.jsonl"
    one = "tests/test_forkserver.py::test_a_command_gets_its_argv_directory_environment_streams_and_exit_code"
    env = cli_env(TRACKSTREAM_TEST_CPU_LOG=str(cpu), TRACKSTREAM_TEST_FORK_LOG=str(fork))
    (
        env.pop("PYTEST_XDIST_WORKER", None),
        env.pop("PYTEST_XDIST_WORKER_COUNT", None),
        env.pop("PYTEST_CURRENT_TEST", None),
    )
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", one], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert [json.loads(line)["test"] for line in cpu.read_text().splitlines()] == [one]
    out = run_documented(SUITE_COST, tmp_path, args=("--json", "sums.json")).stdout  # docs/results.md's line
    assert out.startswith("1 tests, ") and "`tests/test_forkserver.py`" in out
    sums = json.loads((tmp_path / "sums.json").read_text())
    assert sums["tests"][one]["n_commands"] >= 1 and sums["tests"][one]["commands"] > 0
    assert os.path.isfile(fork)
