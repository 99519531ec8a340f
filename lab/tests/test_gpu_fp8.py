"""docs/performance.md's lent-machine fp8 call (``bash lab/gpu_fp8.sh $OUT``) rehearsed on CPU as that page writes
its rehearsal (REHEARSE: one block at 16 x 32 pixels; an fp8 run decodes in bf16, which a CPU without bf16
instructions runs ~70x slower than float32): every row of the script runs its real command and writes its JSON,
the realtime rows print their progress, and the log names each row. The limits are the device's; here they are
tripled (LIMIT_SCALE), since a CPU shared with other jobs compiles the rows slower (a CI run beside other load cut
the fp8 row at 300 s)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_fp8_call_runs_every_row_on_cpu(tmp_path):
    env = dict(
        os.environ,
        REHEARSE="--layers 1 --height 16 --width 32 --device cpu",
        PYTHON=sys.executable,
        OMP_NUM_THREADS="1",
        LIMIT_SCALE="3",
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", "lab/gpu_fp8.sh", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=2700
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {  # on CPU the plain row runs in float32 (the device's default precision), on a GPU in bf16
        "realtime_wan1.3b-480p-taehv_compiled_overlap_fp8_short.json": True,
        "realtime_wan1.3b-480p-taehv_compiled_overlap_short.json": False,
    }
    for name, fp8 in rows.items():
        result = json.loads((out / name).read_text())
        assert (result["meta"]["dtype"] == "float8_e4m3fn") == fp8, name
        (row,) = result["results"]
        assert "error" not in row and row["frames_per_s"] > 0 and row["breakdown"]["chunks"] == 4, name
    timing = json.loads((out / "generate_wan1.3b-480p-taehv_fp8.json").read_text())
    assert timing["meta"]["dtype"] == "float8_e4m3fn" and timing["meta"]["compile"]
    assert timing["generate"]["rc"] == 0 and timing["generate"]["frames_per_s"] > 0
    log = (out / "calls.log").read_text()
    assert log.count("=== ") == 2 * 3 and "[realtime] wan1.3b-480p-taehv: student and codec built" in log
    assert "[realtime] wan1.3b-480p-taehv compiled: warm-up request of 20 chunks" in log
