"""MoveBench (Wan-Move, Chu et al. 2025): its release folder read into benchmark ``Sample``s.

The layout, as Wan-Move's own scripts read it (ali-vilab/Wan-Move ``generate.py`` ``--eval_bench`` and
``scripts/visualize.py``; the HF dataset Ruihang/MoveBench ships ``en.tar.gz``, extracted in place)::

    MoveBench/<language>/                      language: en | zh (same clips, translated captions)
        single_track.txt, multi_track.txt      one clip a line: "<video file>,<caption>" (first comma)
        video/<id>.mp4                         the real clip: 81 frames, 16 fps, 480x832 or 832x480
        first_frame/<id>.jpg                   the conditioning image Wan-Move generates from
        track/<single|multi>/<id>_tracks.npy       float [1, T, N, 2] or [T, N, 2], (x, y) pixels
        track/<single|multi>/<id>_visibility.npy   bool [1, T, N] or [T, N]

``<id>`` is the datalist's file name without extension. ``single`` has every clip (one object's
trajectories), ``multi`` the clips annotated with several objects. The first-frame masks the HF card
mentions are not read (a ``Sample`` has no mask; docs/movebench.md).

``frames[0]`` is replaced by ``first_frame/<id>.jpg`` when that file has the video's size: it is the
image the protocol conditions on (the mp4's frame 0 is a re-encoded copy of it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from trackstream.eval.sample import Sample

__all__ = ["load_movebench", "read_datalist", "SUBSETS", "LANGUAGES"]

SUBSETS = ("single", "multi")
LANGUAGES = ("en", "zh")


def read_datalist(path: Path) -> list[tuple[str, str]]:
    """``<subset>_track.txt`` -> [(id, caption)]: split at the first comma, blank and # lines skipped (as
    Wan-Move's ``_load_datalist``); the id is the file name without its extension."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "," not in line:
            raise ValueError(f"{path}:{n}: no comma; a MoveBench datalist line is '<video file>,<caption>'")
        name, caption = line.split(",", 1)
        out.append((os.path.splitext(os.path.basename(name.strip()))[0], caption.strip()))
    return out


def _language_dir(root: Path, language: str, subset: str) -> Path:
    """The folder holding ``<subset>_track.txt``: ``root/<language>`` or ``root`` itself."""
    if not root.is_dir():
        raise ValueError(f"MoveBench folder {root} does not exist (huggingface: Ruihang/MoveBench, extracted)")
    for base in (root / language, root):
        if (base / f"{subset}_track.txt").is_file():
            return base
    if (root / f"{language}.tar.gz").is_file():
        raise ValueError(f"{root} holds {language}.tar.gz but no {language}/: extract it first (tar xzf)")
    raise ValueError(
        f"{root} is not a MoveBench folder: no {language}/{subset}_track.txt (expected <language>/"
        "{single,multi}_track.txt, video/, first_frame/, track/)"
    )


def _squeeze(a: np.ndarray, ndim: int, what: str, path: Path) -> np.ndarray:
    # Wan-Move's generate() drops a leading batch axis of 1 the same way (track[0] if track.ndim == 4)
    if a.ndim == ndim + 1 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != ndim or (what == "tracks" and a.shape[-1] != 2):
        want = "[T, N, 2]" if what == "tracks" else "[T, N]"
        raise ValueError(f"{path}: {what} of shape {a.shape}; MoveBench stores {want} (or with a leading 1)")
    return a


def _read_rgb(path: Path) -> Optional[np.ndarray]:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else img[..., ::-1].copy()


def load_movebench(
    path: str | os.PathLike,
    *,
    subset: str = "single",
    language: str = "en",
    num_samples: Optional[int] = None,
    num_frames: Optional[int] = None,
    num_tracks: Optional[int] = None,
) -> list[Sample]:
    """The clips of one MoveBench subset (module docstring), in datalist order: the first ``num_samples``
    (None: all), their first ``num_frames`` frames and first ``num_tracks`` tracks (None: all). Every
    file the selection needs is checked before any video is decoded."""
    if subset not in SUBSETS:
        raise ValueError(f"MoveBench subset={subset!r}; choose single or multi")
    if language not in LANGUAGES:
        raise ValueError(f"MoveBench language={language!r}; choose en or zh")
    for name, v in (("num_samples", num_samples), ("num_frames", num_frames), ("num_tracks", num_tracks)):
        if v is not None and v < 1:
            raise ValueError(f"MoveBench {name}={v}; give a positive count or null (all)")
    base = _language_dir(Path(path), language, subset)
    items = read_datalist(base / f"{subset}_track.txt")
    if not items:
        raise ValueError(f"{base / f'{subset}_track.txt'} lists no clips")
    items = items[:num_samples]
    tracks_dir = base / "track" / subset
    need = {
        i: (base / "video" / f"{i}.mp4", tracks_dir / f"{i}_tracks.npy", tracks_dir / f"{i}_visibility.npy")
        for i, _ in items
    }
    missing = [str(p.relative_to(base)) for files in need.values() for p in files if not p.is_file()]
    if missing:
        raise ValueError(f"{base} lacks {len(missing)} file(s) the {subset} subset lists, e.g. {missing[:3]}")

    from trackstream.data.video_io import VideoDecodeError, decode_video

    out = []
    for i, caption in items:
        video_path, tracks_path, vis_path = need[i]
        tracks = _squeeze(np.load(tracks_path, allow_pickle=False), 3, "tracks", tracks_path)
        vis = _squeeze(np.load(vis_path, allow_pickle=False), 2, "visibility", vis_path)
        if vis.shape != tracks.shape[:2]:
            raise ValueError(f"{vis_path}: visibility {vis.shape} does not match tracks {tracks.shape[:2]}")
        try:
            frames = decode_video(str(video_path), max_frames=num_frames)[0]
        except VideoDecodeError as err:
            raise ValueError(f"{video_path}: {err}") from None
        t = frames.shape[0] if num_frames is None else min(num_frames, frames.shape[0])
        if tracks.shape[0] < t:
            raise ValueError(f"{tracks_path}: tracks for {tracks.shape[0]} frames, the video has {frames.shape[0]}")
        first = _read_rgb(base / "first_frame" / f"{i}.jpg")
        frames = frames[:t].copy()
        if first is not None and first.shape == frames.shape[1:]:
            frames[0] = first
        out.append(
            Sample(
                i,
                frames,
                tracks[:t, :num_tracks].astype(np.float32),
                vis[:t, :num_tracks].astype(bool),
                caption,
            )
        )
    return out
