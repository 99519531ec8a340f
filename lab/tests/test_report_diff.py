"""lab.report_diff: two make run reports compared figure for figure, the run's clock and folders left out."""

import copy
import json

from lab.report_diff import main

REPORT = {
    "figures": {
        "teacher_epe_with_tracks": 6.3856,
        "student_per_sample": {"with_tracks": [7.6, 6.0, float("nan")]},
        "placements": {"seconds": 44.3, "rows": [{"placement": "lattice", "epe": 6.04}]},
        "teacher_eval_seconds": 387.4,
        "latency": {"per_chunk_seconds": [0.03, 0.2], "latency_ratio_last_over_early": 0.99},
        "latency_ratio_last_over_early": 0.99,
        "stages": {"dmd": {"seconds": 144.2, "export": "/work/runs/mr/dmd/export/student"}},
        "total_seconds": 1091.6,
    }
}


def _write(path, report):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))
    return str(path)


def test_the_same_figures_at_other_timings_and_folders_are_equal(tmp_path, capsys):
    again = copy.deepcopy(REPORT)
    f = again["figures"]
    f["placements"]["seconds"], f["teacher_eval_seconds"], f["total_seconds"] = 37.5, 342.1, 957.1
    f["latency"]["per_chunk_seconds"][1], f["latency_ratio_last_over_early"] = 0.26, 1.02
    f["stages"]["dmd"] = {"seconds": 121.2, "export": "/work/runs/mr2/dmd/export/student"}
    assert main([_write(tmp_path / "a/report.json", REPORT), _write(tmp_path / "b/report.json", again)]) == 0
    assert capsys.readouterr().out.startswith("6 values alike, 0 differ")  # NaN equals NaN here


def test_a_changed_or_missing_figure_is_named_with_both_values(tmp_path, capsys):
    changed = copy.deepcopy(REPORT)
    changed["figures"]["placements"]["rows"][0]["epe"] = 6.05
    del changed["figures"]["teacher_epe_with_tracks"]
    assert main([_write(tmp_path / "a/report.json", REPORT), _write(tmp_path / "b/report.json", changed)]) == 1
    out = capsys.readouterr().out
    assert "placements/rows[0]/epe: 6.04 -> 6.05" in out and "teacher_epe_with_tracks: 6.3856 -> '<missing>'" in out


def test_a_missing_report_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nothing.json"), str(tmp_path / "nothing.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such report" in err[0]
