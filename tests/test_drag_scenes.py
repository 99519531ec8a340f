"""Synthetic drag scenes (trackstream/eval/drag_scenes.py): deterministic, every kind x mode, and the ground-truth video
really shows the drag - checked against the instruction's own geometry, not against the renderer."""

import cv2
import numpy as np
import pytest

from trackstream.eval.drag_scene_frames import invert_field
from trackstream.eval.drag_scenes import KINDS, MODES, make_scenes, read_scene, render_scene, scene_frames, write_scene
from trackstream.stream.drag.instructions import (
    Deformation,
    Rotation2D,
    Rotation3D,
    Translation,
    frame_positions,
    positions_at,
    step_offsets,
)


@pytest.fixture(scope="module")
def rendered():
    """(scene, alpha [T, H, W]) for the first 8 scenes of seed 0: one of each (kind, mode)."""
    return [render_scene(i, seed=0) for i in range(8)]


def _same_traj(a, b) -> bool:
    if type(a) is not type(b):
        return False
    fields = {
        Translation: ("points", "control_points"),
        Deformation: ("handles",),
        Rotation2D: ("center", "start", "arms"),
        Rotation3D: ("center", "axis", "angles"),
    }[type(a)]
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in fields)


def _same_scene(a, b) -> bool:
    ia, ib = a.instruction, b.instruction
    return (
        a.name == b.name
        and a.kind == b.kind
        and a.caption == b.caption
        and a.seed == b.seed
        and np.array_equal(a.image, b.image)
        and np.array_equal(a.gt_video, b.gt_video)
        and np.array_equal(a.object_mask, b.object_mask)
        and np.array_equal(ia.editable, ib.editable)
        and all(np.array_equal(x, y) for x, y in zip(ia.object_masks, ib.object_masks))
        and ia.mode == ib.mode
        and ia.num_chunks == ib.num_chunks
        and ia.prompt == ib.prompt
        and ia.meta == ib.meta
        and all(_same_traj(x, y) for x, y in zip(ia.trajectories, ib.trajectories))
    )


def _centroid(alpha: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[0 : alpha.shape[0], 0 : alpha.shape[1]]
    return np.array([(alpha * xs).sum(), (alpha * ys).sum()]) / alpha.sum()


@pytest.mark.slow
def test_scenes_are_deterministic_and_cover_every_kind_and_mode(rendered):
    first, again, other = make_scenes(8), make_scenes(8), make_scenes(8, seed=1)
    assert all(_same_scene(a, b) for a, b in zip(first, again))
    assert all(_same_scene(a, s) for a, (s, _) in zip(first, rendered))  # make_scenes is render_scene's scenes
    assert not any(np.array_equal(a.gt_video, b.gt_video) for a, b in zip(first, other))
    assert {(s.kind, s.instruction.mode) for s in first} == {(k, m) for k in KINDS for m in MODES}
    assert len({s.name for s in first}) == 8 and first[3].name == "rotate3d-animate-03"


def test_frames_steps_and_first_frame(rendered):
    for s, alpha in rendered:
        animate = s.instruction.mode == "animate"
        assert s.instruction.steps == (6 if animate else 1) and s.instruction.num_chunks == (2 if animate else 1)
        assert scene_frames(s) == len(s.gt_video) == len(alpha) == (25 if animate else 13)
        assert s.gt_video.dtype == np.uint8 and s.gt_video.shape[1:] == s.image.shape == (64, 64, 3)
        assert np.array_equal(s.gt_video[0], s.image)
        assert np.array_equal(s.object_mask, alpha[0] > 0.5) and s.object_mask.sum() > 50
        assert s.instruction.meta["scene"] == s.name and s.caption.endswith("background.")
        # rigid drags keep the sprite whole and in view (a rotation turns on the arc, never shrinking on the chord)
        if s.kind in ("translate", "rotate2d"):
            np.testing.assert_allclose(alpha.sum(axis=(1, 2)), alpha[0].sum(), rtol=0.02)


def test_editable_holds_the_object_and_all_its_intended_places(rendered):
    for s, alpha in rendered:
        instr, traj = s.instruction, s.instruction.trajectories[0]
        editable = instr.editable
        assert not (s.object_mask & ~editable).any()
        ys, xs = np.nonzero(s.object_mask)
        pts = np.stack([xs, ys], axis=1).astype(np.float64)
        places = [traj.displace(pts, k) for k in range(1, traj.steps + 1)]
        places += list(frame_positions(instr, traj, pts, scene_frames(s)))
        for q in places:
            q = np.rint(q).astype(int)
            assert editable[q[:, 1], q[:, 0]].all(), s.name
        assert not ((alpha > 0.5) & ~editable[None]).any(), s.name  # the rendered sprite too
        reach = np.zeros(editable.shape, np.uint8)  # with slack for antialiased edges: 2 of the 3 px dilation
        for q in places:
            q = np.rint(q).astype(int)
            reach[q[:, 1], q[:, 0]] = 1
        assert not ((cv2.dilate(reach, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))) > 0) & ~editable).any()
        assert editable.mean() < 0.5  # and it is not the whole frame
        # the background never changes outside the places the sprite visits
        outside = ~editable
        assert np.array_equal(s.gt_video[:, outside], np.repeat(s.image[None, outside], len(s.gt_video), axis=0))


def test_translated_sprite_lands_on_the_path(rendered):
    for s, alpha in (r for r in rendered if r[0].kind == "translate"):
        instr, traj = s.instruction, s.instruction.trajectories[0]
        assert np.array_equal(traj.points[0], traj.handle)
        np.testing.assert_allclose(_centroid(alpha[0]), traj.points[0], atol=1.0)
        np.testing.assert_allclose(_centroid(alpha[-1]), traj.points[-1], atol=1.0)
        length = np.linalg.norm(np.diff(traj.points, axis=0), axis=1).sum()
        assert 0.2 * 64 - 0.1 <= length <= 0.35 * 64
        # every frame: the alpha centroid moves exactly as the handle's intended positions (bilinear keeps it)
        want = frame_positions(instr, traj, _centroid(alpha[0])[None], len(alpha))[:, 0]
        got = np.stack([_centroid(a) for a in alpha])
        np.testing.assert_allclose(got, want, atol=0.05)


def _turn_error(scene, alpha: np.ndarray, degrees: float) -> float:
    """Mean grey-level gap, inside the sprite, between the last gt frame and the first frame turned by
    ``degrees`` (clockwise on screen) about the rotation centre."""
    centre = tuple(map(float, scene.instruction.trajectories[0].center))
    m = cv2.getRotationMatrix2D(centre, -degrees, 1.0)  # cv2: positive = counter-clockwise on screen
    turned = cv2.warpAffine(scene.image.astype(np.float32), m, (64, 64), flags=cv2.INTER_LINEAR)
    # the reference is resampled twice (sprite -> frame 0 -> turned): blur both alike so that only the
    # texture's layout, not interpolation softness, decides (sigma 1 px)
    turned = cv2.GaussianBlur(turned, (0, 0), 1.0)
    last = cv2.GaussianBlur(scene.gt_video[-1].astype(np.float32), (0, 0), 1.0)
    inner = cv2.erode((alpha[-1] > 0.99).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return float(np.abs(turned[inner] - last[inner]).mean())


def test_rotated_sprite_turns_about_its_centre_by_the_drawn_angle(rendered):
    for s, alpha in (r for r in rendered if r[0].kind == "rotate2d"):
        traj = s.instruction.trajectories[0]
        angle = traj.angle(traj.steps)
        assert 45 - 1e-6 <= abs(angle) <= 90 + 1e-6
        for a in alpha:
            np.testing.assert_allclose(_centroid(a), traj.center, atol=1.0)
        # over 120 seeded scenes: right angle < 3 grey levels and < 0.33 x the best wrong one
        right, wrong = _turn_error(s, alpha, angle), min(_turn_error(s, alpha, -angle), _turn_error(s, alpha, 0.0))
        assert right < 4.0 and right < 0.5 * wrong, s.name


def test_3d_rotation_foreshortens_and_deformation_stretches_as_the_forward_map_says(rendered):
    for s, alpha in rendered:
        traj = s.instruction.trajectories[0]
        if isinstance(traj, Rotation3D):  # orthographic: area shrinks by |cos| of the angle, turning on the arc
            offsets = np.concatenate([[0.0], step_offsets(s.instruction)])
            for p, a in enumerate(alpha):
                u = np.interp(p / 4, offsets, np.arange(len(offsets)))  # frame p's continuous step
                theta = np.interp(u, np.arange(traj.steps + 1), np.concatenate([[0.0], traj.angles]))
                assert a.sum() / alpha[0].sum() == pytest.approx(abs(np.cos(np.radians(theta))), rel=0.06), s.name
        if isinstance(traj, Deformation):
            h = np.rint(traj.handles[:, 0]).astype(int)
            assert s.object_mask[h[:, 1], h[:, 0]].all()  # both handles grab the sprite
            axis = traj.handles[1, -1] - traj.handles[1, 0]
            axis /= np.linalg.norm(axis)
            ys, xs = np.nonzero(s.object_mask)
            pts = np.stack([xs, ys], axis=1).astype(np.float64)
            ye, xe = np.nonzero(alpha[-1] > 0.5)
            got = np.stack([xe, ye], axis=1) @ axis
            want = traj.displace(pts, traj.steps) @ axis  # where the forward map sends the first mask
            assert abs(got.max() - want.max()) <= 1.0 and abs(got.min() - want.min()) <= 1.0, s.name
            assert np.ptp(got) - np.ptp(pts @ axis) >= 1.5  # a visible stretch
            # the backward map really inverts the forward one at every frame's step (not just to first order)
            box = np.stack(np.meshgrid(np.arange(64.0), np.arange(64.0)), axis=-1).reshape(-1, 2)
            for u in np.linspace(0, traj.steps, 7):
                np.testing.assert_allclose(positions_at(traj, invert_field(traj, u, box), u), box, atol=1e-3)


def test_write_and_read_round_trip(rendered, tmp_path):
    for s, _ in rendered:
        write_scene(s, tmp_path / s.name)
        fmt = "drag_trajectory.json" if s.kind in ("translate", "rotate2d") else "drag_instruction.json"
        assert (tmp_path / s.name / fmt).is_file() and (tmp_path / s.name / "image.png").is_file()
        assert _same_scene(read_scene(tmp_path / s.name), s), s.name


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="count"):
        make_scenes(0)
    with pytest.raises(ValueError, match="too small"):
        make_scenes(1, sprite_size=(0.8, 0.9))
    with pytest.raises(ValueError, match="sprite_size"):
        make_scenes(1, sprite_size=(0.3, 0.2))
    with pytest.raises(ValueError, match="scene.json"):
        read_scene(tmp_path)
