"""A sweep's summary (``train.app.SweepSummary``, wired in conf/hydra/default.yaml): after a multirun, one row per
point, its overrides and final figures, written beside multirun.yaml; a point that wrote nothing says so."""

import json
from pathlib import Path

import yaml

from trackstream.train.app import sweep_summary

ROOT = Path(__file__).resolve().parents[1]


def _point(sweep: Path, name: str, overrides: list[str], results: dict | None) -> None:
    (sweep / name / ".hydra").mkdir(parents=True)
    (sweep / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if results is not None:
        (sweep / name / "results.json").write_text(json.dumps(results))


def test_each_point_is_a_row_of_its_overrides_and_final_figures(tmp_path):
    (tmp_path / "multirun.yaml").write_text("{}")
    last = {"train/loss": 0.5, "train/loss/dit": 0.5, "train/grad_norm/dit": 3.0}
    _point(
        tmp_path,
        "10",
        ["optim.lr=1e-4"],
        {"status": "done", "step": 200, "epe_with_tracks": 6.25, "last_metrics": last},
    )
    _point(tmp_path, "2", ["optim.lr=2e-4"], {"status": "stopped", "reason": "non-finite loss"})
    _point(tmp_path, "3", ["optim.lr=4e-4"], None)  # killed before it wrote anything
    rows = sweep_summary(tmp_path)
    assert [r["point"] for r in rows] == ["2", "3", "10"]  # numeric order, as Hydra numbers the points
    assert rows[2] == {
        "point": "10", "overrides": "optim.lr=1e-4", "status": "done", "step": 200, "epe_with_tracks": 6.25,
        "train/loss": 0.5, "train/loss/dit": 0.5,
    }  # fmt: skip
    assert rows[0]["status"] == "stopped" and rows[1]["status"] == "missing"
    assert json.loads((tmp_path / "summary.json").read_text()) == rows
    table = (tmp_path / "summary.md").read_text().splitlines()
    assert table[2] == "| point | overrides | status | step | epe_with_tracks | train/loss | train/loss/dit |"
    assert table[-1] == "| 10 | optim.lr=1e-4 | done | 200 | 6.25 | 0.5 | 0.5 |"


def test_every_training_sweep_writes_it():
    hydra = yaml.safe_load((ROOT / "conf" / "hydra" / "default.yaml").read_text())
    assert hydra["callbacks"]["sweep_summary"]["_target_"] == "trackstream.train.app.SweepSummary"
