"""User-supplied tracks checked once, where they enter: ``stream.generate``'s ``--tracks`` / ``--visibility``
(and the demo's and the drag CLI's drawn tracks can go through ``check_tracks`` the same way).

A NaN or a 1e9 coordinate is otherwise accepted silently: rasterisation drops points outside the frame, so
the video is written without the motion the user meant. Checked: the arrays load (``.npy``, no pickles),
tracks are [T, N, 2] pixel (x, y), every coordinate is finite and within ``TRACK_MARGIN`` frame sizes of the
frame, and visibility is [T, N] like the tracks, finite.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["TRACK_MARGIN", "check_tracks", "load_tracks"]

# How far outside the frame a coordinate may lie, in frame sizes (x in [-M*W, (1+M)*W], y likewise). Tracks
# may leave the frame (a point walks out of view, the camera pans), and a tracker keeps estimating them there,
# so some slack is real data; more than one frame size away is a unit error (normalised vs pixels at another
# resolution, a sentinel such as 1e9) rather than motion, and would be dropped by rasterisation silently.
TRACK_MARGIN = 1.0


def check_tracks(
    tracks: np.ndarray,
    visibility: np.ndarray | None,
    *,
    height: int,
    width: int,
    margin: float = TRACK_MARGIN,
    tracks_name: str = "--tracks",
    visibility_name: str = "--visibility",
) -> tuple[np.ndarray, np.ndarray]:
    """(tracks float32 [T, N, 2], visibility bool [T, N]) from user arrays, or a one-line ValueError naming
    ``tracks_name`` / ``visibility_name``, what is wrong and the fix. ``visibility`` None: all visible."""
    tracks = np.asarray(tracks)
    if tracks.ndim != 3 or tracks.shape[-1] != 2 or not np.issubdtype(tracks.dtype, np.number):
        raise ValueError(
            f"{tracks_name} must hold [T, N, 2] pixel (x, y) coordinates, got shape {tracks.shape} "
            f"({tracks.dtype}); save an array of that shape with numpy.save"
        )
    bad = ~np.isfinite(tracks)
    if bad.any():
        t, n, _ = np.argwhere(bad)[0]
        raise ValueError(
            f"{tracks_name}: {int(bad.any(-1).sum())} of {tracks.shape[0] * tracks.shape[1]} points are not finite "
            f"(first: frame {t}, track {n} = {tracks[t, n].tolist()}); give every point a finite position "
            f"(an occluded point: its estimate, and false in {visibility_name})"
        )
    inside = (np.abs(tracks) > 0) & (np.abs(tracks) < 1)  # fractions: what normalised coordinates mostly are
    if min(height, width) > 4 and tracks.size and np.abs(tracks).max() <= 1.0 and inside.mean() > 0.5:
        raise ValueError(
            f"{tracks_name}: every coordinate is within [-1, 1] on a {width}x{height} frame: these look like "
            "normalised coordinates, but tracks are pixel (x, y): multiply x by the width and y by the height"
        )
    lo = np.array([-margin * width, -margin * height])
    hi = np.array([(1 + margin) * width, (1 + margin) * height])
    out = (tracks < lo) | (tracks > hi)
    if out.any():
        t, n, _ = np.argwhere(out)[0]
        raise ValueError(
            f"{tracks_name}: point (frame {t}, track {n}) = {tracks[t, n].tolist()} is more than {margin:g} frame "
            f"size(s) outside the {width}x{height} frame (x in [{lo[0]:g}, {hi[0]:g}], y in [{lo[1]:g}, {hi[1]:g}] "
            "allowed); tracks must be pixel coordinates at the video's size"
        )
    if visibility is None:
        return tracks.astype(np.float32), np.ones(tracks.shape[:2], dtype=bool)
    visibility = np.asarray(visibility)
    if visibility.shape != tracks.shape[:2]:
        raise ValueError(
            f"{visibility_name} has shape {visibility.shape} but {tracks_name} {tracks.shape} needs "
            f"{tracks.shape[:2]} ([T, N], one flag per point); save the visibility of the same tracks"
        )
    if visibility.dtype != bool and not (np.issubdtype(visibility.dtype, np.number) and np.isfinite(visibility).all()):
        raise ValueError(
            f"{visibility_name} must hold booleans (or 0 / 1), got {visibility.dtype} with non-finite values"
        )
    return tracks.astype(np.float32), visibility.astype(bool)


def _load_npy(path: str | os.PathLike, name: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{name} {str(path)!r} does not exist") from None
    except (ValueError, OSError, EOFError) as err:  # garbage, truncated, pickled objects
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"{name} {str(path)!r} is not a readable .npy array ({first}); write it with numpy.save"
        ) from None


def load_tracks(
    tracks_path: str | os.PathLike,
    visibility_path: str | os.PathLike | None,
    *,
    height: int,
    width: int,
    margin: float = TRACK_MARGIN,
) -> tuple[np.ndarray, np.ndarray]:
    """``--tracks`` / ``--visibility`` .npy files, loaded and checked (``check_tracks``)."""
    tracks = _load_npy(tracks_path, "--tracks")
    vis = _load_npy(visibility_path, "--visibility") if visibility_path else None
    return check_tracks(tracks, vis, height=height, width=width, margin=margin)
