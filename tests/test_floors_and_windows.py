"""The floors beside every table (eval.floors), where points are lost (metrics.group_losses) and the long-stream
windows (eval.long_horizon) on the knowable (orbit) world."""

import numpy as np
import pytest
import torch

from trackstream.data.synthetic import SyntheticWorld
from trackstream.data.trackers import build_tracker
from trackstream.eval.floors import floor_figures, pixel_copy
from trackstream.eval.long_horizon import knowable_world, window_scores, window_span
from trackstream.eval.metrics import group_losses, track_motion, video_psnr
from trackstream.models.codecs import build_codec


def _pan_world(num_frames: int = 25) -> SyntheticWorld:
    return SyntheticWorld(camera_pan_prob=1.0, num_sprites=(0, 0), pan_speed=(0.3, 0.3), num_frames=num_frames)


def test_group_losses_split_group_starts_from_the_rest():
    lost = np.zeros(9, int)
    at_risk = np.full(9, 100)
    lost[[1, 5]] = 30  # entering latents 1 and 2 (pixel frames 1 and 5)
    lost[[2, 3, 4, 6, 7, 8]] = 2
    g = group_losses(lost, at_risk)
    assert g == {"lost_at_group_start": 0.3, "lost_inside_group": 0.02}


def test_track_motion_counts_what_the_tracker_loses():
    clip = _pan_world().generate(3)
    trk = build_tracker("lk_plain")
    m = track_motion(clip["frames"], clip["tracks"], clip["visibility"], trk)
    assert m.lost.shape == (25,) and m.lost[0] == 0 and (m.at_risk[1:] > 0).all()
    frozen = np.broadcast_to(clip["frames"][:1], clip["frames"].shape)  # a still video: the tracker holds points
    assert track_motion(frozen, clip["tracks"], clip["visibility"], trk).epe > 3 * m.epe


def test_pixel_copy_of_a_pan_is_the_pan():
    clip = _pan_world().generate(5)
    copy = pixel_copy(clip["frames"], clip["tracks"], clip["visibility"])
    inner = (slice(None), slice(12, -12), slice(12, -12))  # away from the canvas the copy cannot know
    assert video_psnr(copy[inner], clip["frames"][inner]) > 24
    # where no track shows, the copy keeps the true frame; given another clip's tracks (hold) it never does
    vis = clip["visibility"].copy()
    vis[10:] = False
    assert (pixel_copy(clip["frames"], clip["tracks"], vis)[10:] == clip["frames"][10:]).all()
    held = pixel_copy(clip["frames"], clip["tracks"], vis, hold=True)
    assert (held[10:] == held[9]).all() and not (held[10:] == clip["frames"][10:]).all()


@pytest.mark.slow
def test_floor_rows_are_scored_alike():
    world = _pan_world()
    clips = [{**world.generate(s), "meta": {"seed": s}} for s in (1, 2)]
    codec = build_codec("tiny-ae", width=16, patch=4).eval()  # random: its round trip is bad, never better
    f = floor_figures(clips, codec, num_tracks=32)
    assert f["num_samples"] == 2 and f["epe_ground_truth"] < f["epe_frozen_frame"]
    for row in ("ground_truth", "codec_round_trip", "oracle_copier"):
        assert np.isfinite(f[f"epe_{row}"]) and 0 <= f[f"lost_at_group_start_{row}"] <= 1
    assert f["psnr_codec_round_trip"] < 30 and "psnr_ground_truth" not in f


def test_the_knowable_world_comes_back_to_frame_zero():
    world = knowable_world(SyntheticWorld(num_sprites=(0, 0), num_frames=49, orbit_period=(3.0, 3.0)))
    clip = world.generate(7)
    back = 48  # one period at 16 fps
    assert np.allclose(clip["tracks"][back], clip["tracks"][0], atol=1e-3)
    assert video_psnr(np.stack([clip["frames"][0], clip["frames"][back]]), np.stack([clip["frames"][0]] * 2)) > 40
    moved = np.abs(clip["tracks"][24] - clip["tracks"][0]).max()
    assert 2 < moved < 0.25 * 64  # half a period away: moved, but within the first frame's field


def test_window_scores_of_the_ground_truth():
    clip = _pan_world(num_frames=49).generate(2)
    assert window_span(25, 1) == (0, 24) and window_span(25, 2) == (24, 48)
    lat = torch.randn(16, 13, 4, 4)
    s = window_scores(
        clip["frames"],
        clip["frames"],
        clip["tracks"],
        clip["visibility"],
        lat,
        lat,
        horizon_frames=25,
        factors=(1, 2, 4),
        tracker=build_tracker("lk_plain"),
    )
    assert set(s) == {"1x", "2x"}  # 4x lies past the clip
    assert s["1x"]["psnr"] == float("inf") and s["1x"]["energy"] == 1.0 and s["2x"]["ssim"] > 0.999
