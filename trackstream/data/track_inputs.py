"""User-supplied tracks checked once, where they enter: ``stream.generate``'s ``--tracks`` / ``--visibility``
(and the demo's and the drag CLI's drawn tracks can go through ``check_tracks`` the same way).

A NaN or a 1e9 coordinate is otherwise accepted silently: rasterisation drops points outside the frame, so
the video is written without the motion the user meant. Checked: the arrays load (``.npy``, no pickles),
tracks are [T, N, 2] pixel (x, y), every coordinate is finite and within ``TRACK_MARGIN`` frame sizes of the
frame, and visibility is [T, N] like the tracks, finite.

FastVideo's WanTrack track files are read too (``--tracks`` a ``.pt`` / ``.pth`` dict or a ``.npz`` with
``track_points`` [T, N, 2] or [1, T, N, 2], (x, y) normalised to [0, 1] over the whole image, ``track_visibility``
[T, N] (a weight: 0.5 and above is visible here) and optional ``track_ids`` [N]; or a folder holding
``track_points.*``, ``track_visibility.*`` and optionally ``track_ids.*`` as pt / pth / npy / npz). Their
coordinates become pixels as their rasterisation reads them (x * width, y * height of the image: the inverse of
``models.tracks.rasterize_tracks_fastvideo``), and their IDs are kept (their default without IDs: 0 .. N-1).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = [
    "TRACK_MARGIN",
    "FASTVIDEO_SUFFIXES",
    "check_tracks",
    "load_tracks",
    "load_track_inputs",
    "read_fastvideo_tracks",
    "write_fastvideo_tracks",
]

FASTVIDEO_SUFFIXES = (".pt", ".pth", ".npy", ".npz")  # their loader's (a folder's files; .pt/.pth/.npz as one file)
FASTVIDEO_KEYS = ("track_points", "track_visibility", "track_ids")

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
    """``--tracks`` / ``--visibility`` .npy files (or a FastVideo track file), loaded and checked (``check_tracks``)."""
    tracks, vis, _ = load_track_inputs(tracks_path, visibility_path, height=height, width=width, margin=margin)
    return tracks, vis


def load_track_inputs(
    tracks_path: str | os.PathLike,
    visibility_path: str | os.PathLike | None,
    *,
    height: int,
    width: int,
    margin: float = TRACK_MARGIN,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(tracks [T, N, 2] pixels, visibility bool [T, N], IDs int64 [N] or None): our ``.npy`` pair, or a
    FastVideo track file / folder (module docstring), whose IDs come with it."""
    path = Path(tracks_path)
    if path.is_dir() or path.suffix in (".pt", ".pth", ".npz"):
        if visibility_path:
            raise ValueError(
                f"--tracks {str(path)!r} is a FastVideo track file, which holds its visibility: drop --visibility"
            )
        return read_fastvideo_tracks(path, height=height, width=width, margin=margin)
    tracks = _load_npy(tracks_path, "--tracks")
    vis = _load_npy(visibility_path, "--visibility") if visibility_path else None
    return (*check_tracks(tracks, vis, height=height, width=width, margin=margin), None)


def _array(value, name: str, source: Path) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().float().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    out = np.asarray(value)
    if not np.issubdtype(out.dtype, np.number) and out.dtype != bool:
        raise ValueError(f"{source}: {name} is not a numeric array ({out.dtype}); save a tensor or numpy array")
    return out


def _read_file(path: Path, key: str | None) -> dict:
    """{name: array} of one of their files: a .pt/.pth dict (or a tensor, named ``key``), a .npz, a .npy."""
    try:
        if path.suffix in (".pt", ".pth"):
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                obj = {k: z[k] for k in z.files}
        else:
            obj = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"--tracks {str(path)!r} does not exist") from None
    except Exception as err:  # noqa: BLE001 -- garbage, truncated, pickled objects: one line naming the file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        kind = {".pt": "torch", ".pth": "torch", ".npz": ".npz"}.get(path.suffix, ".npy")
        raise ValueError(
            f"--tracks: {path} is not a readable {kind} file ({first[:80]}); give a .npy of [T, N, 2] pixel tracks "
            "or FastVideo's .pt / .npz with track_points"
        ) from None
    if isinstance(obj, dict):
        if key is not None and key not in obj and len(obj) == 1:
            return {key: next(iter(obj.values()))}  # a folder's file holding its one array under another name
        return obj
    if key is None:
        raise ValueError(f"--tracks: {path} holds one array, not a dict with {list(FASTVIDEO_KEYS[:2])}")
    return {key: obj}


def _folder_file(folder: Path, key: str) -> Path | None:
    found = [folder / f"{key}{s}" for s in FASTVIDEO_SUFFIXES if (folder / f"{key}{s}").is_file()]
    return found[0] if found else None


def read_fastvideo_tracks(
    path: str | os.PathLike, *, height: int, width: int, margin: float = TRACK_MARGIN
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FastVideo's track file or folder (module docstring) -> (pixel tracks [T, N, 2] at ``height`` x ``width``,
    visibility bool [T, N], IDs int64 [N]), checked; a one-line ValueError naming the file and the key."""
    path = Path(path)
    if path.is_dir():
        data = {}
        for key in FASTVIDEO_KEYS:
            f = _folder_file(path, key)
            if f is not None:
                data[key] = _read_file(f, key).get(key)
    else:
        data = _read_file(path, None)
    for key in FASTVIDEO_KEYS[:2]:
        if data.get(key) is None:
            where = f"a {key}.(pt|pth|npy|npz) file" if path.is_dir() else f"the key {key!r}"
            raise ValueError(f"--tracks {str(path)!r} lacks {where}; FastVideo's tracks hold {list(FASTVIDEO_KEYS)}")
    points = _array(data["track_points"], "track_points", path).astype(np.float64)
    vis = _array(data["track_visibility"], "track_visibility", path)
    ids = None if data.get("track_ids") is None else _array(data["track_ids"], "track_ids", path)
    if points.ndim == 4 and points.shape[0] == 1:
        points = points[0]
    if vis.ndim == 3 and vis.shape[0] == 1:
        vis = vis[0]
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(
            f"--tracks {str(path)!r}: track_points has shape {points.shape}; expected [T, N, 2] or [1, T, N, 2] "
            "normalised (x, y)"
        )
    if vis.shape != points.shape[:2]:
        raise ValueError(f"--tracks {str(path)!r}: track_visibility has shape {vis.shape}; expected {points.shape[:2]}")
    if not np.isfinite(vis.astype(np.float64)).all():
        raise ValueError(f"--tracks {str(path)!r}: track_visibility holds non-finite values")
    N = points.shape[1]
    if ids is None:
        ids = np.arange(N, dtype=np.int64)  # their loader's default
    else:
        ids = ids[0] if ids.ndim == 2 and ids.shape[0] == 1 else ids
        if ids.shape != (N,) or not np.issubdtype(ids.dtype, np.integer) or (ids < 0).any():
            raise ValueError(
                f"--tracks {str(path)!r}: track_ids has shape {ids.shape} ({ids.dtype}); expected [{N}] integers >= 0"
            )
    pixels = points * np.array([width, height], np.float64)  # their x / W, y / H, inverted
    tracks, visible = check_tracks(
        pixels,
        vis.astype(np.float64) >= 0.5,
        height=height,
        width=width,
        margin=margin,
        tracks_name=f"--tracks {path}: track_points",
        visibility_name="track_visibility",
    )
    return tracks, visible, ids.astype(np.int64)


def write_fastvideo_tracks(
    path: str | os.PathLike, tracks: np.ndarray, visibility: np.ndarray, *, height: int, width: int
):
    """Pixel tracks [T, N, 2] of an image ``height`` x ``width`` and their visibility [T, N] as FastVideo's WanTrack
    track file (a ``.pt`` dict: ``track_points`` [1, T, N, 2] normalised over the image, ``track_visibility`` [T, N]
    float, ``track_ids`` [N] = 0 .. N-1, their default): what ``read_fastvideo_tracks`` reads back."""
    import torch

    points = np.asarray(tracks, np.float64) / np.array([width, height], np.float64)
    torch.save(
        {
            "track_points": torch.from_numpy(points.astype(np.float32))[None],
            "track_visibility": torch.from_numpy(np.asarray(visibility, np.float32)),
            "track_ids": torch.arange(points.shape[1], dtype=torch.int64),
        },
        Path(path),
    )
