"""Camera control as tracks: grid points of the first frame, lifted to 3D with its depth, seen from a moving
camera, projected back; a point is visible where it is in front of the camera, inside the frame and not
behind the scene's own surface at that frame (a depth test).

MotionStream drives camera motion with tracks like any other motion (its camera benchmark: LLFF); the
student never sees a camera, only where the points go. Here:

* intrinsics from a horizontal field of view: fx = fy = (W / 2) / tan(fov / 2), principal point at the
  pixel grid's centre ((W - 1) / 2, (H - 1) / 2), pixel centres at integers (the tracks' convention);
* the world frame is the first camera's (x right, y down, z forward); a path is T camera-to-world poses
  [T, 4, 4] (frame 0 the identity) plus a focal scale per frame (a zoom changes the intrinsics, not the
  pose);
* the depth test: every pixel of the first frame, splatted into frame t as a z-buffer (nearest pixel,
  nearest depth wins); a track point is occluded where it lies more than ``tolerance`` (relative) behind
  that z-buffer. Points the first frame never saw (disocclusions) have no depth and no track.

``camera_tracks(depth, path, fov=..., grid=...)`` -> tracks [T, N, 2] float32, visibility [T, N] bool: the
format ``trackstream generate --tracks / --visibility`` reads.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trackstream.data.track_inputs import TRACK_MARGIN
from trackstream.data.tracker_base import grid_queries

__all__ = ["PATHS", "CameraPath", "intrinsics", "camera_path", "read_camera_path", "camera_tracks"]

PATHS = ("orbit", "pan", "zoom", "dolly")


@dataclass(frozen=True)
class CameraPath:
    """T camera-to-world poses [T, 4, 4] (the first camera is the world) and focal scales [T]."""

    poses: np.ndarray
    focal_scale: np.ndarray

    def __post_init__(self) -> None:
        T = self.poses.shape[0]
        if self.poses.shape != (T, 4, 4) or self.focal_scale.shape != (T,) or T < 1:
            raise ValueError(
                f"a camera path is poses [T, 4, 4] and focal scales [T]: got {self.poses.shape}, "
                f"{self.focal_scale.shape}"
            )
        if not (np.isfinite(self.poses).all() and np.isfinite(self.focal_scale).all() and (self.focal_scale > 0).all()):
            raise ValueError("a camera path's poses and focal scales must be finite, the focal scales > 0")


def intrinsics(height: int, width: int, fov_degrees: float) -> tuple[float, float, float]:
    """(focal length in pixels, cx, cy) of a pinhole camera with horizontal field of view ``fov_degrees``."""
    if not 1.0 <= fov_degrees <= 170.0:
        raise ValueError(f"--fov {fov_degrees}: a horizontal field of view in degrees, in [1, 170]")
    return (width / 2) / math.tan(math.radians(fov_degrees) / 2), (width - 1) / 2, (height - 1) / 2


def _pose(rotation: np.ndarray, centre: np.ndarray) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, centre
    return pose


def _rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def camera_path(kind: str, num_frames: int, *, target_depth: float, amount: float = 1.0) -> CameraPath:
    """A named path over ``num_frames`` frames, scaled by the scene (``target_depth``: the depth the camera
    looks at, e.g. the median depth) and by ``amount`` (1 = a moderate move):

    * orbit: around the point ``target_depth`` ahead, up to 15 degrees x amount, the target kept centred;
    * pan: sideways by 0.25 x target_depth x amount, looking ahead;
    * zoom: the focal length up to 1.5x (amount 1), the camera still;
    * dolly: forward by 0.3 x target_depth x amount."""
    if kind not in PATHS:
        raise ValueError(f"--path {kind!r}: choose {', '.join(PATHS)} or a .json / .npy file of poses")
    if num_frames < 2:
        raise ValueError(f"--frames {num_frames}: a camera move needs at least 2 frames")
    if not target_depth > 0:
        raise ValueError(f"the target depth {target_depth} must be > 0 (is the depth map all zeros?)")
    s = np.linspace(0.0, 1.0, num_frames)
    poses, focal = np.repeat(np.eye(4)[None], num_frames, 0), np.ones(num_frames)
    target = np.array([0.0, 0.0, target_depth])
    for t, u in enumerate(s):
        if kind == "orbit":
            rot = _rot_y(-math.radians(15.0) * amount * u)  # the camera swings right, turning to keep the target
            poses[t] = _pose(rot, target - rot @ target)
        elif kind == "pan":
            poses[t] = _pose(np.eye(3), np.array([0.25 * target_depth * amount * u, 0.0, 0.0]))
        elif kind == "dolly":
            poses[t] = _pose(np.eye(3), np.array([0.0, 0.0, 0.3 * target_depth * amount * u]))
        else:
            focal[t] = 1.0 + 0.5 * amount * u
    return CameraPath(poses, focal)


def read_camera_path(path: str | Path, num_frames: int | None = None) -> CameraPath:
    """A path file: ``.npy`` poses [T, 4, 4], or ``.json`` ``{"poses": [T x 4 x 4], "focal_scale": [T]}``
    (camera-to-world, relative to the first frame, OpenCV axes: x right, y down, z forward)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--path {path}: neither {', '.join(PATHS)} nor an existing .json / .npy file")
    try:
        if p.suffix == ".npy":
            poses, focal = np.load(p, allow_pickle=False), None
        else:
            data = json.loads(p.read_text())
            poses, focal = np.asarray(data["poses"], float), data.get("focal_scale")
    except (ValueError, KeyError, OSError) as err:
        raise ValueError(
            f"--path {path}: not a camera path ({err}); write poses [T, 4, 4] (.npy) or "
            '{"poses": ..., "focal_scale": ...} (.json)'
        ) from None
    poses = np.asarray(poses, float)
    focal = np.ones(poses.shape[0]) if focal is None else np.asarray(focal, float)
    cam = CameraPath(poses, focal)
    if num_frames is not None and cam.poses.shape[0] != num_frames:
        raise ValueError(f"--path {path} holds {cam.poses.shape[0]} poses but --frames is {num_frames}")
    return cam


def _sample_depth(depth: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear depth at pixel positions xy [N, 2]."""
    H, W = depth.shape
    x, y = np.clip(xy[:, 0], 0, W - 1), np.clip(xy[:, 1], 0, H - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    fx, fy = x - x0, y - y0
    top = depth[y0, x0] * (1 - fx) + depth[y0, x1] * fx
    bottom = depth[y1, x0] * (1 - fx) + depth[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _project(points: np.ndarray, pose: np.ndarray, f: float, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    """World points [N, 3] -> (pixels [N, 2], camera depth [N]) in the camera ``pose`` (camera-to-world)."""
    rot, centre = pose[:3, :3], pose[:3, 3]
    cam = (points - centre) @ rot  # [N, 3]: R^T (P - C), row vectors
    z = cam[:, 2]
    safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
    return np.stack([f * cam[:, 0] / safe + cx, f * cam[:, 1] / safe + cy], -1), z


def camera_tracks(
    depth: np.ndarray,
    path: CameraPath,
    *,
    fov_degrees: float = 60.0,
    grid_size: int = 16,
    tolerance: float = 0.03,
) -> tuple[np.ndarray, np.ndarray]:
    """Tracks [T, N, 2] float32 and visibility [T, N] bool of a ``grid_size``^2 grid of the first frame
    seen along ``path`` (module docstring). ``depth`` [H, W]: positive depth along the optical axis."""
    depth = np.asarray(depth, float)
    if depth.ndim != 2 or not np.isfinite(depth).all() or not (depth > 0).all():
        raise ValueError(f"the depth map must be [H, W], finite and > 0 everywhere (got {depth.shape})")
    H, W = depth.shape
    f, cx, cy = intrinsics(H, W, fov_degrees)
    xy0 = grid_queries(H, W, grid_size)[:, 1:].astype(float)  # [N, 2]

    def lift(xy: np.ndarray, d: np.ndarray) -> np.ndarray:  # pixels of frame 0 + depth -> world [N, 3]
        return np.stack([(xy[:, 0] - cx) * d / f, (xy[:, 1] - cy) * d / f, d], -1)

    points = lift(xy0, _sample_depth(depth, xy0))
    gy, gx = np.mgrid[0:H, 0:W]
    every = lift(np.stack([gx.ravel(), gy.ravel()], -1).astype(float), depth.ravel())  # the scene's surface
    T = path.poses.shape[0]
    tracks, vis = np.zeros((T, len(points), 2), np.float32), np.zeros((T, len(points)), bool)
    for t in range(T):
        ft = f * path.focal_scale[t]
        xy, z = _project(points, path.poses[t], ft, cx, cy)
        sxy, sz = _project(every, path.poses[t], ft, cx, cy)
        zbuf = np.full((H, W), np.inf)
        ok = sz > 1e-6
        px, py = np.rint(sxy[ok, 0]).astype(int), np.rint(sxy[ok, 1]).astype(int)
        inside = (px >= 0) & (px < W) & (py >= 0) & (py < H)
        np.minimum.at(zbuf, (py[inside], px[inside]), sz[ok][inside])  # nearest surface per pixel
        qx, qy = np.rint(xy[:, 0]).astype(int), np.rint(xy[:, 1]).astype(int)
        seen = (z > 1e-6) & (qx >= 0) & (qx < W) & (qy >= 0) & (qy < H)
        front = np.zeros(len(points), bool)
        front[seen] = z[seen] <= zbuf[qy[seen], qx[seen]] * (1 + tolerance)
        # off-screen points keep a position (invisible), held within the margin user tracks may leave the frame by
        lo, hi = -TRACK_MARGIN * np.array([W, H]), (1 + TRACK_MARGIN) * np.array([W, H]) - 1
        tracks[t], vis[t] = np.clip(np.where((z > 1e-6)[:, None], xy, tracks[t - 1] if t else xy), lo, hi), seen & front
    return tracks, vis
