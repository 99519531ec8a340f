"""The end-to-end report: report.json / report.md / plots state the figures beside the floors; the project's
targets (lab/targets.py) are judged from them (met, missed, not measured); plus the streaming evaluation
helpers."""

import json

import numpy as np
import pytest

import trackstream.pipeline.report as report
from lab.targets import main as targets_main
from lab.targets import targets
from trackstream.eval.scorebook import input_tracks
from trackstream.eval.stream_scoring import drift_summary, stream_nfe
from trackstream.models.streaming import StreamConfig
from trackstream.pipeline.report import write_report
from trackstream.pipeline.report_plots import curve_keys


def _figures(**over):
    f = {
        "teacher_epe_with_tracks": 1.5,
        "teacher_epe_without_tracks": 6.0,
        "student_epe_with_tracks": 1.8,
        "student_epe_without_tracks": 6.0,
        "epe_frozen_video": 5.0,
        "teacher_psnr_with_tracks": 22.0,
        "student_psnr_with_tracks": 21.0,
        "psnr_frozen_video": 18.0,
        "teacher_ssim_with_tracks": 0.6,
        "student_ssim_with_tracks": 0.55,
        "ssim_frozen_video": 0.4,
        "teacher_nfe_per_video": 144,
        "student_nfe_per_video": 3.571,
        "total_seconds": 600.0,
        "latency_ratio_last_over_early": 1.01,
        "drift": {
            tag: {
                "config": tag,
                "per_chunk": {
                    "latent_err": [1.0, 1.1, 1.2, 1.3],
                    "psnr": [20, 19, 19, 18],
                    "latent_rms": [1, 1, 1, 1],
                    "latent_err_rel": [0.4, 0.5, 0.6, 0.9],
                },
                "summary": {
                    "latent_err": {"early": 1.0, "late": 1.2, "late_over_early": 1.2, "max": 1.3, "min": 1.0},
                    "latent_err_rel": {
                        "early": 0.45,
                        "late": late,
                        "late_over_early": late / 0.45,
                        "max": 0.9,
                        "min": 0.4,
                    },
                },
            }
            for tag, late in (("with_sink", 0.75), ("without_sink", 0.95))
        },
        "floors": {
            "epe_ground_truth": 0.4,
            "epe_codec_round_trip": 0.6,
            "epe_oracle_copier": 0.9,
            "epe_frozen_frame": 5.0,
            "psnr_codec_round_trip": 31.0,
            "lost_at_group_start_codec_round_trip": 0.02,
            "lost_inside_group_codec_round_trip": 0.015,
        },
        "teacher_lost_at_group_start_with_tracks": 0.03,
        "teacher_lost_inside_group_with_tracks": 0.02,
        "ode_init_epe_with_tracks": 2.0,
        "ode_init_psnr_with_tracks": 20.0,
        "long_horizon": {
            "student": {
                "panning_with_sink": {
                    "windows": {"1x": {"energy": 1.0}, "4x": {"energy": 1.1}, "10x": {"energy": 0.9}}
                },
                "knowable_with_sink": {
                    "windows": {"1x": {"psnr": 22.0, "energy": 1.0, "epe": 1.0}, "10x": {"psnr": 21.0, "epe": 1.5}}
                },
                "knowable_without_sink": {"windows": {"1x": {"psnr": 18.0}, "10x": {"psnr": 12.0}}},
            },
            "ode_init": {
                "knowable_with_sink": {"windows": {"1x": {"psnr": 21.0, "epe": 1.2}, "10x": {"psnr": 20.0, "epe": 1.6}}}
            },
        },
    }
    f.update(over)
    return f


@pytest.fixture
def no_plots(monkeypatch):
    """For the tests that read report.md's sentences only: the plots (matplotlib, most of write_report's time)
    are left out; test_write_report_writes_json_markdown_and_plots and the RL test draw them."""
    monkeypatch.setattr(report, "write_plots", lambda *args, **kwargs: [])


def test_targets_are_judged_from_the_figures():
    t = targets(_figures())
    assert all(v["met"] is True for v in t.values()), {k: v for k, v in t.items() if v["met"] is not True}
    assert t["nfe_reduction"]["value"] == pytest.approx(144 / 3.571)
    assert t["teacher_with_over_without"]["value"] == pytest.approx(1.5 / 6.0)
    bad = targets(_figures(student_epe_with_tracks=2.3, latency_ratio_last_over_early=1.2, student_nfe_per_video=9.0))
    assert bad["student_vs_teacher_epe"]["met"] is False and bad["latency_flat"]["met"] is False
    assert bad["nfe_reduction"]["met"] is False and bad["student_with_over_without"]["met"] is True
    drifted = _figures()
    drifted["drift"]["with_sink"]["summary"]["latent_err_rel"]["late"] = 1.4  # past an unrelated video's error
    assert targets(drifted)["drift_bounded_with_sink"]["met"] is False
    assert targets(drifted)["drift_lower_with_sink"]["met"] is False
    assert (
        targets(_figures(floors={"epe_codec_round_trip": 1.0, "epe_frozen_frame": 5.0}))["codec_floor"]["met"] is False
    )
    lost = targets(_figures(teacher_lost_at_group_start_with_tracks=0.27, teacher_lost_inside_group_with_tracks=0.02))
    assert lost["teacher_carries_content"]["met"] is False
    long = _figures()
    long["long_horizon"]["student"]["panning_with_sink"]["windows"]["10x"]["energy"] = 1.7  # a drifting student
    long["long_horizon"]["student"]["knowable_with_sink"]["windows"]["10x"]["psnr"] = 19.0
    t = targets(long)
    assert t["long_energy_max"]["met"] is False and t["long_energy_min"]["met"] is True
    assert t["long_psnr_holds"]["value"] == pytest.approx(3.0) and t["long_psnr_holds"]["met"] is False
    assert t["long_sink_matters"]["value"] == pytest.approx(7.0) and t["long_sink_matters"]["met"] is True
    # DMD (the evaluated student here) against its ODE init: a gain at the horizon, none worse at 10x
    assert t["dmd_gains_over_ode_init"]["value"] == 2 and t["dmd_gains_over_ode_init"]["met"] is True
    assert t["dmd_not_worse_long"]["value"] == 1 and t["dmd_not_worse_long"]["met"] is False  # PSNR 19 < 20
    chain = _figures(dmd_epe_with_tracks=2.5, dmd_psnr_with_tracks=19.0, student_stage="rl")
    chain["long_horizon"]["dmd"] = chain["long_horizon"].pop("student") | {}
    chain["long_horizon"]["student"] = chain["long_horizon"]["dmd"]
    t = targets(chain)  # the chain's DMD row is judged, not the RL student's
    assert t["dmd_gains_over_ode_init"]["value"] == 0 and t["dmd_gains_over_ode_init"]["met"] is False
    missing = targets({"teacher_epe_with_tracks": 2.0})
    assert missing["student_vs_teacher_epe"]["met"] is None and missing["drift_bounded_with_sink"]["met"] is None
    assert missing["codec_floor"]["met"] is None and "long_psnr_holds" not in missing
    assert "dmd_gains_over_ode_init" not in missing and "dmd_not_worse_long" not in missing


def test_a_motion_target_must_beat_the_frozen_frame():
    # a small ratio because the video WITHOUT tracks is awful, while WITH tracks is worse than not moving
    t = targets(_figures(teacher_epe_with_tracks=5.5, teacher_epe_without_tracks=30.0))
    assert t["teacher_with_over_without"]["value"] < 0.3 and t["teacher_with_over_without"]["met"] is False
    # the student's ratio to a teacher that is worse than a frozen frame does not count either
    t = targets(
        _figures(
            student_epe_with_tracks=5.2,
            teacher_epe_with_tracks=4.8,
            teacher_epe_without_tracks=20.0,
            student_epe_without_tracks=20.0,
        )
    )
    assert t["student_vs_teacher_epe"]["value"] < 1.3 and t["student_vs_teacher_epe"]["met"] is False
    assert all(set(v) == {"value", "threshold", "met", "role", "note"} for v in t.values())


@pytest.mark.slow
def test_write_report_writes_json_markdown_and_plots(tmp_path):
    f = _figures(
        latency={
            "per_chunk_seconds": [0.01] * 6,
            "early_chunk": 3,
            "last_chunk": 5,
            "retimed_early_s": 0.01,
            "retimed_last_s": 0.0101,
            "latency_ratio_last_over_early": 1.01,
            "in_stream_ratio_last5_over_early5": 1.0,
            "cache_frames_last": 4,
            "cache_bytes_last": 10,
        },
        stages={"teacher": {"status": "done", "seconds": 1.0}},
        eval_world={"height": 64, "pan_speed": [0.3, 0.5]},
        num_heldout=16,
        side_by_side=[
            {
                "id": "c0",
                "mp4": "samples/c0/side_by_side.mp4",
                "gif": "samples/c0/side_by_side.gif",
                "panels": ["ground truth", "teacher", "student"],
            }
        ],
    )
    metrics = {
        "teacher (shipped)": [{"step": 25 * i, "train/loss": 2.0 / i} for i in range(1, 5)],
        "dmd": [{"step": i, "train/loss/generator": 1.0 / i, "train/loss/critic": 2.0} for i in range(1, 5)],
    }
    write_report(tmp_path, f, metrics=metrics)
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep == json.loads(json.dumps(f))  # the figures, as measured: nothing judged
    md = (tmp_path / "report.md").read_text()
    for png in ("epe.png", "drift.png", "latency.png", "training.png"):
        assert (tmp_path / png).is_file() and f"]({png})" in md
    # the ratios beside the floors' (their EPE over the frozen frame's), no threshold, no verdict
    assert "| student EPE with tracks / teacher's | 1.200 |  | evaluated student |" in md
    assert (
        "| teacher EPE with tracks / frozen first frame's | 0.300 | ground truth 0.080, codec round trip 0.120, " in md
    )
    assert "| *frozen first frame (ignores motion)* | 5.000 | |" in md
    assert "threshold" not in md and "target" not in md.lower() and "met" not in md.split()
    assert (
        "| the horizon | EPE (px) | 1.800 | 2.000 |" in md and "| 10x the horizon | PSNR (dB) | 21.000 | 20.000 |" in md
    )
    assert "through the codec (round trip: the floor of any generator here)* | 0.600 | | 31.000 |  | 2.0 / 1.5 |" in md
    assert "| knowable with sink | 10x | 21.000 |" in md and "| teacher (joint guidance) | 1.500 |" in md
    assert "strict" not in md and "`eval.metrics.motion_epe` with `lk_plain`" in md
    assert "![c0](samples/c0/side_by_side.gif)" in md and "`pan_speed` [0.3, 0.5]" in md


def test_nfe_counts_and_drift_summary():
    cfg = StreamConfig(steps=3)
    nfe = stream_nfe(cfg, 7)  # first frame + 2 chunks of 3
    assert nfe == {"calls": 1 + 2 * 4, "video_equivalent": (1 + 2 * 3 * 4) / 7, "chunks": 3}
    s = drift_summary({"psnr": [20.0, 22.0, 19.0, 18.0, 17.0, 16.0]}, horizon_chunks=2, tail=3)
    assert s["psnr"]["early"] == 21.0 and s["psnr"]["late"] == 17.0 and s["psnr"]["late_over_early"] == 17.0 / 21.0


def test_input_tracks_keep_points_visible_in_frame_zero():
    vis = np.array([[True, False, True], [True, True, False]])
    tracks = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    tr, vi, counts = input_tracks([{"tracks": tracks, "visibility": vis}])
    assert counts == [2] and tr.shape == (1, 2, 2, 2)
    assert tr[0, :, 1].tolist() == tracks[:, 2].tolist() and vi[0, :, 1].tolist() == [True, False]


@pytest.mark.parametrize(
    "with_tracks, verdict",
    [
        (1.5, "follows the tracks better than ignoring them (with / without = 0.25, with tracks / frozen = 0.23)."),
        (5.0, "follows the tracks better than ignoring them (with / without = 0.83, with tracks / frozen = 0.77)."),
        (7.0, "does NOT follow the tracks"),
    ],
)
def test_report_says_how_well_the_teacher_follows_the_tracks(tmp_path, with_tracks, verdict, no_plots):
    write_report(tmp_path, _figures(teacher_epe_with_tracks=with_tracks, epe_frozen_video=6.5))
    md = (tmp_path / "report.md").read_text()
    assert verdict in md and "The ground truth through the codec gives 0.12 of the frozen frame's EPE" in md


@pytest.mark.slow
def test_lab_targets_judges_a_written_report(tmp_path, capsys):
    """``python -m lab.targets RUN_DIR/report.json``: the criteria from the figures report.json holds (a figure
    it wrote as null is not measured), the same as from the figures in memory."""
    f = _figures()
    f["long_horizon"]["student"]["knowable_with_sink"]["windows"]["10x"]["psnr"] = float("nan")
    write_report(tmp_path, f)
    assert targets_main([str(tmp_path / "report.json")]) == 0
    out = capsys.readouterr().out
    assert "| nfe_reduction | target | 40.325 | 20.000 | yes |" in out and "| total_time | target | 600.000 |" in out
    assert "| long_psnr_holds | target | nan | 1.500 | not measured |" in out
    assert targets_main([str(tmp_path)]) == 0 and "0 targets missed" in capsys.readouterr().out
    assert targets_main([str(tmp_path / "none.json")]) == 2 and "does not exist" in capsys.readouterr().err


def test_lab_targets_judges_the_benchmarks_records():
    from lab.targets import bench_targets

    stream = {
        "config": {"measure": "5,50,200"},
        "runs": {"rolling": {"points": {"5": {}, "50": {}, "200": {}}}},
        "summary": {"rolling_latency_ratio": 1.02, "rolling_ratio_chunks": "200/5"},
    }
    assert bench_targets(stream)["rolling_latency_flat"]["met"] is True
    stream["runs"]["rolling"]["points"].pop("200")  # stopped before the last measured chunk
    assert bench_targets(stream)["rolling_latency_flat"]["met"] is None
    ev = {"frames_scored": 1, "seconds": 130.0, "clips": 16, "rows": 3, "threads": 2}
    assert bench_targets(ev)["eval_seconds"]["met"] is False
    assert bench_targets({"pe_head_ms": {}, "ratio": 55.0})["track_head_speedup"]["met"] is True
    assert bench_targets({"teacher_epe_with_tracks": 1.0}) == {}


def test_video_check_never_contradicts_its_own_figures(tmp_path, no_plots):
    # both below the frozen frame: said plainly
    write_report(
        tmp_path,
        _figures(
            teacher_ssim_with_tracks=0.2, teacher_psnr_with_tracks=15.0, ssim_frozen_video=0.35, psnr_frozen_video=16.0
        ),
    )
    md = (tmp_path / "report.md").read_text()
    assert "Video check (teacher (joint guidance)): PSNR 15.00 vs 16.00 dB, SSIM 0.200 vs 0.350, both below" in md
    # PSNR favours the teacher, SSIM does not: called mixed, not "less like the ground truth"
    write_report(
        tmp_path,
        _figures(
            teacher_ssim_with_tracks=0.2, teacher_psnr_with_tracks=19.0, ssim_frozen_video=0.35, psnr_frozen_video=18.0
        ),
    )
    md = (tmp_path / "report.md").read_text()
    assert "PSNR above and SSIM below the frozen first frame's: mixed" in md and "less like" not in md
    write_report(tmp_path, _figures())
    assert "Video check" not in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_an_rl_student_is_an_extra_row_and_its_reward_curve_is_plotted(tmp_path):
    rl = dict(
        rl_epe_with_tracks=1.7,
        rl_epe_without_tracks=6.1,
        rl_psnr_with_tracks=21.5,
        rl_psnr_without_tracks=17.0,
        rl_ssim_with_tracks=0.56,
        rl_ssim_without_tracks=0.3,
        stages={"rl": {"status": "done", "seconds": 20.0, "step": 4, "seconds_per_step": 2.5}},
    )
    rows = [
        {
            "step": i,
            "train/loss": -1e-4,
            "train/loss/generator": -1e-4,
            **({"train/rl/reward": 0.1 * i} if i % 2 else {}),
        }
        for i in range(1, 5)
    ]
    assert curve_keys(rows) == ["train/loss/generator", "train/rl/reward"]
    assert curve_keys([{"step": 1, "train/loss": 1.0}]) == ["train/loss"]
    write_report(tmp_path, _figures(**rl), metrics={"rl": rows})
    md = (tmp_path / "report.md").read_text()
    assert "| student after RL | 1.700 | 6.100 | 21.500 / 17.000 | 0.560 / 0.300 |  | 3.571 |" in md
    assert md.index("| student after DMD |") < md.index("| student after RL |")
    assert "RL check: the student after RL (4 steps of `experiment=rl_tiny`), 2.50 s per step" in md
    assert "EPE with tracks 1.70 px vs 1.80 px, PSNR 21.50 vs 21.00 dB, SSIM 0.560 vs 0.550" in md
    assert (tmp_path / "training.png").is_file() and (tmp_path / "epe.png").is_file()
    assert targets(_figures(**rl)) == targets(_figures(stages=rl["stages"]))  # the targets stay the DMD student's
    # no RL stage: nothing about RL in the report
    write_report(tmp_path, _figures())
    md = (tmp_path / "report.md").read_text()
    assert "RL" not in md and "rl_" not in (tmp_path / "report.json").read_text()
