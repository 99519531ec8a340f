"""The one frame-fitting rule (``data.framing``): crop (scale to cover, keep the centre) and resize (squash), the
arithmetic of each, tracks that land where their pixels land, points the fit cuts away made invisible, and the
inverse that ``transfer`` / ``camera`` write their tracks with."""

import cv2
import numpy as np
import pytest

from trackstream.data.framing import fit_frames, hold_tracks, plan_fit
from trackstream.data.track_inputs import check_tracks


def test_crop_scales_to_cover_and_keeps_the_centre():
    fit = plan_fit(272, 640, height=64, width=64)  # bikes.mp4's frame to the shipped student's
    assert fit.mode == "crop" and fit.resized == (64, 151) and fit.offset == (0, 43) and fit.shrink
    np.testing.assert_allclose(fit.scale, [151 / 640, 64 / 272])  # one scale, up to the rounding of 151
    assert fit.describe() == "640x272 -> 64x64 by crop: scaled by 0.236 to 151x64, 87 columns and 0 rows cut"
    frame = np.random.default_rng(0).integers(0, 256, (272, 640, 3), dtype=np.uint8)
    want = cv2.resize(frame, (151, 64), interpolation=cv2.INTER_AREA)[:, 43:107]
    np.testing.assert_array_equal(fit.frames(frame), want)
    small = plan_fit(48, 40, height=64, width=64)  # a smaller source is enlarged (bilinear), cut down
    assert small.resized == (77, 64) and small.offset == (6, 0) and not small.shrink


def test_resize_squashes_each_axis():
    fit = plan_fit(272, 640, height=64, width=64, mode="resize")
    assert fit.resized == (64, 64) and fit.offset == (0, 0)
    np.testing.assert_allclose(fit.scale, [0.1, 64 / 272])
    assert fit.describe() == "640x272 -> 64x64 by resize: x scaled by 0.1, y by 0.235"
    frames = np.zeros((3, 272, 640, 3), np.uint8)
    assert fit_frames(frames, height=64, width=64, mode="resize").shape == (3, 64, 64, 3)
    with pytest.raises(ValueError, match=r"fit='squash' is not a fitting rule; choose one of crop, resize"):
        plan_fit(272, 640, height=64, width=64, mode="squash")


def test_a_frame_at_the_size_is_left_as_it_is():
    fit = plan_fit(64, 64, height=64, width=64)
    frame = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    assert fit.identity and np.array_equal(fit.frames(frame), frame)
    tracks = np.array([[[10.25, 3.5], [-5.0, 70.0]]], np.float32)
    moved, vis = fit.tracks(tracks, np.array([[True, False]]))
    np.testing.assert_array_equal(moved, tracks)
    np.testing.assert_array_equal(vis, [[True, False]])


def _dot(h: int, w: int, x: int, y: int) -> np.ndarray:
    img = np.zeros((h, w), np.float32)
    img[y - 4 : y + 5, x - 4 : x + 5] = 1.0  # a 9x9 square centred on (x, y)
    return img


def _centroid(img: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return np.array([(xs * img).sum(), (ys * img).sum()]) / img.sum()


@pytest.mark.parametrize("mode", ["crop", "resize"])
@pytest.mark.parametrize("src, size", [((120, 200), (48, 64)), ((90, 60), (64, 64)), ((40, 56), (96, 80))])
def test_tracks_land_where_their_pixels_land(mode, src, size):
    (h, w), (H, W) = src, size
    fit = plan_fit(h, w, height=H, width=W, mode=mode)
    x, y = w // 2 + 7, h // 2 - 5  # near the centre: inside every crop
    fitted = fit.frames(_dot(h, w, x, y))
    moved, vis = fit.tracks(np.array([[[x, y]]], np.float32))
    assert vis.all()
    np.testing.assert_allclose(moved[0, 0], _centroid(fitted), atol=0.25)  # the dot's centre, moved with it


def test_points_the_crop_cuts_away_become_invisible_and_stay_where_generate_takes_them():
    fit = plan_fit(272, 640, height=64, width=64)  # columns 0-182 and 457-639 of the source are cut
    tracks = np.array([[[320.0, 136.0], [10.0, 136.0], [630.0, 20.0], [-600.0, 136.0]]], np.float32)
    moved, vis = fit.tracks(tracks, np.array([[True, True, True, False]]))
    assert vis.tolist() == [[True, False, False, False]]
    assert moved[0, 1, 0] < -0.5 and moved[0, 2, 0] > 63.5  # outside, on their sides
    assert moved[0, 3, 0] == -64.0  # -600 would land 3 frame sizes off: held at one
    check_tracks(moved, vis, height=64, width=64)  # what generate asks of tracks
    assert fit.tracks(tracks)[1].tolist() == [[True, False, False, False]]  # no visibility given: all were visible


@pytest.mark.parametrize("mode", ["crop", "resize"])
def test_tracks_made_on_the_fitted_frame_go_back_to_the_source_and_return(mode):
    fit = plan_fit(144, 176, height=64, width=64, mode=mode)  # carphone's frame
    made = np.random.default_rng(1).uniform(-10, 74, (5, 30, 2)).astype(np.float32)
    back = fit.tracks_in_source(made)
    check_tracks(back, None, height=144, width=176)
    again, _ = fit.tracks(back)
    np.testing.assert_allclose(again, made, atol=1e-4)


def test_a_depth_map_is_fitted_as_its_frame_without_new_depths():
    depth = np.where(np.arange(200)[None, :] < 100, 2.0, 5.0).repeat(120, axis=0)  # [120, 200]: two surfaces
    fitted = plan_fit(120, 200, height=48, width=64).frames(depth, interpolation=cv2.INTER_NEAREST)
    assert fitted.shape == (48, 64) and fitted.dtype == np.float64 and set(np.unique(fitted)) == {2.0, 5.0}


def test_hold_tracks_keeps_one_frame_size_of_slack():
    held = hold_tracks(np.array([[[-100.0, 50.0], [30.0, 500.0]]]), (64, 80))
    np.testing.assert_array_equal(held, [[[-80.0, 50.0], [30.0, 128.0]]])
    assert held.dtype == np.float32


def test_prepare_crops_by_the_same_rule():
    from trackstream.data.video_io import resize_center_crop

    frames = np.random.default_rng(2).integers(0, 256, (2, 144, 176, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        resize_center_crop(frames, height=64, width=64), plan_fit(144, 176, height=64, width=64).frames(frames)
    )
