"""MotionStream's DAVIS motion-transfer benchmark (paper Table 1, "DAVIS Validation Set"; appendix E).

The source reads the official DAVIS 2017 layout under ``benchmark.path``::

    JPEGImages/480p/<sequence>/00000.jpg, 00001.jpg, ...   the frames (``benchmark.images``)
    Annotations/480p/<sequence>/00000.png, ...             object masks (not used by this protocol)
    ImageSets/2017/val.txt                                 one sequence a line: the 30 val sequences (``benchmark.split``)

and makes one ``Sample`` per sequence, as the paper does:

* every frame is resized to ``width`` x ``height`` (832 x 480; plain resize, no crop: "evaluations are performed at
  832 x 480 resolution after resizing");
* a sequence longer than the model's length (``benchmark.num_frames``, 81 for Wan 2.1) keeps its first and last
  frames and subsamples the ones between uniformly (``select_frames``); the ground truth is the same frames. A
  shorter one goes, by the same rule, to the longest length the model streams (``num_frames - k * frame_step``: a
  student makes whole chunks; 12 frames = 3 latent frames for MotionStream's Wan 2.1 student), or is kept whole
  with ``frame_step: null``;
* the conditioning tracks are a ``grid_size`` x ``grid_size`` grid of first-frame points (50 x 50 = 2500) tracked by
  the command's tracker (``tracker=cotracker3_offline tracker.checkpoint=...`` as in the paper, else ``lk_plain``),
  with the tracker's visibility. The tracker runs on every resized frame of the sequence (its own frame rate: small
  steps between frames) and the tracks are then taken at the selected frames;
* the caption comes from ``benchmark.captions`` (a JSON ``{sequence: caption}``), else ``<path>/captions.json`` when
  the folder has one, else the sequence name as words ("bike-packing" -> "bike packing"): DAVIS has no captions.

Everything about the folder is checked (``check_layout``) before a frame is decoded or tracked; a problem is a
one-line ValueError naming the missing path and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["DEFAULTS", "check_layout", "davis_samples", "resolved", "select_frames", "sequences", "tracks_note"]

# the protocol's values (conf/benchmark/davis_motionstream.yaml states them with the reasons); a field left null
# on BenchmarkConfig takes these
DEFAULTS = {
    "split": "ImageSets/2017/val.txt",
    "images": "JPEGImages/480p",
    "height": 480,
    "width": 832,
    "grid_size": 50,
}
_GET = (
    "the DAVIS 2017 root holding JPEGImages/480p/, Annotations/480p/ and ImageSets/2017/ (DAVIS-2017-trainval-480p.zip)"
)


def resolved(cfg) -> dict:
    """The DAVIS fields of a BenchmarkConfig with the protocol's defaults filled in."""
    return {k: getattr(cfg, k) if getattr(cfg, k) is not None else v for k, v in DEFAULTS.items()}


def select_frames(num_frames: int, length: Optional[int], step: Optional[int] = None) -> np.ndarray:
    """Indices of the frames a model of ``length`` frames is given: the first, the last and the rest uniformly spaced
    between (MotionStream appendix E). A sequence not longer than ``length`` keeps every frame, or, with ``step`` (the
    model makes ``length - k * step`` frames only: a streaming student's chunks), the longest such length it holds,
    chosen by the same rule."""
    if length is None:
        return np.arange(num_frames)
    target = length
    if num_frames < length:
        target = length - -(-(length - num_frames) // step) * step if step else num_frames
    if target < 2:
        raise ValueError(
            f"a {num_frames}-frame sequence is too short for benchmark.num_frames={length} with "
            f"benchmark.frame_step={step}: the protocol keeps the first and last frames (>= 2)"
        )
    return np.round(np.linspace(0, num_frames - 1, target)).astype(np.int64)  # strictly increasing: step >= 1


def sequences(root: Path, split: str) -> list[str]:
    lines = (root / split).read_text().splitlines()
    return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


def _frame_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jpg")) or sorted(folder.glob("*.png"))


def check_layout(cfg) -> None:
    """Every file the benchmark reads is there (one-line ValueError naming it and the fix); nothing is decoded."""
    root, f = Path(cfg.path), resolved(cfg)
    if not root.is_dir():
        raise ValueError(f"benchmark.path={cfg.path!r} is not a folder; give {_GET}")
    images = root / f["images"]
    if not images.is_dir():
        raise ValueError(
            f"benchmark.path={cfg.path!r} has no {f['images']}/ ({images}); give {_GET}, or set benchmark.images"
        )
    split = root / f["split"]
    if not split.is_file():
        raise ValueError(
            f"benchmark.path={cfg.path!r} has no {f['split']} ({split}), the sequence list; give {_GET}, "
            "or set benchmark.split to a file of sequence names"
        )
    names = sequences(root, f["split"])
    if not names:
        raise ValueError(f"{split} lists no sequence: it should hold one DAVIS sequence name a line")
    short = [n for n in names if len(_frame_files(images / n)) < 2]
    if short:
        raise ValueError(
            f"{images} lacks the frames of {len(short)} of the {len(names)} sequences {f['split']} lists, e.g. "
            f"{short[0]}/00000.jpg ...: unpack the full DAVIS 2017 480p release there"
        )
    if cfg.captions and not Path(cfg.captions).is_file():
        raise ValueError(
            f"benchmark.captions={cfg.captions!r} does not exist; give a JSON {{sequence: caption}} or null"
        )
    for key in ("height", "width", "grid_size"):
        if not isinstance(f[key], int) or isinstance(f[key], bool) or f[key] < 1:
            raise ValueError(
                f"benchmark.{key}={f[key]!r} must be an integer >= 1; e.g. benchmark.{key}={DEFAULTS[key]}"
            )
    for key, least in (("num_frames", 2), ("frame_step", 1)):  # a bad length fails here, before any frame is read
        v = getattr(cfg, key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < least):
            raise ValueError(f"benchmark.{key}={v!r} must be an integer >= {least} or null")
    for n in names:  # every sequence's length fits the model's lengths (counted, not decoded)
        try:
            select_frames(len(_frame_files(images / n)), cfg.num_frames, cfg.frame_step)
        except ValueError as err:
            raise ValueError(f"sequence {n}: {err}; lower benchmark.frame_step or set it to null") from None


def _captions(cfg) -> tuple[dict[str, str], str]:
    """({sequence: caption}, where they came from)."""
    path = Path(cfg.captions) if cfg.captions else Path(cfg.path) / "captions.json"
    if not path.is_file():
        return {}, "the sequence names"
    try:
        caps = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON ({err.msg}, line {err.lineno}): give {{sequence: caption}}") from err
    if not isinstance(caps, dict):
        raise ValueError(f"{path} holds a {type(caps).__name__}; give a JSON object {{sequence: caption}}")
    return {str(k): str(v) for k, v in caps.items()}, str(path)


def _read_frames(folder: Path, *, height: int, width: int) -> np.ndarray:
    """uint8 [T, height, width, 3] RGB: every frame of a sequence, resized (area when shrinking)."""
    import cv2

    out = []
    for p in _frame_files(folder):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{p} is not a readable image: re-extract the DAVIS release")
        h, w = img.shape[:2]
        interp = cv2.INTER_AREA if height < h and width < w else cv2.INTER_LINEAR
        out.append(cv2.cvtColor(cv2.resize(img, (width, height), interpolation=interp), cv2.COLOR_BGR2RGB))
    return np.stack(out)


def davis_samples(cfg, tracker, *, tracker_name: str = "") -> list[tuple]:
    """The benchmark's samples as ``eval.sample.Sample`` fields (id, frames uint8 [T, H, W, 3], tracks float32
    [T, N, 2], visibility bool [T, N], caption); see the module docstring. ``tracker`` (data.trackers) tracks."""
    import logging

    from trackstream.data.tracker_base import grid_queries

    log = logging.getLogger(__name__)
    check_layout(cfg)
    if tracker is None:
        raise ValueError("the davis_motionstream benchmark makes its tracks: it needs the command's tracker")
    root, f = Path(cfg.path), resolved(cfg)
    names = sequences(root, f["split"])
    names = names[: cfg.num_samples] if cfg.num_samples is not None else names
    caps, source = _captions(cfg)
    log.info(
        "DAVIS: %d sequences at %dx%d, %d x %d grid tracked by %s, captions from %s",
        len(names), f["width"], f["height"], f["grid_size"], f["grid_size"], tracker_name or type(tracker).__name__, source,
    )  # fmt: skip
    queries = grid_queries(f["height"], f["width"], f["grid_size"])
    out = []
    for name in names:
        frames = _read_frames(root / f["images"] / name, height=f["height"], width=f["width"])
        keep = select_frames(frames.shape[0], cfg.num_frames, cfg.frame_step)  # each length passed check_layout
        tracks, vis = tracker.track(frames, queries)  # at the sequence's own rate, then taken at the kept frames
        out.append(
            (
                name,
                np.ascontiguousarray(frames[keep]),
                np.asarray(tracks, np.float32)[keep],
                np.asarray(vis, bool)[keep],
                caps.get(name, name.replace("-", " ").replace("_", " ")),
            )
        )
    return out


def tracks_note(cfg, tracker_name: str) -> str:
    """table.md's line on where the conditioning tracks came from."""
    f = resolved(cfg)
    paper = "as the paper" if tracker_name.startswith("cotracker3") else "the paper uses CoTracker3: EPE not comparable"
    length = (
        f"sequences subsampled to {cfg.num_frames} frames"
        + (f" (shorter ones to {cfg.num_frames} - k*{cfg.frame_step})" if cfg.frame_step else "")
        + " keeping the first and last"
        if cfg.num_frames is not None
        else "every frame of each sequence"
    )
    return (
        f"; input tracks: `{tracker_name}` on a {f['grid_size']}x{f['grid_size']} first-frame grid ({paper}), frames "
        f"resized to {f['width']}x{f['height']}, {length}"
    )
