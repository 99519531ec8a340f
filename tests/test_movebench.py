"""MoveBench: its release layout read into Samples (trackstream/eval/movebench.py) and the RAFT flow EPE
(trackstream/eval/flow_epe.py) on a random-weight RAFT."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from trackstream.data.video_io import write_mp4
from trackstream.eval.flow_epe import flow_epe
from trackstream.eval.movebench import load_movebench
from trackstream.models.raft import RAFT

T, H, W, N = 5, 32, 64, 3  # decord reads widths that are multiples of 32


def _clip(seed: int, frames: int = T) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (frames, H, W, 3), dtype=np.uint8)


def write_movebench(root, *, batch_axis: bool = True, frames: int = T):
    """Two clips of ``frames`` frames in MoveBench's layout: en/{single,multi}_track.txt, video/, first_frame/,
    track/<subset>/."""
    T = frames
    base = root / "en"
    for d in ("video", "first_frame", "track/single", "track/multi"):
        (base / d).mkdir(parents=True, exist_ok=True)
    lines = []
    for k, vid in enumerate(["Pexels_cat_0", "Pexels_car_1"]):
        frames = _clip(k, T)
        write_mp4(base / "video" / f"{vid}.mp4", frames, fps=16)
        cv2.imwrite(str(base / "first_frame" / f"{vid}.jpg"), frames[0][..., ::-1])
        tracks = np.linspace(0, 20, T * N * 2, dtype=np.float32).reshape(T, N, 2) + k
        vis = np.ones((T, N), bool)
        vis[2, 1] = False
        if batch_axis and k == 0:  # Wan-Move's generate() accepts [1, T, N, 2] too
            tracks, vis = tracks[None], vis[None]
        np.save(base / "track" / "single" / f"{vid}_tracks.npy", tracks)
        np.save(base / "track" / "single" / f"{vid}_visibility.npy", vis)
        lines.append(f"{vid}.mp4,A caption, with a comma number {k}.")
    (base / "single_track.txt").write_text("\n".join(lines) + "\n")
    (base / "multi_track.txt").write_text(lines[1] + "\n")
    return base


@pytest.mark.slow
def test_a_movebench_folder_reads_into_samples(tmp_path):
    write_movebench(tmp_path)
    samples = load_movebench(tmp_path, subset="single")
    assert [s.id for s in samples] == ["Pexels_cat_0", "Pexels_car_1"]
    for k, s in enumerate(samples):
        assert s.frames.shape == (T, H, W, 3) and s.frames.dtype == np.uint8
        assert s.tracks.shape == (T, N, 2) and s.tracks.dtype == np.float32
        assert s.visibility.shape == (T, N) and s.visibility.dtype == bool and not s.visibility[2, 1]
        assert s.caption == f"A caption, with a comma number {k}."  # split at the first comma only
    trimmed = load_movebench(tmp_path / "en", subset="single", num_samples=1, num_frames=3, num_tracks=2)
    assert len(trimmed) == 1 and trimmed[0].frames.shape == (3, H, W, 3) and trimmed[0].tracks.shape == (3, 2, 2)


def test_the_multi_subset_lists_its_own_clips_and_needs_its_own_tracks(tmp_path):
    write_movebench(tmp_path)
    with pytest.raises(ValueError) as err:
        load_movebench(tmp_path, subset="multi")  # multi_track.txt lists a clip with no track/multi/ files
    assert "\n" not in str(err.value) and "track/multi/Pexels_car_1_tracks.npy" in str(err.value)


@pytest.mark.parametrize(
    "breakage, words",
    [
        ("no_folder", "does not exist"),
        ("no_datalist", "not a MoveBench folder"),
        ("tarball", "extract"),
        ("bad_line", "no comma"),
        ("no_video", "lacks 1 file"),
        ("subset", "choose single or multi"),
    ],
)
def test_a_bad_folder_is_one_line(tmp_path, breakage, words):
    base = write_movebench(tmp_path)
    path, subset = tmp_path, "single"
    if breakage == "no_folder":
        path = tmp_path / "nowhere"
    elif breakage in ("no_datalist", "tarball"):
        (base / "single_track.txt").unlink()
        if breakage == "tarball":
            (base / "single_track.txt").parent.rename(tmp_path / "unpacked")
            (tmp_path / "en.tar.gz").write_bytes(b"")
    elif breakage == "bad_line":
        (base / "single_track.txt").write_text("Pexels_cat_0.mp4 no comma here\n")
    elif breakage == "no_video":
        (base / "video" / "Pexels_car_1.mp4").unlink()
    elif breakage == "subset":
        subset = "both"
    with pytest.raises(ValueError) as err:
        load_movebench(path, subset=subset)
    assert "\n" not in str(err.value) and words in str(err.value)


@pytest.fixture(scope="module")
def raft():
    torch.manual_seed(0)
    return RAFT(iters=4).eval()  # random weights: enough to tell equal flows from different ones


def _smooth_video(shift: float) -> np.ndarray:
    y, x = np.mgrid[0:128, 0:128].astype(np.float64)
    frames = []
    for t in range(3):
        u = x - shift * t
        img = np.stack([128 + 100 * np.sin(u / 6.0), 128 + 90 * np.cos(y / 8.0), 128 + 60 * np.sin((u + y) / 9.0)], -1)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames)


@pytest.mark.slow
def test_flow_epe_is_zero_against_itself_and_positive_against_other_motion(raft):
    still, moving = _smooth_video(0.0), _smooth_video(4.0)
    assert flow_epe(moving, moving, raft) == 0.0
    assert flow_epe(still, moving, raft) > 0.0
    mask = np.zeros((128, 128), bool)
    mask[32:96, 32:96] = True
    assert flow_epe(still, moving, raft, mask=mask) > 0.0


def test_flow_epe_refuses_mismatched_videos(raft):
    with pytest.raises(ValueError, match="differ in shape"):
        flow_epe(_smooth_video(0.0), _smooth_video(0.0)[:2], raft)
    with pytest.raises(ValueError, match="too small"):
        flow_epe(_clip(0), _clip(1), raft)


@pytest.mark.slow
def test_the_eval_command_scores_a_movebench_folder_with_flow_epe(tmp_path):
    """benchmark=movebench composes, and `trackstream eval` scores a results folder on it with the RAFT flow EPE
    (a random-weight raft-things.pth in the official key layout): the ground truth 0, the frozen frame > 0."""
    import json
    import shutil

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from trackstream.eval.__main__ import CONFIG_DIR
    from trackstream.eval.command import EvalCommandConfig, evaluate
    from trackstream.eval.conf_nodes import register_nodes

    T = 3  # 2 frame pairs per video: RAFT (12 iterations at 128 px) is this test's cost
    base = tmp_path / "MoveBench" / "en"
    for d in ("video", "first_frame", "track/single"):
        (base / d).mkdir(parents=True)
    results = tmp_path / "results"  # another method's videos, named as the benchmark's ids: here the real ones
    results.mkdir()
    lines = []
    for k, vid in enumerate(["clip_a", "clip_b"]):
        frames = np.stack([np.roll(_smooth_video(2.0 + k)[t % 3], 3 * t, axis=0) for t in range(T)])
        write_mp4(base / "video" / f"{vid}.mp4", frames, fps=16)
        cv2.imwrite(str(base / "first_frame" / f"{vid}.jpg"), frames[0][..., ::-1])
        np.save(base / "track" / "single" / f"{vid}_tracks.npy", np.full((T, N, 2), 40.0, np.float32))
        np.save(base / "track" / "single" / f"{vid}_visibility.npy", np.ones((T, N), bool))
        shutil.copy(base / "video" / f"{vid}.mp4", results / f"{vid}.mp4")
        lines.append(f"{vid}.mp4,a clip {k}")
    (base / "single_track.txt").write_text("\n".join(lines) + "\n")
    torch.manual_seed(0)
    weights = tmp_path / "raft-things.pth"
    torch.save({f"module.{k}": v for k, v in RAFT().state_dict().items()}, weights)

    register_nodes()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(
                "eval", overrides=["run=x", "benchmark=movebench", f"benchmark.path={tmp_path / 'MoveBench'}"]
            )
    finally:
        GlobalHydra.instance().clear()
    assert cfg.benchmark.name == "movebench" and list(cfg.metrics) == ["psnr", "ssim", "flow_epe"]
    assert (cfg.benchmark.subset, cfg.benchmark.num_frames) == ("single", 81)

    out = tmp_path / "eval"
    summary = evaluate(
        EvalCommandConfig(
            run=str(results),
            references=["ground_truth", "frozen"],
            benchmark=dict(name="movebench", path=str(tmp_path / "MoveBench"), num_samples=None, num_frames=T),
            metrics=["psnr", "flow_epe"],
            weights={"raft": str(weights)},
            save_videos=False,
            out=str(out),
        )
    )
    rows = summary["results"]
    assert rows["ground_truth"]["flow_epe"] == 0.0 and rows["frozen"]["flow_epe"] > 0.0
    # the real videos as results: only frame 0 differs (the benchmark's first frame is the JPEG of first_frame/)
    assert rows["results"]["flow_epe"] < 0.25 * rows["frozen"]["flow_epe"]
    assert json.loads((out / "metrics.json").read_text())["num_samples"] == 2


def test_flow_epe_without_raft_weights_is_refused_before_generating(tmp_path):
    from trackstream.eval.command import EvalCommandConfig, EvalRefused, evaluate

    write_movebench(tmp_path)
    (tmp_path / "results").mkdir()
    write_mp4(tmp_path / "results" / "Pexels_cat_0.mp4", _clip(0), fps=16)
    cfg = EvalCommandConfig(
        run=str(tmp_path / "results"),
        benchmark=dict(name="movebench", path=str(tmp_path), num_samples=None),
        metrics=["flow_epe"],
        out=str(tmp_path / "out"),
    )
    with pytest.raises(EvalRefused, match="weights.raft"):
        evaluate(cfg)
    assert not (tmp_path / "out").exists()
