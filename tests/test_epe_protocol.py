"""One EPE protocol (eval.metrics.motion_epe): make run's report path (the teacher and streaming
evaluations) and ``python -m trackstream.eval``'s harness give the same EPE on the same videos; losing a point
is never rewarded; a re-acquiring tracker is refused wherever an EPE tracker is named."""

import numpy as np
import pytest
from scipy import ndimage

from trackstream.data.tracker_base import Tracker
from trackstream.data.trackers import build_tracker
from trackstream.eval.metrics import frozen_epe, motion_epe

T, SIZE = 9, 64
STEP = np.array([1.0, 0.5])  # px per frame the video's content moves


def _video() -> np.ndarray:
    """A smooth texture translating by STEP per frame: every point's true track is known."""
    tex = ndimage.gaussian_filter(np.random.default_rng(0).uniform(0, 255, (3 * SIZE, 3 * SIZE, 3)), (2, 2, 0))
    tex = (tex - tex.min()) / np.ptp(tex) * 255
    frames = []
    for t in range(T):
        dx, dy = np.round(STEP * t).astype(int)
        frames.append(tex[SIZE - dy : 2 * SIZE - dy, SIZE - dx : 2 * SIZE - dx])
    return np.stack(frames).astype(np.uint8)


class _Oracle(Tracker):
    """Reports where each queried point really is in ``_video`` (visible throughout); points in
    ``lose`` are reported lost from frame ``at`` on, at ``where`` ("nan", "far", or "input": exactly
    the input track, what a tracker guessing from the conditioning would give)."""

    def __init__(self, tracks=None, lose=(), at=T, where="nan"):
        self.tracks, self.lose, self.at, self.where = tracks, list(lose), at, where

    def _track(self, frames, queries):
        t = np.arange(len(frames))[:, None, None]
        pos = (queries[None, :, 1:] + (t - queries[None, :, :1]) * STEP).astype(np.float32)
        vis = np.ones(pos.shape[:2], bool)
        vis[self.at :, self.lose] = False
        fill = {"nan": np.nan, "far": 1e6}.get(self.where)
        pos[self.at :, self.lose] = fill if fill is not None else self.tracks[self.at :, self.lose]
        return pos, vis


def test_losing_a_point_is_never_rewarded():
    video = _video()
    g = np.stack(np.meshgrid(np.arange(16, 49, 8.0), np.arange(16, 49, 8.0)), -1).reshape(-1, 2)  # [25, 2]
    t = np.arange(T)[:, None, None]
    tracks = g[None] + t * STEP  # what the video does ...
    botched = np.arange(0, 25, 3)  # ... except where the input asks for 3 px / frame more than it got
    tracks[:, botched, 0] += 3.0 * np.arange(T)[:, None]
    vis = np.ones((T, 25), bool)
    vis[5:7, 1] = False  # the input hides one point for two frames (not scored)
    keeper, _, _ = motion_epe(video, tracks, vis, _Oracle())
    assert keeper > 1.0  # the botched points cost something
    # the tracker loses exactly the points the video botched, from frame 3 on: with their positions
    # undefined, absurd, or equal to the input itself. Dropping them, trusting the lost positions or
    # letting a NaN through (a NaN video falls out of a nanmean) would each score below the keeper.
    for where in ("nan", "far", "input"):
        loser, per_frame, held = motion_epe(video, tracks, vis, _Oracle(tracks, botched, at=3, where=where))
        assert np.isfinite(loser) and np.isfinite(per_frame).all() and np.isfinite(held).all(), where
        assert loser >= keeper, where
        assert np.allclose(held[3:, botched], held[2, botched]), where  # held where last seen
    # losing every point at frame 1 scores exactly as the frozen first frame, which is worse here
    everything, _, _ = motion_epe(video, tracks, vis, _Oracle(tracks, range(25), at=1, where="input"))
    assert everything == pytest.approx(frozen_epe(tracks, vis)[0]) and everything > keeper
    # and the real CPU tracker, which cannot follow fresh noise every frame, scores that noise worse
    # than the video that moves (no re-acquisition finds a lucky patch)
    noise = np.stack([_video()[0][np.random.default_rng(s).permutation(SIZE)] for s in range(T)])
    lk = build_tracker("lk_plain")
    assert motion_epe(noise, tracks, vis, lk)[0] > motion_epe(video, tracks, vis, lk)[0]


def test_a_reacquiring_tracker_is_refused_everywhere():
    from trackstream.eval.command import EvalCommandConfig
    from trackstream.eval.stream_scoring import StreamEvalConfig
    from trackstream.eval.teacher_eval import EvalConfig

    video = _video()
    tracks = np.zeros((T, 1, 2)) + 20.0
    with pytest.raises(ValueError, match="re-acquires"):
        motion_epe(video, tracks, np.ones((T, 1), bool), build_tracker("lk"))
    with pytest.raises(ValueError, match="eval.tracker='lk'"):
        EvalConfig(tracker="lk")
    with pytest.raises(ValueError, match="StreamEvalConfig.tracker='lk'"):
        StreamEvalConfig(tracker="lk")
    with pytest.raises(ValueError, match="^tracker='lk'"):
        EvalCommandConfig(run="x", tracker={"name": "lk"})
    assert EvalConfig().tracker == StreamEvalConfig().tracker == EvalCommandConfig(run="x").tracker.name == "lk_plain"


@pytest.mark.slow
def test_the_report_and_python_m_eval_give_the_same_figures_on_the_same_videos():
    """make run's figures come from eval.teacher_eval.evaluate_motion and eval.stream_scoring.evaluate_stream_motion
    (inside run_evaluation); ``python -m trackstream.eval`` scores rows of videos with eval.harness.score_rows. Here the
    shipped teacher and student generate 2 held-out clips through the report's functions, and the harness
    scores the very videos they returned, against the same input tracks."""
    import dataclasses

    from omegaconf import OmegaConf

    from trackstream.data.clips import DataConfig, heldout_clips
    from trackstream.diffusion.samplers import GuidanceConfig, SamplerConfig
    from trackstream.eval.floors import reference_rows
    from trackstream.eval.harness import Extractors, score_rows
    from trackstream.eval.sample import Sample
    from trackstream.eval.scorebook import input_tracks
    from trackstream.eval.stream_scoring import StreamEvalConfig, evaluate_stream_motion
    from trackstream.eval.teacher_eval import EvalConfig, evaluate_motion
    from trackstream.models.network import Network
    from trackstream.pipeline.releases import ASSET_DIR, STUDENT_DIR
    from trackstream.stream.engine import StreamingGenerator

    cfg = OmegaConf.to_container(OmegaConf.load(ASSET_DIR / "config.yaml"), resolve=True)
    data = DataConfig(**{**cfg["data"], "eval_samples": 2})
    # 13 frames (the first frame + one chunk of 3 latents), not the evaluation's 25: one protocol at any length
    data = dataclasses.replace(data, num_frames=13)
    clips = heldout_clips(data)
    num_tracks = cfg["eval"]["num_tracks"]
    teacher, codec, cond = Network.open(ASSET_DIR / "teacher").for_inference()  # its release's codec.pt
    tf = evaluate_motion(
        teacher,
        conditioner=cond,
        clips=clips,
        shift=cfg["schedule"]["shift"],
        sampler=SamplerConfig(steps=2, solver="euler", guidance=GuidanceConfig(mode="joint")),
        cfg=EvalConfig(batch_size=2, save_videos=0, num_tracks=num_tracks, preview_clips=2),
        embed_dim=teacher.track_embed_dim,
        device=next(teacher.parameters()).device,
    )
    student = Network.open(STUDENT_DIR / "student").for_inference()[0]
    engine = StreamingGenerator(
        student, codec, config=student.conventions.stream_config("student"), image_features_fn=cond.image_features
    )
    sf = evaluate_stream_motion(
        engine,
        clips=clips.clips,
        text_fn=cond.text,
        cfg=StreamEvalConfig(num_tracks=num_tracks, preview_clips=0),
        out_dir=None,
        fps=8,
    )

    # python -m trackstream.eval's view of the same clips: the ground truth and the input tracks the report scored
    tr, vi, counts = input_tracks(clips.clips, num_tracks)
    samples = [
        Sample(str(c["meta"]["id"]), c["frames"], tr[i, :, : counts[i]].numpy(), vi[i, :, : counts[i]].numpy())
        for i, c in enumerate(clips.clips)
    ]
    ids = [s.id for s in samples]
    rows = {
        "teacher (with tracks)": dict(zip(ids, tf["preview"]["with_tracks"])),
        "teacher (without tracks)": dict(zip(ids, tf["preview"]["without_tracks"])),
        "student (with tracks)": dict(zip(ids, sf["frames"]["with_tracks"])),
        "student (without tracks)": dict(zip(ids, sf["frames"]["without_tracks"])),
        **reference_rows(samples),
    }
    res = score_rows(
        rows,
        samples,
        metrics=["epe", "psnr", "ssim"],
        tracker=build_tracker(EvalConfig().tracker),
        extractors=Extractors(),
        progress=False,
    )
    report = {
        "teacher (with tracks)": (tf, "with_tracks"),
        "teacher (without tracks)": (tf, "without_tracks"),
        "student (with tracks)": (sf, "with_tracks"),
        "student (without tracks)": (sf, "without_tracks"),
        "ground_truth": (tf, "ground_truth_video"),
        "frozen": (tf, "frozen_video"),
    }
    measures = ("epe", "psnr", "ssim", "no_hold_epe", "no_hold_ratio", "lost_share", "late_texture_ratio")
    for row, (figures, mode) in report.items():
        assert res[row]["per_sample"]["epe"] == figures["per_sample"][mode], row
        shown = [m for m in measures if f"{m}_{mode}" in figures]
        assert {m: res[row][m] for m in shown} == {m: figures[f"{m}_{mode}"] for m in shown}, row
        assert "epe" in shown and (row == "ground_truth" or "late_texture_ratio" in shown), row
    assert res["ground_truth"]["epe"] < res["frozen"]["epe"]
