"""Per-frame geometry and rendering of the synthetic drag scenes (see ``trackstream.eval.drag_scenes``).

Why a separate module: the scene builder draws every random choice; what follows is deterministic given
the instruction, the sprite and the background, so it can be read (and tested) on its own."""

from __future__ import annotations

import cv2
import numpy as np

from trackstream.stream.drag.instructions import (
    Deformation,
    DragInstruction,
    Rotation2D,
    Rotation3D,
    frame_positions,
    partial_displace,
    positions_at,
    step_offsets,
)

TEMPORAL = 4  # pixel frames per latent frame (Wan's 4x grouping; frame_positions' default)
EDITABLE_DILATE = 3  # px: slack around the object's places for antialiased edges and rounding


def _frame_step(instr: DragInstruction, p: int) -> float:
    """Continuous step of pixel frame p, exactly as ``frame_positions`` maps it."""
    offsets = np.concatenate([[0.0], step_offsets(instr)])
    return float(np.interp(p / TEMPORAL, offsets, np.arange(len(offsets), dtype=np.float64)))


def _intended(instr: DragInstruction, traj, pts: np.ndarray, p: int) -> np.ndarray:
    """Where ``pts`` [N, 2] should be in pixel frame p: ``frame_positions``' frame p, except that rotations
    turn on the arc between steps (by the linearly interpolated angle) where ``positions_at`` takes the
    chord. Both agree on every step's frame; the chord would shrink an edit's one 90-degree step to 71 %
    halfway, which no editor should be asked to reproduce (for 15-degree animation steps they differ by < 0.1 px)."""
    u = _frame_step(instr, p)
    if isinstance(traj, (Rotation2D, Rotation3D)):
        steps = traj.steps
        angles = (
            [traj.angle(k) for k in range(1, steps + 1)]
            if isinstance(traj, Rotation2D)
            else list(np.asarray(traj.angles, np.float64))
        )
        theta = float(np.interp(u, np.arange(steps + 1), [0.0] + angles))
        return partial_displace(traj, pts, steps, theta / angles[-1]) if angles[-1] else np.array(pts, np.float64)
    return positions_at(traj, pts, u)


def invert_field(traj, u: float, out: np.ndarray, iterations: int = 40) -> np.ndarray:
    """Source points [N, 2] whose positions at continuous step ``u`` are ``out`` [N, 2].

    Solves x + d(x) = out with d(x) = positions_at(traj, x, u) - x. Plain fixed-point iteration
    x <- out - d(x) diverges where the stretch's gradient exceeds 1 (between the handles it reaches
    ~2 for the strongest scenes), so each update is damped by half: it converges for gradients in (-1, 3)."""
    x = out.copy()
    for _ in range(iterations):
        x = 0.5 * x + 0.5 * (out - (positions_at(traj, x, u) - x))
    return x


def warp_sprite(rgba: np.ndarray, matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """The sprite's premultiplied RGBA [H, W, 4] placed in the frame by the affine ``matrix`` [2, 3]."""
    return cv2.warpAffine(
        rgba, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def reachable_mask(instr: DragInstruction, traj, object_mask: np.ndarray, steps: int, frames: int) -> np.ndarray:
    """Bool [H, W]: the object and every place the instruction sends it (steps, ``frame_positions``' frames
    and the rendered arc places), dilated by ``EDITABLE_DILATE``."""
    height, width = object_mask.shape
    ys, xs = np.nonzero(object_mask)
    pts = np.stack([xs, ys], axis=1).astype(np.float64)  # [N, 2] (x, y) pixel centres of the object
    moved = [traj.displace(pts, k) for k in range(1, steps + 1)]
    moved += list(frame_positions(instr, traj, pts, frames, temporal=TEMPORAL))  # between steps too
    moved += [_intended(instr, traj, pts, p) for p in range(frames)]  # the rendered (arc) places
    moved = np.rint(np.concatenate(moved)).astype(np.int64)  # [(K + 2T) N, 2]
    inside = (moved[:, 0] >= 0) & (moved[:, 0] < width) & (moved[:, 1] >= 0) & (moved[:, 1] < height)
    reach = np.zeros((height, width), np.uint8)
    reach[moved[inside, 1], moved[inside, 0]] = 1
    reach[object_mask] = 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * EDITABLE_DILATE + 1,) * 2)
    return cv2.dilate(reach, kernel) > 0


def _deform_layer(instr, traj, rgba, layer0, m0_h, box_origin, bx, box, p: int) -> np.ndarray:
    """Frame p of a deformation: the reachable box backward-mapped into the sprite canvas and sampled."""
    x0, y0 = box_origin
    to_sprite = np.linalg.inv(m0_h)[:2]  # [2, 3] frame -> sprite canvas
    src = invert_field(traj, _frame_step(instr, p), box)
    uv = src @ to_sprite[:, :2].T + to_sprite[:, 2]  # [h * w, 2] sprite canvas coords
    patch = cv2.remap(
        rgba,
        uv[:, 0].reshape(bx.shape).astype(np.float32),
        uv[:, 1].reshape(bx.shape).astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )  # [h, w, 4]
    layer = np.zeros_like(layer0)
    layer[y0 : y0 + bx.shape[0], x0 : x0 + bx.shape[1]] = patch
    return layer


def render_frames(
    instr: DragInstruction,
    traj,
    rgba: np.ndarray,
    background: np.ndarray,
    m0: np.ndarray,
    layer0: np.ndarray,
    centre: np.ndarray,
    radius: float,
    places: np.ndarray,
    frames: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth uint8 [T, H, W, 3] and sprite alpha float32 [T, H, W]: the sprite (first placed by
    ``m0``, giving ``layer0``) moved as ``_intended`` says, "over" the background in every frame.
    ``places`` [M, 2] are the sprite's reachable offsets from ``centre``, bounding a deformation's box."""
    height, width = background.shape[:2]
    m0_h = np.vstack([m0.astype(np.float64), [0, 0, 1]])  # [3, 3]
    tri = centre + np.array([[0.0, 0.0], [radius, 0.0], [0.0, radius]])  # 3 non-collinear frame points
    tri_at = np.stack([_intended(instr, traj, tri, p) for p in range(frames)])  # [T, 3, 2]
    src_h = np.concatenate([tri, np.ones((3, 1))], axis=1)  # [3, 3] rows (x, y, 1)
    if isinstance(traj, Deformation):  # backward mapping only near the sprite's reachable box
        x0, y0 = np.floor(places.min(0) + centre - 2).astype(int).clip(0)
        x1, y1 = np.ceil(places.max(0) + centre + 2).astype(int) + 1
        bx, by = np.meshgrid(np.arange(x0, min(x1, width)), np.arange(y0, min(y1, height)))
        box = np.stack([bx, by], axis=-1).reshape(-1, 2).astype(np.float64)  # [h * w, 2] (x, y)

    gt = np.empty((frames, height, width, 3), np.uint8)
    alpha = np.empty((frames, height, width), np.float32)
    for p in range(frames):
        if p == 0:
            layer = layer0
        elif isinstance(traj, Deformation):
            layer = _deform_layer(instr, traj, rgba, layer0, m0_h, (x0, y0), bx, box, p)
        else:  # the frame's motion is affine: solve it from 3 points, then compose with the sprite's own
            a_p = np.linalg.lstsq(src_h, tri_at[p], rcond=None)[0].T  # [2, 3]
            m_p = (np.vstack([a_p, [0, 0, 1]]) @ m0_h)[:2].astype(np.float32)
            layer = warp_sprite(rgba, m_p, height, width)
        img = background * (1.0 - layer[..., 3:]) + layer[..., :3]  # premultiplied "over"
        gt[p] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
        alpha[p] = layer[..., 3]
    return gt, alpha
