"""The placement table of released networks (lab.placement_table) and its targets (lab.targets)."""

import json
import shutil
from pathlib import Path

import pytest

from lab.splat_study import relabelled_release, summary
from lab.targets import judge

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_student_in_every_placement(tmp_path):
    from lab.placement_table import main

    out = tmp_path / "table"
    assert (
        main(
            [
                "--teacher",
                str(ROOT / "assets" / "tiny-teacher"),
                "--student",
                f"student={ROOT / 'assets' / 'tiny-student' / 'student'}",
                "--clips",
                "1",
                "--models",
                "student",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    fig = json.loads((out / "placements.json").read_text())
    rows = fig["models"]["student"]
    assert list(rows) == ["lattice", "shifted", "demo", "random", "sparse", "none"]
    assert fig["input_points"]["demo"] == 64 and fig["input_points"]["none"] == 0
    assert 0 < rows["lattice"]["epe_over_frozen"] < 1.5 and fig["floors"]["frozen"]["epe_over_frozen"] == 1
    assert "| student | sparse |" in (out / "placements.md").read_text() and (out / "strip_student.png").is_file()
    judged = judge(fig)  # the placement criteria, judged on the record as written
    assert {"student_shifted_over_lattice", "student_sparse_over_frozen", "student_none_late_texture"} <= set(judged)
    assert all(t["met"] in (True, False) for t in judged.values())


def test_a_relabelled_release_changes_only_the_splat(tmp_path):
    src = ROOT / "assets" / "tiny-teacher"
    dest = relabelled_release(src, tmp_path / "init", "nearest")
    meta = json.loads((dest / "teacher" / "network.json").read_text())
    assert meta["model"]["track_splat"] == "nearest" and not (dest / "manifest.json").exists()
    original = json.loads((src / "teacher" / "network.json").read_text())
    assert {k: v for k, v in meta["model"].items() if k != "track_splat"} == {
        k: v for k, v in original["model"].items() if k != "track_splat"
    }
    assert (dest / "codec.pt").read_bytes() == (src / "codec.pt").read_bytes()
    shutil.rmtree(dest)


def test_splat_summary_reads_each_arm_over_its_lattice():
    rows = {"lattice": {"epe_over_frozen": 0.4}, "shifted": {"epe_over_frozen": 0.6}}
    s = summary({"bilinear": {"models": {"teacher": rows}}})
    assert s["bilinear"]["shifted"]["over_lattice"] == pytest.approx(1.5)
