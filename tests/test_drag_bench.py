"""The drag benchmark end to end on a random tiny student: every row of the main set runs on an edit
and an animation scene, the figures are finite where defined, the undragged row is the reference
(RF 1, no background comparison with itself), the floors follow (the ground truth: PSNR inf, the tracker's own
ObjMC; it through the codec), and the table renders. docs/results.md's commands on the shipped
student run as written, cut to one scene and one row (options after the line's own)."""

import json
import math

import numpy as np
import pytest
import torch
from test_docs_run import documented_line, reader_folder, run_documented

from trackstream.data.trackers import build_tracker
from trackstream.eval.drag_bench import ROW_SETS, run_benchmark
from trackstream.eval.drag_scenes import make_scenes
from trackstream.eval.drag_table import FLOOR_ROWS, table
from trackstream.models.codecs import build_codec
from trackstream.models.streaming import StreamConfig
from trackstream.stream.engine import StreamingGenerator


@pytest.mark.slow
def test_the_main_rows_score_an_edit_and_an_animation(tmp_path, tiny_network):
    net = tiny_network(0).eval().requires_grad_(False)
    engine = StreamingGenerator(net, build_codec("tiny-ae", width=16, patch=4).eval(), config=StreamConfig(steps=2))
    scenes = [s for s in make_scenes(8, seed=3) if s.name in ("translate-animate-00", "rotate2d-edit-06")]
    assert {s.instruction.mode for s in scenes} == {"edit", "animate"}

    def encode(texts):
        g = torch.Generator().manual_seed(len(texts[0]))
        return torch.randn(1, 5, 24, generator=g), torch.tensor([5])

    (tmp_path / "videos").mkdir()
    res = run_benchmark(
        engine, encode, scenes, ROW_SETS["main"], tracker=build_tracker("lk"), out=tmp_path, progress=False
    )
    rows = res["rows"]
    assert list(rows) == [*ROW_SETS["main"], *FLOOR_ROWS]  # the floors after the rows that stream
    assert rows["no drag (I=0)"]["bg_psnr_undragged"] is None and rows["no drag (I=0)"]["rf"] == 1.0
    gt, codec = rows["ground truth"], rows["codec round trip"]
    assert gt["psnr_gt"] == math.inf and gt["ssim_gt"] == 1.0 and gt["rf"] is None and codec["rf"] is None
    assert math.isfinite(codec["psnr_gt"]) and all(math.isfinite(r["objmc"]) for r in (gt, codec))
    assert gt["point_error"] < rows["no drag (I=0)"]["point_error"]  # the tracker on the right answer: its floor
    for name in ROW_SETS["main"]:
        r = rows[name]
        assert r["scenes"] == 2 and all(math.isfinite(r[k]) for k in ("objmc", "point_error", "dai", "psnr_gt", "rf"))
        if name != "no drag (I=0)":
            assert r["bg_psnr_undragged"] > 0 and r["rf"] > 0
    per = res["scenes"]["native tracks"][0]
    assert len(per["entity_pred"]) == len(per["entity_gt"]) == 25 or len(per["entity_gt"]) == 13
    assert np.allclose(per["entity_gt"][0], per["entity_pred"][0])  # frame 0 is the query itself
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == len(ROW_SETS["main"])  # the rows that stream
    assert table(res).count("\n") == 2 + len(rows) + 3 + len(rows)  # the main table, then by kind
    assert set(rows["native tracks"]["objmc_by_kind"]) == {"translate", "rotate2d"}


def test_set_options_type_drag_config_fields_and_refuse_unknown_ones():
    from trackstream.eval.drag_bench import _config

    cfg = _config(["step_index=0", "lr=0.1", "adsr=false", "layers=0,1", "fixed_cutoff=none"], iterations=4, seed=0)
    assert (cfg.step_index, cfg.lr, cfg.adsr, cfg.layers, cfg.fixed_cutoff, cfg.iterations) == (
        0,
        0.1,
        False,
        (0, 1),
        None,
        4,
    )
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        _config(["learning_rate=1"])


@pytest.mark.slow
@pytest.mark.parametrize("settings", ["ours", "reference"])
def test_the_documented_runs_on_the_shipped_student(tmp_path, settings):
    folder = reader_folder(tmp_path)
    line = documented_line("docs/results.md", "assets/tiny-student/student", f"--settings {settings}")
    run_documented(line, folder, args=("--scenes", "1", "--rows", "native tracks"))
    metrics = json.loads((folder / f"runs/drag-bench/{settings}/metrics.json").read_text())
    assert (metrics["config"]["settings"], metrics["config"]["scenes"]) == (settings, 1)
    assert list(metrics["rows"]) == ["no drag (I=0)", "native tracks", *FLOOR_ROWS]  # the reference row, the one asked
    assert all(math.isfinite(r["objmc"]) for r in metrics["rows"].values())
    assert (folder / f"runs/drag-bench/{settings}/table.md").read_text().count("native tracks") == 2
