"""The tests' fork server runs a command as ``python`` would: its argv, directory, environment, streams, exit code,
a timeout that stops it with what it started, and the processes it launches with ``sys.executable``."""

import os
import subprocess
import sys
import time

import pytest

from conftest import cli_env, run_command

pytestmark = [
    pytest.mark.multiproc,
    pytest.mark.skipif(os.environ.get("TRACKSTREAM_TEST_FORK") == "0", reason="TRACKSTREAM_TEST_FORK=0: cold starts"),
]

PROBE = """
import json, os, sys
print(json.dumps(dict(argv=sys.argv, cwd=os.getcwd(), var=os.environ.get("PROBE_VAR"), path0=sys.path[0],
                      main=__name__, stdin=sys.stdin.read())))
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
"""


def test_a_command_gets_its_argv_directory_environment_streams_and_exit_code(tmp_path):
    import json

    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = cli_env(PROBE_VAR="seen", PROBE_EXIT="3")
    r = run_command([sys.executable, str(script), "a", "b"], cwd=tmp_path, env=env, input="fed", timeout=60)
    cold = subprocess.run([sys.executable, str(script), "a", "b"], cwd=tmp_path, env=env, input="fed",
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (r.returncode, r.stdout, r.stderr) == (cold.returncode, cold.stdout, cold.stderr)
    got = json.loads(r.stdout)
    assert got == dict(argv=[str(script), "a", "b"], cwd=str(tmp_path), var="seen", path0=str(tmp_path),
                       main="__main__", stdin="fed")  # fmt: skip
    assert r.returncode == 3 and r.stderr == "to stderr\n"


def test_an_uncaught_error_prints_its_traceback_and_exits_1():
    r = run_command([sys.executable, "-c", "raise ValueError('bad field')"], timeout=60)
    assert r.returncode == 1 and "ValueError: bad field" in r.stderr


def test_a_timeout_stops_the_command_and_what_it_started(tmp_path):
    marker = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(marker)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    with pytest.raises(subprocess.TimeoutExpired):
        run_command([sys.executable, "-c", code], timeout=5)
    pid = int(marker.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid), "the command's own child outlived its timeout"


def test_what_a_command_launches_with_sys_executable_runs_and_reports_its_exit_code():
    inner = "import sys; print('inner', sys.argv[1:]); sys.exit(4)"
    code = f"import subprocess, sys; r = subprocess.run([sys.executable, '-c', {inner!r}, 'x']); print('code', r.returncode)"
    r = run_command([sys.executable, "-c", code], timeout=60)
    assert r.returncode == 0 and r.stdout == "inner ['x']\ncode 4\n", r.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has ended
        return f.read().split(")")[-1].split()[0] != "Z"


def test_what_a_library_sets_in_the_test_process_does_not_reach_a_command(monkeypatch):
    """Importing sklearn in a test sets ``KMP_INIT_AT_FORK`` in the test process; the stages set the CUDA allocator's
    variable. A command launched after that gets the suite's environment (not a cold start for an import-time
    variable it never asked for); a variable a test sets on purpose still reaches it."""
    import conftest

    for name, value in (("KMP_INIT_AT_FORK", "FALSE"), ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")):
        if name not in conftest._START_ENV:
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("PROBE_VAR", "on purpose")
    env = cli_env()
    assert env["PROBE_VAR"] == "on purpose"
    assert all(env.get(k) == conftest._START_ENV.get(k) for k in ("KMP_INIT_AT_FORK", "PYTORCH_CUDA_ALLOC_CONF"))
    code = "import os; print(os.environ.get('KMP_INIT_AT_FORK'), os.environ.get('PROBE_VAR'))"
    r = run_command([sys.executable, "-c", code], env=env, timeout=60)
    assert r.stdout.split() == [str(conftest._START_ENV.get("KMP_INIT_AT_FORK")), "on", "purpose"]
