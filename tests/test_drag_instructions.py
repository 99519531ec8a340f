"""Drag instructions: arc-length resampling of clicked paths, the rotation sign convention (y down),
how each trajectory type moves a region's pixels, and DragStream's JSON + PNG masks both ways."""

import json

import numpy as np
import pytest

from trackstream.stream.drag.geometry import resample_path, signed_angle
from trackstream.stream.drag.instructions import (
    Deformation,
    DragInstruction,
    Rotation2D,
    Rotation3D,
    Translation,
    read_dragstream,
    write_dragstream,
)


def test_resampled_paths_are_equally_spaced_and_keep_their_ends():
    pts = resample_path([[0, 0], [10, 0]], 5)  # a straight click pair: linear spline
    np.testing.assert_allclose(pts, [[0, 0], [2.5, 0], [5, 0], [7.5, 0], [10, 0]], atol=1e-6)
    curve = resample_path([[0, 0], [10, 10], [20, 0], [30, 10]], 7)
    steps = np.linalg.norm(np.diff(curve, axis=0), axis=1)
    assert steps.std() / steps.mean() < 0.01  # equal arc length (to the dense grid's resolution)
    np.testing.assert_allclose(curve[[0, -1]], [[0, 0], [30, 10]], atol=1e-6)  # clamped: ends are clicked
    np.testing.assert_allclose(resample_path([[4, 5]], 3), [[4, 5]] * 3)  # one click: the start repeated


def test_rotation_sign_is_clockwise_on_screen_and_pixels_follow():
    assert signed_angle([0, 0], [1, 0], [0, 1]) == pytest.approx(90.0)  # right -> down: clockwise (y down)
    assert signed_angle([0, 0], [1, 0], [0, -1]) == pytest.approx(-90.0)
    rot = Rotation2D(center=np.array([10.0, 10.0]), start=np.array([20.0, 10.0]), arms=np.array([[10.0, 20.0]]))
    np.testing.assert_allclose(rot.displace(np.array([[20.0, 10.0], [10.0, 0.0]]), 1), [[10, 20], [20, 10]], atol=1e-9)


def test_translation_deformation_and_3d_rotation_move_points_as_specified():
    t = Translation(points=np.array([[5.0, 5.0], [8.0, 9.0], [11.0, 13.0]]))
    np.testing.assert_allclose(t.displace(np.array([[0.0, 0.0]]), 2), [[6, 8]])  # absolute from the handle
    d = Deformation(handles=np.array([[[0.0, 0.0], [0.0, 10.0]], [[20.0, 0.0], [20.0, 0.0]]]))  # one moves, one pinned
    out = d.displace(np.array([[0.0, 0.0], [20.0, 0.0], [10.0, 0.0]]), 1)
    np.testing.assert_allclose(out[:2], [[0, 10], [20, 0]], atol=1e-6)  # handles move exactly as asked
    assert out[2, 1] == pytest.approx(5.0)  # midway: the mean of both
    r3 = Rotation3D(center=np.array([10.0, 10.0]), axis=np.array([0.0, 1.0, 0.0]), angles=np.array([60.0]))
    np.testing.assert_allclose(r3.displace(np.array([[14.0, 10.0], [10.0, 14.0]]), 1), [[12, 10], [10, 14]], atol=1e-9)
    # about the vertical axis: x shrinks by cos 60 degrees, y stays (orthographic projection)


def _masks(h=32, w=48):
    obj = np.zeros((h, w), bool)
    obj[10:16, 10:16] = True
    edit = np.zeros((h, w), bool)
    edit[5:25, 5:40] = True
    return obj, edit


def test_dragstream_json_round_trip_and_block_deltas(tmp_path):
    obj, edit = _masks()
    path = resample_path([[12, 12], [20, 14], [30, 20]], 1 + 3 * 2)
    instr = DragInstruction(
        mode="animate",
        num_chunks=2,
        prompt="a cat",
        trajectories=[
            Translation(points=path, control_points=np.array([[12, 12], [20, 14], [30, 20]])),
            Rotation2D(
                center=np.array([13.0, 13.0]),
                start=np.array([16.0, 13.0]),
                arms=np.array([[16.0, 13.0 + k] for k in range(1, 7)]),
            ),
        ],
        object_masks=[obj, obj],
        editable=edit,
    )
    file = write_dragstream(instr, tmp_path, prefix="block_3_Animation")
    doc = json.loads(file.read_text())
    assert doc["drag_or_animation_select"] == "Animation" and doc["block_number"] == 2
    blocks = doc["trajectories"][0]["block_trajectories"]
    assert [len(b["deltas"]) for b in blocks] == [3, 3]
    np.testing.assert_allclose(blocks[1]["deltas"][2], path[6] - path[0])  # absolute from the handle
    assert doc["trajectories"][1]["block_trajectories"][0]["deltas"][0] > 0  # arm swung down: clockwise, positive
    back = read_dragstream(file)
    assert back.mode == "animate" and back.num_chunks == 2 and back.prompt == "a cat"
    np.testing.assert_allclose(back.trajectories[0].points, path)
    assert back.trajectories[1].angle(3) == pytest.approx(instr.trajectories[1].angle(3))
    assert (back.object_masks[0] == obj).all() and (back.editable == edit).all()


def test_bad_instructions_name_the_problem(tmp_path):
    obj, edit = _masks()
    t = Translation(points=np.array([[0.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="mode='move'"):
        DragInstruction(mode="move", trajectories=[t], object_masks=[obj], editable=edit)
    with pytest.raises(ValueError, match="needs 6"):
        DragInstruction(mode="animate", num_chunks=2, trajectories=[t], object_masks=[obj], editable=edit)
    with pytest.raises(ValueError, match="one mask per trajectory"):
        DragInstruction(mode="edit", trajectories=[t, t], object_masks=[obj], editable=edit)
    (tmp_path / "x_trajectory.json").write_text(json.dumps({"trajectories": []}))
    with pytest.raises(ValueError, match="drag_or_animation_select"):
        read_dragstream(tmp_path / "x_trajectory.json")


@pytest.mark.parametrize(
    ("points", "what"),
    [
        ([[12, 12], [float("nan"), 14]], r"points\[1\] = \[nan, 14.0\] is not finite"),
        ([[12, 12], [1e9, 14]], r"points\[1\] = \[1000000000.0, 14.0\] is more than 1 frame size"),
        ([[12, 12, 3]], "must be a non-empty list of \\[x, y\\] pixel points"),
        ([], "must be a non-empty list"),
    ],
)
def test_a_drag_file_with_unusable_points_is_a_one_line_error_naming_the_field(tmp_path, points, what):
    """The drag CLI's and drag benchmark's input: NaN or 1e9 handle points are refused, not dropped."""
    obj, edit = _masks()
    instr = DragInstruction(
        mode="edit",
        trajectories=[Translation(points=np.array([[12.0, 12], [20, 14]]))],
        object_masks=[obj],
        editable=edit,
    )
    file = write_dragstream(instr, tmp_path)
    doc = json.loads(file.read_text())
    doc["trajectories"][0]["original_trajectory"]["points"] = points
    doc["trajectories"][0]["original_trajectory"]["control_points"] = None
    file.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=what) as err:
        read_dragstream(file)
    assert "\n" not in str(err.value) and "trajectories[0].original_trajectory.points" in str(err.value)
    file.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_dragstream(file)
