"""Two make run reports, figure for figure: ``python -m lab.report_diff A/report.json B/report.json`` prints how many
values the two hold alike and every one that differs (its path, both values), leaving out what a run's clock and
folder decide (each stage's record, the latency probe, every ``*seconds`` value). Exit status 0 when every figure is
equal, 1 when one differs: the check that a change to the code left make run's results as they were at the same
seeds (on one machine: another CPU may round differently)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# the run's own clock and folders: each stage's record (seconds, export paths), the chunk-latency probe
CLOCK_KEYS = frozenset({"stages", "latency", "latency_ratio_last_over_early", "total_seconds", "total_cpu_seconds"})


def _figures(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"{path}: no such report (give a make run directory's report.json)")
    report = json.loads(path.read_text())
    return report.get("figures", report)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def compare(a: dict, b: dict) -> tuple[int, list[tuple[str, object, object]]]:
    """(values alike, [(path, a's, b's) for each that differs]); a key one report lacks differs as ``<missing>``."""
    alike, differ = 0, []

    def walk(x, y, path: str) -> None:
        nonlocal alike
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y)):
                if (not path and key in CLOCK_KEYS) or key.endswith("seconds"):
                    continue
                sub = f"{path}/{key}" if path else key
                if key not in x or key not in y:
                    differ.append((sub, x.get(key, "<missing>"), y.get(key, "<missing>")))
                else:
                    walk(x[key], y[key], sub)
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{path}[{i}]")
        elif _same(x, y):
            alike += 1
        else:
            differ.append((path, x, y))

    walk(a, b, "")
    return alike, differ


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.report_diff", description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="a make run directory's report.json")
    ap.add_argument("b", type=Path, help="another's")
    args = ap.parse_args(argv)
    try:
        alike, differ = compare(_figures(args.a), _figures(args.b))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{alike} values alike, {len(differ)} differ (left out: each stage's record, the latency probe, *seconds)")
    for path, x, y in differ:
        print(f"  {path}: {x!r} -> {y!r}")
    return 0 if not differ else 1


if __name__ == "__main__":
    raise SystemExit(main())
