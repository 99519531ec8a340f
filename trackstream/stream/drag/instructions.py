"""Drag instructions: what a user asks DragStream to do, typed, and DragStream's saved JSON format.

An instruction is a mode — ``edit`` (re-generate the current chunk so its last latent frame shows
the drag) or ``animate`` (steer the next ``num_chunks`` chunks, one target per latent frame) — one or
more trajectories, each with the mask of the object it moves, and an editable-area mask (what may
change besides the object's new place). A trajectory maps the object's pixels to where they should
be at step k (k = 1..K: the last latent frame for an edit, every latent frame of the animated chunks):

* ``Translation``: a path; step k moves the region by ``points[k] - points[0]`` (absolute, not
  cumulative, as DragStream stores it). A clicked path is smoothed by a clamped B-spline and
  resampled to equal arc length (``resample_path``), as DragStream's GUI does.
* ``Deformation``: several handles inside one mask, each with its own path; a pixel follows the
  inverse-distance-weighted mean of the handles' displacements (power 2), so the shape bends.
* ``Rotation2D``: a centre, a start arm point and one arm point per step; the angle is signed in image
  coordinates (x right, y down) by the cross product v1.x v2.y - v1.y v2.x, so positive = clockwise on
  screen (DragStream's convention); pixels rotate about the centre.
* ``Rotation3D``: a rotation of the (flat, depth 0) region about an axis through its centre by one
  angle per step, orthographically projected back onto the image.

``read_dragstream`` / ``write_dragstream`` convert from / to DragStream's ``{prefix}_trajectory.json``
+ PNG masks (DragStream's released demo format): ``drag_or_animation_select`` Drag | Animation,
``block_number``, ``movable_area_mask_file``, and per trajectory ``original_trajectory`` {is_rotation,
control_points, points} + ``mask_file`` (+ ``block_trajectories``, recomputed on write). Deformation
and 3D rotation have no DragStream counterpart (its GUI builds them from several translations).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from trackstream.stream.drag.geometry import read_mask, rotate_points, signed_angle, write_mask

__all__ = [
    "Translation",
    "Deformation",
    "Rotation2D",
    "Rotation3D",
    "DragInstruction",
    "read_dragstream",
    "write_dragstream",
    "BLOCK_LENGTH",
    "partial_displace",
    "positions_at",
    "step_offsets",
    "frame_positions",
    "magnitude",
]

BLOCK_LENGTH = 3  # latent frames per chunk (c3): DragStream chunks its deltas 3 per block


@dataclass
class Translation:
    points: np.ndarray  # [K + 1, 2]: points[0] the handle, points[k] its place at step k
    control_points: np.ndarray | None = None  # the raw clicks, if the path was resampled from them

    @property
    def steps(self) -> int:
        return len(self.points) - 1

    def displace(self, pts: np.ndarray, k: int) -> np.ndarray:
        return pts + (self.points[k] - self.points[0])

    @property
    def handle(self) -> np.ndarray:
        return self.points[0]


@dataclass
class Deformation:
    handles: np.ndarray  # [H, K + 1, 2]: each handle's path

    @property
    def steps(self) -> int:
        return self.handles.shape[1] - 1

    def displace(self, pts: np.ndarray, k: int) -> np.ndarray:
        d = np.linalg.norm(pts[:, None] - self.handles[None, :, 0], axis=-1)  # [N, H]
        w = 1.0 / np.maximum(d, 1e-6) ** 2
        w /= w.sum(axis=1, keepdims=True)
        return pts + w @ (self.handles[:, k] - self.handles[:, 0])

    @property
    def handle(self) -> np.ndarray:
        return self.handles[:, 0].mean(axis=0)


@dataclass
class Rotation2D:
    center: np.ndarray  # [2]
    start: np.ndarray  # [2] the start arm point
    arms: np.ndarray  # [K, 2] the arm point at each step

    @property
    def steps(self) -> int:
        return len(self.arms)

    @classmethod
    def about(cls, center, start, degrees: float, steps: int) -> "Rotation2D":
        """A turn of ``degrees`` (positive: clockwise on screen) about ``center`` in ``steps`` equal steps,
        the arm starting at ``start`` (the demo's rotate gesture)."""
        c, s0 = np.asarray(center, np.float64), np.asarray(start, np.float64)
        arms = np.concatenate([rotate_points(s0[None], c, degrees * k / steps) for k in range(1, steps + 1)])
        return cls(center=c, start=s0, arms=arms)

    def angle(self, k: int) -> float:
        return signed_angle(self.center, self.start, self.arms[k - 1])

    def displace(self, pts: np.ndarray, k: int) -> np.ndarray:
        return rotate_points(pts, np.asarray(self.center, np.float64), self.angle(k))

    @property
    def handle(self) -> np.ndarray:
        return np.asarray(self.start, np.float64)


@dataclass
class Rotation3D:
    center: np.ndarray  # [2] pixels; the region lies in the image plane (depth 0) around it
    axis: np.ndarray  # [3] (x right, y down, z into the screen), normalised here
    angles: np.ndarray  # [K] degrees, right-handed about ``axis``

    @property
    def steps(self) -> int:
        return len(self.angles)

    def displace(self, pts: np.ndarray, k: int) -> np.ndarray:
        a = np.asarray(self.axis, np.float64) / np.linalg.norm(self.axis)
        t = math.radians(float(self.angles[k - 1]))
        skew = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
        rot = np.eye(3) + math.sin(t) * skew + (1 - math.cos(t)) * skew @ skew  # Rodrigues
        p = np.concatenate([pts - self.center, np.zeros((len(pts), 1))], axis=1)  # [N, 3], depth 0
        return (p @ rot.T)[:, :2] + self.center  # orthographic projection

    @property
    def handle(self) -> np.ndarray:
        return np.asarray(self.center, np.float64)


Trajectory = Union[Translation, Deformation, Rotation2D, Rotation3D]


@dataclass
class DragInstruction:
    mode: str  # "edit" | "animate"
    trajectories: list  # of Trajectory
    object_masks: list  # bool [H, W] per trajectory: the pixels the trajectory moves
    editable: np.ndarray  # bool [H, W]: may change besides the objects' new places
    num_chunks: int = 1  # animate: chunks to steer (3 latent frames each); edit: 1
    prompt: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("edit", "animate"):
            raise ValueError(f"mode={self.mode!r}; choose edit (the current chunk) or animate (the next chunks)")
        if not self.trajectories or len(self.trajectories) != len(self.object_masks):
            raise ValueError(
                f"{len(self.trajectories)} trajectories but {len(self.object_masks)} object masks: "
                "give one mask per trajectory"
            )
        want = 1 if self.mode == "edit" else BLOCK_LENGTH * self.num_chunks
        for i, t in enumerate(self.trajectories):
            if t.steps != want:
                raise ValueError(
                    f"trajectory {i} has {t.steps} steps; mode {self.mode} with num_chunks="
                    f"{self.num_chunks} needs {want} (one per steered latent frame)"
                )
        shape = np.asarray(self.editable).shape
        if any(np.asarray(m).shape != shape for m in self.object_masks):
            raise ValueError(f"object masks and the editable mask must share one size ({shape})")

    @property
    def steps(self) -> int:
        return self.trajectories[0].steps


def swept_box(traj: Trajectory, pts: np.ndarray, *, height: int, width: int, margin: float) -> np.ndarray:
    """bool [height, width]: the box ``pts`` [N, 2] (x, y) sweep over every step of ``traj``, grown by
    ``margin`` pixels and clipped to the frame (an editable area for a drag)."""
    swept = np.concatenate([pts] + [traj.displace(pts, k) for k in range(1, traj.steps + 1)])
    x0, y0 = np.floor(swept.min(axis=0) - margin + 1e-6).astype(int)  # 1e-6: a resampled path's float error
    x1, y1 = np.ceil(swept.max(axis=0) + margin - 1e-6).astype(int)
    box = np.zeros((height, width), bool)
    box[max(y0, 0) : min(y1, height - 1) + 1, max(x0, 0) : min(x1, width - 1) + 1] = True
    return box


def partial_displace(traj: Trajectory, pts: np.ndarray, k: int, fraction: float) -> np.ndarray:
    """Where ``pts`` [N, 2] are a ``fraction`` of the way to step ``k``: rotations turn by that fraction of
    their angle (the path stays on the arc), translations and deformations move that fraction of their
    displacement. Coarse-to-fine optimisation walks these sub-targets."""
    pts = np.asarray(pts, np.float64)
    if fraction >= 1:
        return traj.displace(pts, k)
    if isinstance(traj, Rotation2D):
        return rotate_points(pts, np.asarray(traj.center, np.float64), fraction * traj.angle(k))
    if isinstance(traj, Rotation3D):
        scaled = Rotation3D(center=traj.center, axis=traj.axis, angles=np.asarray(traj.angles, np.float64) * fraction)
        return scaled.displace(pts, k)
    return pts + fraction * (traj.displace(pts, k) - pts)


def magnitude(traj: Trajectory, k: int, pts: np.ndarray) -> tuple[float, float]:
    """(largest displacement of ``pts`` in pixels, |angle| in degrees) of step ``k``; the angle is 0 for
    translations and deformations. Sets the number of coarse-to-fine segments."""
    move = float(np.linalg.norm(traj.displace(np.asarray(pts, np.float64), k) - pts, axis=1).max()) if len(pts) else 0.0
    if isinstance(traj, Rotation2D):
        return move, abs(traj.angle(k))
    if isinstance(traj, Rotation3D):
        return move, abs(float(traj.angles[k - 1]))
    return move, 0.0


def positions_at(traj: Trajectory, pts: np.ndarray, u: float) -> np.ndarray:
    """Positions [N, 2] at a continuous step ``u`` in [0, K]: step 0 is ``pts`` itself, between two steps
    the positions are interpolated linearly (the frames a latent frame's pixel frames sit between)."""
    pts = np.asarray(pts, np.float64)
    u = min(max(float(u), 0.0), float(traj.steps))
    k = int(math.ceil(u))
    if k == 0:
        return pts.copy()
    prev = pts if k == 1 else traj.displace(pts, k - 1)
    return prev + (u - (k - 1)) * (traj.displace(pts, k) - prev)


def step_offsets(instr: DragInstruction) -> np.ndarray:
    """Latent-frame offset of each step from the reference frame (the last latent frame shown before
    the drag): an edit's one step is the re-generated chunk's last latent frame (offset 3); an
    animation's step k is the k-th latent frame after the reference."""
    if instr.mode == "edit":
        return np.array([BLOCK_LENGTH], np.float64)
    return np.arange(1, instr.steps + 1, dtype=np.float64)


def frame_positions(
    instr: DragInstruction, traj: Trajectory, pts: np.ndarray, num_frames: int, *, temporal: int = 4
) -> np.ndarray:
    """Intended positions [T, N, 2] of ``pts`` at the ``num_frames`` pixel frames after the reference
    frame (frame 0 = the reference itself): pixel offset p is latent offset p / ``temporal`` (Wan's 4x
    temporal grouping), mapped piecewise linearly onto the steps; past the last step it holds."""
    offsets = np.concatenate([[0.0], step_offsets(instr)])
    steps = np.arange(len(offsets), dtype=np.float64)
    return np.stack(
        [positions_at(traj, pts, float(np.interp(p / temporal, offsets, steps))) for p in range(num_frames)]
    )


def write_dragstream(instr: DragInstruction, directory: str | Path, prefix: str = "drag") -> Path:
    """``{prefix}_trajectory.json`` + PNG masks in DragStream's format (translations and 2D rotations)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_mask(directory / f"{prefix}_movable_area.png", instr.editable)
    trajs = []
    for i, (t, m) in enumerate(zip(instr.trajectories, instr.object_masks)):
        if isinstance(t, Translation):
            points = np.asarray(t.points, np.float64)
            original = {
                "is_rotation": False,
                "points": points.tolist(),
                "control_points": (t.control_points if t.control_points is not None else points).tolist(),
            }
            deltas = [(points[k + 1] - points[0]).tolist() for k in range(t.steps)]
            extra = {"start_point": points[0].tolist()}
        elif isinstance(t, Rotation2D):
            original = {
                "is_rotation": True,
                "points": [
                    list(map(float, t.center)),
                    list(map(float, t.start)),
                    *np.asarray(t.arms, np.float64).tolist(),
                ],
            }
            deltas = [t.angle(k) for k in range(1, t.steps + 1)]
            extra = {"start_point": list(map(float, t.start)), "rotation_center": list(map(float, t.center))}
        else:
            raise ValueError(
                f"trajectory {i}: {type(t).__name__} has no DragStream counterpart (translations and 2D rotations only)"
            )
        blocks = [
            {"is_rotation": original["is_rotation"], "deltas": deltas[b : b + BLOCK_LENGTH], **extra}
            for b in range(0, len(deltas), BLOCK_LENGTH)
        ]
        write_mask(directory / f"{prefix}_mask_{i}.png", m)
        trajs.append(
            {"original_trajectory": original, "block_trajectories": blocks, "mask_file": f"{prefix}_mask_{i}.png"}
        )
    doc = {
        "block_number": instr.num_chunks,
        "prompt": instr.prompt,
        "drag_or_animation_select": "Drag" if instr.mode == "edit" else "Animation",
        "movable_area_mask_file": f"{prefix}_movable_area.png",
        "trajectories": trajs,
    }
    path = directory / f"{prefix}_trajectory.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def _checked_points(points, where: str, shape: tuple[int, int]) -> np.ndarray:
    """[K, 2] pixel (x, y) points of a drag, finite and within ``TRACK_MARGIN`` frame sizes of the
    ``shape`` (H, W) frame (the masks' size): what ``data.track_inputs.check_tracks`` asks of input tracks."""
    from trackstream.data.track_inputs import TRACK_MARGIN

    try:
        pts = np.asarray(points, np.float64)
    except (TypeError, ValueError):
        pts = np.zeros((0, 0))
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise ValueError(f"{where} must be a non-empty list of [x, y] pixel points, got {str(points)[:60]}")
    if not np.isfinite(pts).all():
        k = int(np.argwhere(~np.isfinite(pts))[0][0])
        raise ValueError(f"{where}[{k}] = {pts[k].tolist()} is not finite; give every point a pixel position")
    h, w = shape
    lo, hi = -TRACK_MARGIN * np.array([w, h]), (1 + TRACK_MARGIN) * np.array([w, h])
    out = ((pts < lo) | (pts > hi)).any(-1)
    if out.any():
        k = int(np.argmax(out))
        raise ValueError(
            f"{where}[{k}] = {pts[k].tolist()} is more than {TRACK_MARGIN:g} frame size(s) outside the {w}x{h} "
            "frame of the masks; points are pixel coordinates at the masks' size"
        )
    return pts


def read_dragstream(path: str | Path) -> DragInstruction:
    """A DragStream ``*_trajectory.json`` (+ its PNG masks beside it) -> ``DragInstruction``."""
    from trackstream.models.formats.files import read_json_file

    path = Path(path)
    doc = read_json_file(path, fix="write it with stream.drag.instructions.write_dragstream or DragStream's UI")
    if not isinstance(doc, dict):
        raise ValueError(f"{path} holds a JSON {type(doc).__name__}; not a DragStream trajectory file")
    for key in ("drag_or_animation_select", "trajectories", "movable_area_mask_file"):
        if key not in doc:
            raise ValueError(f"{path}: field {key!r} missing; not a DragStream trajectory file")
    mode = {"Drag": "edit", "Animation": "animate"}.get(doc["drag_or_animation_select"])
    if mode is None:
        raise ValueError(
            f"{path}: drag_or_animation_select={doc['drag_or_animation_select']!r}; expected Drag or Animation"
        )
    chunks = 1 if mode == "edit" else int(doc.get("block_number", 1))
    editable = read_mask(path.parent / doc["movable_area_mask_file"])
    trajs, masks = [], []
    for i, t in enumerate(doc["trajectories"]):
        o = t["original_trajectory"]
        pts = _checked_points(o["points"], f"{path}: trajectories[{i}].original_trajectory.points", editable.shape)
        if o.get("is_rotation"):
            if len(pts) < 3:
                raise ValueError(f"{path}: rotation trajectory {i} needs centre, start and at least one arm point")
            trajs.append(Rotation2D(center=pts[0], start=pts[1], arms=pts[2:]))
        else:
            control = o.get("control_points")
            if control is not None:
                where = f"{path}: trajectories[{i}].original_trajectory.control_points"
                control = _checked_points(control, where, editable.shape)
            trajs.append(Translation(points=pts, control_points=control))
        masks.append(read_mask(path.parent / t["mask_file"]))
    return DragInstruction(
        mode=mode,
        trajectories=trajs,
        object_masks=masks,
        num_chunks=chunks,
        editable=editable,
        prompt=doc.get("prompt", ""),
        meta={"source": str(path)},
    )
