"""MotionStream's DAVIS protocol (``benchmark=davis_motionstream``, trackstream/eval/davis.py) on a tiny folder in
the official DAVIS 2017 layout: frame selection (first and last kept), size, grid tracks and their visibility,
the one-line refusals, the Hydra group and one end-to-end evaluation of the shipped tiny student."""

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "assets" / "tiny-student" / "student"
CODEC = ROOT / "assets" / "tiny-teacher" / "codec.pt"
SEQS = {"blackswan": 16, "bmx-trees": 13}  # frames a sequence


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def davis(tmp_path_factory) -> Path:
    return write_davis(tmp_path_factory.mktemp("DAVIS"))


def write_davis(root: Path) -> Path:
    """JPEGImages/480p/<seq>/%05d.jpg (a texture panning 1 px a frame, frame index in the red channel's corner),
    Annotations/480p/<seq>/%05d.png, ImageSets/2017/val.txt."""
    import cv2

    for s, (name, n) in enumerate(SEQS.items()):
        big = _texture(48, 96, s)
        (root / "JPEGImages" / "480p" / name).mkdir(parents=True)
        (root / "Annotations" / "480p" / name).mkdir(parents=True)
        for t in range(n):
            frame = np.ascontiguousarray(big[:, t : t + 80])  # 80 x 48, moving left 1 px a frame
            cv2.imwrite(str(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg"), frame[..., ::-1])
            mask = np.zeros((48, 80), np.uint8)
            mask[10:30, 20:50] = 1
            cv2.imwrite(str(root / "Annotations" / "480p" / name / f"{t:05d}.png"), mask)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(SEQS) + "\n")
    return root


def _cfg(path, **kw):
    from trackstream.eval.benchmarks import BenchmarkConfig

    base = dict(name="davis_motionstream", path=str(path), num_samples=None, num_frames=14, frame_step=4)
    return BenchmarkConfig(**{**base, "height": 32, "width": 48, "grid_size": 4, **kw})


def test_frame_selection_keeps_first_and_last_and_subsamples_uniformly():
    from trackstream.eval.davis import select_frames

    assert select_frames(12, 9).tolist() == [0, 1, 3, 4, 6, 7, 8, 10, 11]
    idx = select_frames(104, 81)  # DAVIS' longest val sequence (cows) into Wan 2.1's 81 frames
    assert idx[0] == 0 and idx[-1] == 103 and len(set(idx.tolist())) == 81 and np.all(np.diff(idx) >= 1)
    assert select_frames(50, 81).tolist() == list(range(50))  # shorter, no step: every frame
    short = select_frames(50, 81, 12)  # a streaming student's lengths 81, 69, 57, 45: the longest it holds
    assert len(short) == 45 and short[0] == 0 and short[-1] == 49
    assert len(select_frames(34, 81, 12)) == 33 and len(select_frames(81, 81, 12)) == 81
    assert select_frames(7, None).tolist() == list(range(7))
    with pytest.raises(ValueError, match="too short"):
        select_frames(8, 81, 12)


def test_loader_reads_the_official_layout(davis):
    import cv2

    from trackstream.data.trackers import build_tracker
    from trackstream.eval.benchmarks import load_benchmark

    samples = load_benchmark(_cfg(davis), tracker=build_tracker("lk_plain"))
    assert [s.id for s in samples] == list(SEQS)
    long, short = samples
    assert long.frames.shape == (14, 32, 48, 3) and long.frames.dtype == np.uint8
    assert short.frames.shape == (10, 32, 48, 3)  # 13 < 14 frames: the longest 14 - k*4 it holds
    for t, src in ((0, 0), (-1, 15), (5, 6), (-2, 14)):  # 16 frames into 14: [0, 1, 2, 3, 5, 6, ..., 14, 15]
        jpg = cv2.imread(str(davis / "JPEGImages" / "480p" / "blackswan" / f"{src:05d}.jpg"))[..., ::-1]
        want = cv2.resize(jpg, (48, 32), interpolation=cv2.INTER_AREA)
        assert np.array_equal(long.frames[t], want), t
    assert long.tracks.shape == (14, 16, 2) and long.tracks.dtype == np.float32
    assert long.visibility.shape == (14, 16) and long.visibility.dtype == bool and long.visibility[0].all()
    assert short.tracks.shape == (10, 16, 2) and short.visibility.shape == (10, 16)
    xs = np.unique(long.tracks[0, :, 0].round(3))
    assert len(xs) == 4 and np.allclose(np.diff(xs), 12)  # a 4 x 4 grid of first-frame points at 48 px wide
    # the texture pans left 1 px (at 80 px wide; 0.6 px at 48) a source frame: frame 15 is 9 px left
    seen = long.visibility[-1]
    assert seen.any()
    shift = (long.tracks[-1, seen, 0] - long.tracks[0, seen, 0]).mean()
    assert -11 < shift < -7, shift
    assert long.caption == "blackswan" and short.caption == "bmx trees"  # no captions file: the names


def test_captions_file_and_paper_defaults(davis, tmp_path):
    from trackstream.data.trackers import build_tracker
    from trackstream.eval.benchmarks import load_benchmark
    from trackstream.eval.davis import resolved

    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({"blackswan": "a black swan swims"}))
    (sample,) = load_benchmark(_cfg(davis, num_samples=1, captions=str(caps)), tracker=build_tracker("lk_plain"))
    assert sample.caption == "a black swan swims"
    assert resolved(_cfg(davis, height=None, width=None, grid_size=None)) == {
        "split": "ImageSets/2017/val.txt",
        "images": "JPEGImages/480p",
        "height": 480,
        "width": 832,
        "grid_size": 50,
    }


@pytest.mark.parametrize(
    "broken, says",
    [
        ("JPEGImages", "has no JPEGImages/480p/"),
        ("ImageSets/2017/val.txt", "has no ImageSets/2017/val.txt"),
        ("JPEGImages/480p/bmx-trees", "bmx-trees/00000.jpg"),
    ],
)
def test_a_broken_layout_is_one_line_naming_the_path(davis, tmp_path, broken, says):
    import shutil

    copy = tmp_path / "DAVIS"
    shutil.copytree(davis, copy)
    target = copy / broken
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ValueError) as err:
        _cfg(copy)  # at config time: before any model, weights file or frame is read
    msg = str(err.value)
    assert says in msg and "\n" not in msg, msg


@pytest.mark.slow
def test_the_eval_app_composes_the_group(davis):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    from trackstream.eval.__main__ import CONFIG_DIR
    from trackstream.eval.command import EvalCommandConfig
    from trackstream.eval.conf_nodes import register_nodes

    register_nodes()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            default = compose("eval", overrides=["run=x"])
            folder = compose("eval", overrides=["run=x", "benchmark.name=videos", f"benchmark.path={davis}"])
            cfg = compose("eval", overrides=["run=x", "benchmark=davis_motionstream", f"benchmark.path={davis}"])
            mine = compose(
                "eval", overrides=["run=x", "benchmark=davis_motionstream", f"benchmark.path={davis}", "metrics=[psnr]"]
            )
    finally:
        GlobalHydra.instance().clear()
    assert OmegaConf.to_container(default.benchmark) == {
        "name": "synthetic",
        "path": None,
        "num_samples": 16,
        "num_frames": None,
        "num_tracks": None,
    }
    assert list(default.metrics) == ["epe", "psnr", "ssim", "proxy_fvd"]  # unchanged for every other benchmark
    assert folder.benchmark.name == "videos" and folder.benchmark.path == str(davis)
    assert list(cfg.metrics) == ["psnr", "ssim", "lpips", "epe"]  # the paper's columns
    assert list(mine.metrics) == ["psnr"]  # the command line still wins
    b = cfg.benchmark
    assert (b.grid_size, b.height, b.width, b.num_frames, b.num_samples) == (50, 480, 832, 81, None)
    assert b.split == "ImageSets/2017/val.txt" and b.images == "JPEGImages/480p"
    with open_dict(cfg):
        del cfg["data"], cfg["paths"]
    cfg.out = "unused"  # ${paths.log_dir}: Hydra's run config, not set by compose
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert EvalCommandConfig(**raw).benchmark.name == "davis_motionstream"


def test_missing_lpips_weights_refuse_before_tracking(davis, tmp_path, monkeypatch):
    import trackstream.eval.davis as davis_module
    from trackstream.eval.command import EvalCommandConfig, EvalRefused, evaluate

    monkeypatch.setattr(davis_module, "davis_samples", lambda *a, **k: pytest.fail("tracked before the weights check"))
    cfg = EvalCommandConfig(
        run=str(STUDENT),
        benchmark=dict(name="davis_motionstream", path=str(davis), num_samples=None, num_frames=81),
        metrics=["psnr", "ssim", "lpips", "epe"],
        out=str(tmp_path / "out"),
    )
    with pytest.raises(EvalRefused, match="metric 'lpips' needs weights.lpips_backbone"):
        evaluate(cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # the evaluation command end to end: streams, tracks and scores two clips
def test_end_to_end_tiny_student_on_the_folder(davis, tmp_path):
    """The shipped tiny student (64 x 64) on the folder at a cut-down size through the documented keys."""
    from trackstream.eval.command import EvalCommandConfig, evaluate

    out = tmp_path / "eval"
    cfg = EvalCommandConfig(
        run=str(STUDENT),
        modes=["with_tracks"],
        references=["ground_truth", "frozen"],
        benchmark=dict(
            name="davis_motionstream",
            path=str(davis),
            num_samples=None,
            num_frames=13,
            height=64,
            width=64,
            grid_size=4,
        ),  # 13 frames: the tiny student streams 1 + 12k
        metrics=["psnr", "ssim", "epe"],
        generate={"codec": {"name": "tiny-ae", "checkpoint": str(CODEC)}, "device": "cpu"},
        save_videos=False,
        out=str(out),
    )
    summary = evaluate(cfg)
    res = json.loads((out / "metrics.json").read_text())
    assert res["tracker"] == "lk_plain" and res["benchmark_tracks"] == "lk_plain" and res["num_samples"] == 2
    rows = summary["results"]
    assert set(rows) == {"student", "ground_truth", "frozen"}
    for name, r in rows.items():
        assert np.isfinite(r["ssim"]) and np.isfinite(r["epe"]), name
    assert rows["ground_truth"]["psnr"] == float("inf") and np.isfinite(rows["student"]["psnr"])
    assert rows["ground_truth"]["epe"] < rows["frozen"]["epe"]
    table = (out / "table.md").read_text()
    assert "input tracks: `lk_plain` on a 4x4 first-frame grid" in table and "EPE not comparable" in table


def test_a_sequence_too_short_for_the_models_lengths_is_refused_before_decoding(davis):
    with pytest.raises(ValueError, match=r"sequence blackswan: a 16-frame sequence is too short .*frame_step=39"):
        _cfg(davis, num_frames=40, frame_step=39)
    with pytest.raises(ValueError, match="benchmark.grid_size=0 must be an integer >= 1"):
        _cfg(davis, grid_size=0)


@pytest.mark.slow
def test_the_frame_rule_comes_from_the_evaluated_networks(davis):
    from trackstream.eval.command import EvalCommandConfig, frame_rule
    from trackstream.eval.generate import model_lengths

    teacher = ROOT / "assets" / "tiny-teacher" / "teacher"
    assert model_lengths(STUDENT) == (1, 12) and model_lengths(teacher) == (1, 4)  # c3s1w1f1: 1 + 12k; any 1 + 4k

    def rule(runs, **bench):
        bench = dict(name="davis_motionstream", path=str(davis), num_samples=None, frame_rule="model", **bench)
        return frame_rule(EvalCommandConfig(runs=runs, benchmark=bench, out="unused"))

    b = rule({"student": str(STUDENT)}, num_frames=81)  # the protocol's 81 (9 + 12k): the tiny student makes 73
    assert (b.num_frames, b.frame_step) == (73, 12)
    b = rule({"student": str(STUDENT), "teacher": str(teacher)}, num_frames=81)
    assert (b.num_frames, b.frame_step) == (73, 12)
    assert rule({"teacher": str(teacher)}, num_frames=81).num_frames == 81
    with pytest.raises(ValueError, match="frame_rule=model needs benchmark.num_frames"):
        rule({"student": str(STUDENT)}, num_frames=None)


@pytest.mark.slow  # the documented line end to end: tracks, streams and scores two sequences
def test_the_documented_line_scores_the_shipped_student_at_its_own_size(davis, tmp_path):
    """docs/evaluation.md's DAVIS line for the shipped student, on the folder: sequences of 16 and 13 frames go
    to 13 (its 1 + 12k), it runs at its 64x64 and is scored at the protocol's size (here cut to 80x48)."""
    from test_docs_run import documented_line, reader_folder, run_documented

    out = tmp_path / "eval"
    line = documented_line("docs/evaluation.md", "benchmark=davis_motionstream", "run=assets/tiny-student/student")
    run_documented(
        line, reader_folder(tmp_path / "reader"), f"benchmark.path={davis}", "benchmark.height=48",
        "benchmark.width=80", "benchmark.grid_size=4", f"out={out}", "save_videos=false",
    )  # fmt: skip
    res = json.loads((out / "metrics.json").read_text())
    bench = res["config"]["benchmark"]
    assert (bench["num_frames"], bench["frame_step"], res["num_samples"]) == (73, 12, 2)  # 16 and 13 frames: 13
    rows = res["results"]
    student = rows["student"]
    assert np.isfinite(student["psnr"]) and np.isfinite(student["epe"]) and len(student["epe_per_frame"]) == 13
    assert np.isfinite(student["motion_amplitude"]) and rows["frozen"]["motion_amplitude"] == 0
    assert rows["ground_truth"]["epe"] < rows["frozen"]["epe"]
    assert "codec_round_trip" in rows  # sequences of one length: the codec floors are there
