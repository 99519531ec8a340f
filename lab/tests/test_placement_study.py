"""The placement table of released networks (lab.placement_table) and its targets (lab.targets)."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from test_docs_run import documented_line, run_documented

from lab.mixture_study import parse_arm
from lab.splat_study import relabelled_release, summary
from lab.targets import judge

ROOT = Path(__file__).resolve().parents[2]
TABLE = documented_line("docs/placements.md", "lab.placement_table")
RESULTS_TABLE = documented_line("docs/results.md", "lab.placement_table", "runs/placements-shipped")  # TABLE's line
NO_TRACKS = documented_line("docs/results.md", "lab.placement_table", "none,sparse")
TARGETS = documented_line("docs/placements.md", "lab.targets runs/placements-shipped/placements.json")
STUDY = documented_line("docs/placements.md", "lab.splat_study run")
MIXTURE = documented_line("docs/placements.md", "lab.mixture_study run")


def _reader_folder(tmp_path: Path) -> Path:
    for name in ("lab", "assets"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def test_the_shipped_student_in_every_placement(tmp_path):
    """docs/placements.md's table line (one clip, the student only) and the targets judged on its record."""
    folder = _reader_folder(tmp_path)
    assert RESULTS_TABLE[1] == TABLE[1]
    run_documented(TABLE, folder, args=("--clips", "1", "--models", "student"))
    out = folder / "runs" / "placements-shipped"
    fig = json.loads((out / "placements.json").read_text())
    rows = fig["models"]["student"]
    assert list(rows) == ["lattice", "shifted", "demo", "random", "sparse", "none"]
    assert fig["input_points"]["demo"] == 64 and fig["input_points"]["none"] == 0
    assert 0 < rows["lattice"]["epe_over_frozen"] < 1.5 and fig["floors"]["frozen"]["epe_over_frozen"] == 1
    assert "| student | sparse |" in (out / "placements.md").read_text() and (out / "strip_student.png").is_file()
    judged = run_documented(TARGETS, folder).stdout
    for criterion in ("student_shifted_over_lattice", "student_sparse_over_frozen", "student_none_late_texture"):
        assert f"| {criterion} |" in judged
    assert all(t["met"] in (True, False) for t in judge(fig).values())


def test_the_no_tracks_line_shows_another_clips_motion_beside_the_networks(tmp_path):
    """docs/results.md's no-tracks line (two clips, the fewest another clip's motion needs; one teacher step)."""
    folder = _reader_folder(tmp_path)
    run_documented(NO_TRACKS, folder, args=("--clips", "2", "--teacher-steps", "1"))
    out = folder / "runs" / "placements-none"
    fig = json.loads((out / "placements.json").read_text())
    assert list(fig["floors"]) == ["ground_truth", "frozen", "other_motion"]
    assert fig["floors"]["other_motion"]["epe_over_frozen"] > fig["floors"]["ground_truth"]["epe_over_frozen"]
    assert {m: list(r) for m, r in fig["models"].items()} == {
        "teacher": ["none", "sparse"],
        "student": ["none", "sparse"],
    }
    assert "| *another clip's motion* |" in (out / "placements.md").read_text()


@pytest.mark.slow
def test_the_splat_study_line_runs_both_arms(tmp_path):
    """docs/placements.md's study line, a step an arm, one clip scored with one teacher step."""
    folder = _reader_folder(tmp_path)
    run_documented(STUDY, folder, args=("--steps", "1", "--clips", "1", "--teacher-steps", "1"))
    result = json.loads((folder / "runs" / "splat" / "splat_study.json").read_text())
    assert set(result["summary"]) == {"bilinear", "nearest"}
    for arm in ("bilinear", "nearest"):
        meta = json.loads((folder / "runs" / "splat" / arm / "export" / "teacher" / "network.json").read_text())
        assert meta["model"]["track_splat"] == arm
        assert set(result["summary"][arm]) == {"lattice", "shifted", "demo", "random", "sparse", "none"}


@pytest.mark.slow
def test_the_mixture_study_line_trains_each_arm_on_its_shares(tmp_path):
    """docs/placements.md's shares study line, a step an arm, one clip scored with one teacher step: each arm's run
    trains on its own shares (its resolved config), the summary reads every placement of both arms."""
    folder = _reader_folder(tmp_path)
    run_documented(MIXTURE, folder, args=("--steps", "1", "--clips", "1", "--teacher-steps", "1"))
    result = json.loads((folder / "runs" / "mixture" / "mixture_study.json").read_text())
    assert set(result["summary"]) == {"defaults", "sparse"}
    assert result["shares"]["sparse"]["none"] == pytest.approx(0.25) and result["shares"]["defaults"]["none"] < 0.25
    for arm, none in (("defaults", None), ("sparse", 0.25)):
        cfg = yaml.safe_load((folder / "runs" / "mixture" / arm / "config.yaml").read_text())
        assert cfg["data"]["placement"].get("none") == none, arm
        assert set(result["summary"][arm]) == {"lattice", "shifted", "demo", "random", "sparse", "none"}


def test_mixture_arms_parse_and_refuse_unknown_kinds():
    assert parse_arm("few=cluster:0.5,none:0.3") == ("few", {"cluster": 0.5, "none": 0.3})
    assert parse_arm("hold=hold_none:true") == ("hold", {"hold_none": True})
    with pytest.raises(ValueError, match="KIND one of"):
        parse_arm("bad=dots:0.5")


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
