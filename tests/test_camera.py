"""Camera control as tracks (``data.camera_tracks``, ``trackstream camera``): the projections of known moves
on known scenes, the depth test, path files, a depth map or a local depth model, and the track files that
``trackstream generate`` reads."""

import json

import numpy as np
import pytest
from test_docs_run import documented_line, reader_folder, run_documented

from trackstream.data.camera_tracks import CameraPath, camera_path, camera_tracks, intrinsics, read_camera_path
from trackstream.data.track_inputs import load_tracks
from trackstream.data.tracker_base import grid_queries

H, W, Z = 48, 64, 5.0
PLANE = np.full((H, W), Z)  # a wall facing the camera


def test_frame_zero_is_the_grid_and_a_wall_stays_visible():
    tracks, vis = camera_tracks(PLANE, camera_path("pan", 9, target_depth=Z, amount=0.2), grid_size=6)
    np.testing.assert_allclose(tracks[0], grid_queries(H, W, 6)[:, 1:], atol=1e-9)
    assert vis[0].all()


def test_pan_zoom_and_dolly_move_a_wall_as_a_pinhole_does():
    f, cx, cy = intrinsics(H, W, 60.0)
    xy0 = grid_queries(H, W, 6)[:, 1:].astype(float)
    tracks, _ = camera_tracks(PLANE, camera_path("pan", 5, target_depth=Z), grid_size=6)
    np.testing.assert_allclose(tracks[-1, :, 0], xy0[:, 0] - f * 0.25 * Z / Z, atol=1e-4)  # x moves by -f dx / Z
    np.testing.assert_allclose(tracks[-1, :, 1], xy0[:, 1], atol=1e-4)
    tracks, _ = camera_tracks(PLANE, camera_path("zoom", 5, target_depth=Z), grid_size=6)
    centre = np.array([cx, cy])
    np.testing.assert_allclose(tracks[-1], centre + 1.5 * (xy0 - centre), atol=1e-4)  # focal x 1.5
    tracks, _ = camera_tracks(PLANE, camera_path("dolly", 5, target_depth=Z), grid_size=6)
    np.testing.assert_allclose(tracks[-1], centre + Z / (Z - 0.3 * Z) * (xy0 - centre), atol=1e-4)


def test_an_orbit_keeps_its_target_in_the_centre():
    depth = np.full((H + 1, W + 1), Z)  # odd size: a grid point on the principal point
    tracks, vis = camera_tracks(depth, camera_path("orbit", 9, target_depth=Z), grid_size=1)
    np.testing.assert_allclose(tracks[:, 0], np.repeat([[W / 2, H / 2]], 9, 0), atol=1e-6)
    assert vis.all()


def test_the_depth_test_hides_the_wall_behind_a_box():
    depth = PLANE.copy()
    depth[:, 40:] = 2.0  # a box on the right, closer than the wall
    xy0 = grid_queries(H, W, 8)[:, 1:]
    tracks, vis = camera_tracks(depth, camera_path("pan", 9, target_depth=Z), grid_size=8)
    # moving right, the near box sweeps left faster than the wall: wall points just left of it go behind it
    wall = (xy0[:, 0] < 40) & (xy0[:, 0] > 28)
    box = xy0[:, 0] > 40
    assert vis[0].all() and not vis[-1][wall].all() and vis[-1][box & (tracks[-1, :, 0] < W)].all()


def test_a_path_file_is_the_same_path(tmp_path):
    named = camera_path("orbit", 7, target_depth=Z)
    (tmp_path / "orbit.json").write_text(
        json.dumps({"poses": named.poses.tolist(), "focal_scale": named.focal_scale.tolist()})
    )
    np.save(tmp_path / "orbit.npy", named.poses)
    for f in ("orbit.json", "orbit.npy"):
        a = camera_tracks(PLANE, read_camera_path(tmp_path / f, 7))
        b = camera_tracks(PLANE, named)
        np.testing.assert_allclose(a[0], b[0])
    with pytest.raises(ValueError, match="holds 7 poses but --frames is 9"):
        read_camera_path(tmp_path / "orbit.npy", 9)
    with pytest.raises(ValueError, match="poses \\[T, 4, 4\\]"):
        CameraPath(np.zeros((3, 3, 3)), np.ones(3))


def _image(tmp_path):
    import cv2

    path = tmp_path / "first.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8))
    return path


def test_the_command_writes_tracks_generate_reads(tmp_path, capsys):
    from trackstream.cli import main

    np.save(tmp_path / "depth.npy", PLANE)
    out = tmp_path / "cam.npy"
    args = ["camera", "--image", str(_image(tmp_path)), "--depth", str(tmp_path / "depth.npy"), "--path", "orbit"]
    assert main([*args, "--frames", "17", "--grid", "4", "--out", str(out)]) == 0
    tracks, vis = load_tracks(out, tmp_path / "cam.visibility.npy", height=H, width=W)  # generate's own check
    assert tracks.shape == (17, 16, 2) and vis.shape == (17, 16) and vis[0].all()
    assert "17 frames x 16 tracks" in capsys.readouterr().out
    np.save(tmp_path / "small.npy", np.full((H // 2, W // 2), Z))
    bad = ["camera", "--image", str(_image(tmp_path)), "--depth", str(tmp_path / "small.npy"), "--path", "pan"]
    assert main([*bad, "--out", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: --depth is {W // 2}x{H // 2} but --image is {W}x{H}: give the depth of this image at its size"
    ]


def test_without_a_depth_the_image_is_a_flat_picture_fitted_as_generate_fits_it(tmp_path, capsys):
    """No --depth / --depth-model: a plane facing the camera (the demo's fallback), said on the console. The
    image (64x48 here) is fitted to the shipped student's 64x64 by the crop rule, the tracks made on that frame
    and written in the image's pixels, so generate's fit takes them back to that frame's grid."""
    from trackstream.cli import main
    from trackstream.data.framing import plan_fit

    out = tmp_path / "cam.npy"
    assert main(["camera", "--image", str(_image(tmp_path)), "--path", "pan", "--frames", "9", "--grid", "4",
                 "--out", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "no --depth or --depth-model: the image is taken as a flat picture facing the camera" in text, text
    assert "at 64x64 (made on the image fitted 64x48 -> 64x64 by crop" in text, text
    tracks, vis = load_tracks(out, tmp_path / "cam.visibility.npy", height=H, width=W)  # generate's own check
    fitted, seen = plan_fit(H, W, height=64, width=64).tracks(tracks, vis)
    np.testing.assert_allclose(fitted[0], grid_queries(64, 64, 4)[:, 1:], atol=1e-3)
    assert seen[0].all()
    f = intrinsics(64, 64, 60.0)[0]  # a flat picture pans as a wall at its own depth: every point by -f / 4
    np.testing.assert_allclose(fitted[-1, seen[-1], 0] - fitted[0, seen[-1], 0], -f * 0.25, atol=1e-3)


@pytest.mark.slow
def test_depth_from_a_local_model_in_the_official_folder_layout(tmp_path):
    """A tiny random Depth Anything saved with save_pretrained (config.json, model.safetensors,
    preprocessor_config.json): estimate_depth loads it offline and returns a positive map at the image size."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessorPil

    from trackstream.models.depth import estimate_depth

    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=28,
        patch_size=14,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    cfg = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
    )
    torch.manual_seed(0)
    folder = tmp_path / "depth-model"
    DepthAnythingForDepthEstimation(cfg).save_pretrained(folder)
    DPTImageProcessorPil(
        size={"height": 28, "width": 28}, keep_aspect_ratio=False, ensure_multiple_of=14
    ).save_pretrained(folder)
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = estimate_depth(image, folder)
    assert depth.shape == (H, W) and np.isfinite(depth).all() and depth.min() >= 1.0 and depth.max() <= 20.0
    with pytest.raises(ValueError, match="not a transformers model folder"):
        estimate_depth(image, tmp_path)
    # docs/control.md's line with that folder as its $DEPTH: a dolly's tracks, frame 0 the grid
    reader = reader_folder(tmp_path / "reader")
    run_documented(documented_line("docs/control.md", "--depth-model $DEPTH"), reader, variables={"DEPTH": folder})
    tracks = np.load(reader / "cam.npy")
    assert tracks.shape[0] == 81 and np.isfinite(tracks).all() and (reader / "cam.visibility.npy").is_file()
