"""Where a test suite's CPU goes: ``python -m lab.suite_cost CPU_LOG FORK_LOG`` adds up the two logs a run of a suite
writes when started with ``TRACKSTREAM_TEST_CPU_LOG=CPU_LOG TRACKSTREAM_TEST_FORK_LOG=FORK_LOG`` (conftest.py: each
test's CPU in its own process; tests/forkserver.py: each command a test ran, with its CPU) and prints, per test file
and per test, the CPU seconds of the test process, of the commands it ran, and of the other processes it reaped.

On a machine whose cores are all busy through the run (the suite is compute-bound: `/usr/bin/time make test` shows
it), the wall time is about the total over the number of cores, so these seconds are what a cut would save.
``--json OUT`` writes the sums as well; ``--top N`` (default 25) tests are listed, their parametrised cases together;
``--cores`` (this machine's) turns the total into a wall-time estimate.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

from trackstream.eval.tables import markdown_table

PARTS = ("own", "commands", "children")
NO_TEST = "(no test)"  # a command started outside any test (the fork server's own)


def _lines(path: Path, field: str) -> list[dict]:
    if not path.is_file():
        raise ValueError(f"{path}: no such log (start the suite with {field}={path})")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path}: empty (was the suite started with {field}={path}?)")
    return rows


def _test_of(name: str | None) -> str:
    """A fork-log ``test`` (``PYTEST_CURRENT_TEST``: ``path::name[case] (call)``) as a CPU-log node id."""
    return (name or NO_TEST).rsplit(" (", 1)[0]


def costs(cpu_log: list[dict], fork_log: list[dict]) -> dict[str, dict[str, float]]:
    """Per test node id: ``own`` (its process), ``commands`` (the fork server's commands it ran, their number in
    ``n_commands``), ``children`` (other processes it reaped)."""
    per: dict[str, Counter] = {}
    for row in cpu_log:
        c = per.setdefault(row["test"], Counter())
        c["own"] += row["cpu"]
        c["children"] += row.get("children", 0.0)
    for row in fork_log:
        c = per.setdefault(_test_of(row.get("test")), Counter())
        c["commands"] += row["cpu"]
        c["n_commands"] += 1
    return {t: {k: c[k] for k in (*PARTS, "n_commands")} for t, c in per.items()}


def grouped(per_test: dict[str, dict[str, float]], key) -> dict[str, dict[str, float]]:
    out: dict[str, Counter] = {}
    for test, c in per_test.items():
        out.setdefault(key(test), Counter()).update(c)
    return {k: dict(v) for k, v in out.items()}


def _file(test: str) -> str:
    return test.split("::")[0]


def _function(test: str) -> str:
    return test.split("[")[0]


def _rows(groups: dict[str, dict[str, float]], total: float, limit: int | None) -> list[list[str]]:
    ranked = sorted(groups.items(), key=lambda kv: -sum(kv[1].get(p, 0.0) for p in PARTS))[:limit]
    rows = []
    for name, c in ranked:
        cpu = sum(c.get(p, 0.0) for p in PARTS)
        rows.append([f"`{name}`", f"{cpu:.1f}", f"{100 * cpu / total:.1f}", f"{c.get('own', 0.0):.1f}",
                     f"{c.get('commands', 0.0):.1f} ({int(c.get('n_commands', 0))})", f"{c.get('children', 0.0):.1f}"])  # fmt: skip
    return rows


def report(per_test: dict[str, dict[str, float]], top: int = 25, files: int = 25, cores: int = 2) -> str:
    sums = {p: sum(c[p] for c in per_test.values()) for p in (*PARTS, "n_commands")}
    total = sum(sums[p] for p in PARTS)
    head = ["", "CPU s", "%", "test process", "commands (n)", "other children"]
    lines = [
        f"{sum(t != NO_TEST for t in per_test)} tests, {total:.0f} CPU seconds: {sums['own']:.0f} in the test processes, "
        f"{sums['commands']:.0f} in {int(sums['n_commands'])} commands, {sums['children']:.0f} in other processes "
        f"they reaped ({total / cores:.0f} s of wall time on {cores} busy cores)",
        "",
        *markdown_table(["file", *head[1:]], _rows(grouped(per_test, _file), total, files), align="lrrrrr"),
        "",
        *markdown_table(["test", *head[1:]], _rows(grouped(per_test, _function), total, top), align="lrrrrr"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lab.suite_cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("cpu_log", type=Path, help="TRACKSTREAM_TEST_CPU_LOG of the run")
    ap.add_argument("fork_log", type=Path, help="TRACKSTREAM_TEST_FORK_LOG of the same run")
    ap.add_argument("--top", type=int, default=25, help="tests listed (their cases together)")
    ap.add_argument("--files", type=int, default=25, help="test files listed")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="the machine's cores (wall estimate)")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-file and per-test sums here")
    args = ap.parse_args(argv)
    try:
        per_test = costs(
            _lines(args.cpu_log, "TRACKSTREAM_TEST_CPU_LOG"), _lines(args.fork_log, "TRACKSTREAM_TEST_FORK_LOG")
        )
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    print(report(per_test, args.top, args.files, args.cores))
    if args.json:
        args.json.write_text(json.dumps({"files": grouped(per_test, _file), "tests": per_test}, indent=1) + "\n")


if __name__ == "__main__":
    main()
