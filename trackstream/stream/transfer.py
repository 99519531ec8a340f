"""``trackstream transfer``: the motion of a source video, streamed over an image (motion transfer).

    trackstream transfer --source dance.mp4 --image first.png --grid 20 --out out.mp4 --prompt "a robot dancing"
    trackstream transfer --source clip.mp4 --image first.png --tracker cotracker3_offline \\
        --tracker-checkpoint scaled_offline.pth --out out.mp4 [any trackstream generate option]

The source is decoded at ``--fps`` (the student's rate, 16 by default), a ``--grid`` x ``--grid`` grid of its
first frame is tracked through it (CoTracker3 when the ``cotracker`` package and ``--tracker-checkpoint`` are
at hand, else the CPU tracker ``lk``; ``--tracker`` picks one), the tracks are rescaled from the source's
size to the image's, written beside ``--out`` (``<out>.tracks.npy``, ``<out>.visibility.npy``) and streamed
by ``trackstream generate`` with every option it takes (``--student``, ``--prompt``, ``--resize``, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np

from trackstream.data.framing import plan_fit
from trackstream.data.tracker_base import grid_queries
from trackstream.data.trackers import TrackerConfig, build_tracker
from trackstream.stream.options import add_tracker_args, refuse, student_frame_size, tracker_config

__all__ = ["main", "source_tracks"]


def source_tracks(
    frames: np.ndarray, tracker, *, grid: int, height: int, width: int, fit: str = "crop"
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 source frames [T, Hs, Ws, 3] -> (tracks [T, N, 2] in the pixels of the source fitted to ``width``
    x ``height`` by ``fit``, visibility [T, N]): a grid of the fitted frame, found in the source's frame 0,
    tracked through the source at its own resolution, moved as its pixels were fitted (``data.framing``).
    Points the fit leaves outside the frame are invisible. A tracker keeps estimating a point it lost, and the
    estimate may wander far off; it is held within ``TRACK_MARGIN`` frame sizes (where ``generate`` accepts
    tracks), which keeps a point outside the frame outside it."""
    T, Hs, Ws = frames.shape[:3]
    fitted = plan_fit(Hs, Ws, height=height, width=width, mode=fit)
    queries = grid_queries(height, width, grid)
    if not fitted.identity:
        queries[:, 1:] = fitted.to_source(queries[:, 1:])
    tracks, vis = tracker.track(frames, queries)
    return fitted.tracks(np.asarray(tracks, np.float32), np.asarray(vis, bool))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="trackstream transfer", description=__doc__.split("\n\n")[0], add_help=True)
    ap.add_argument("--source", required=True, help="the video whose motion is transferred")
    ap.add_argument("--image", required=True, help="the first frame of the new video")
    ap.add_argument("--out", required=True, help="the new video (.mp4); its tracks are written beside it")
    ap.add_argument("--grid", type=int, default=16, help="grid points per side on the source (default 16)")
    ap.add_argument("--frames", type=int, default=81, help="source frames to track, at --fps (default 81)")
    ap.add_argument("--fps", type=int, default=16, help="the rate the source is decoded at and the video written at")
    add_tracker_args(ap, default=None)
    from trackstream.stream.generate import add_stream_args, run

    # every generate option, in --help and checked now: a typo fails before the source is tracked
    add_stream_args(ap.add_argument_group("the stream (every trackstream generate option)"))
    args = ap.parse_args(argv)
    try:
        import cv2

        from trackstream.data.video_io import VideoDecodeError, decode_video

        bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"--image {args.image!r} could not be read as an image")
        if args.grid < 1 or args.frames < 2:
            raise ValueError(f"--grid {args.grid} must be >= 1 and --frames {args.frames} >= 2")
        try:
            frames, _ = decode_video(args.source, fps=args.fps, max_frames=args.frames)
        except VideoDecodeError as err:
            raise ValueError(f"--source {args.source}: {err}") from None
        if len(frames) < 2:
            raise ValueError(f"--source {args.source} holds {len(frames)} frame(s) at {args.fps} fps")
        if args.tracker is None:  # CoTracker3 where it can run, the CPU tracker otherwise
            ready = args.tracker_checkpoint and importlib.util.find_spec("cotracker") is not None
            args.tracker = "cotracker3_offline" if ready else "lk"
        cfg: TrackerConfig = tracker_config(args)
        H, W = student_frame_size(args.student) or bgr.shape[:2]
        image_fit = plan_fit(*bgr.shape[:2], height=H, width=W, mode=args.fit)
        tracker = build_tracker(**dataclasses.asdict(cfg))
        tracks, vis = source_tracks(frames, tracker, grid=args.grid, height=H, width=W, fit=args.fit)
        tracks = image_fit.tracks_in_source(tracks)  # written for --image; generate fits them back with it
    except (ValueError, ImportError, FileNotFoundError) as err:
        refuse(str(err))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tracks_path, vis_path = out.with_suffix(".tracks.npy"), out.with_suffix(".visibility.npy")
    np.save(tracks_path, tracks)
    np.save(vis_path, vis)
    source_fit = plan_fit(*frames.shape[1:3], height=H, width=W, mode=args.fit)
    print(
        f"{args.source}: {len(frames)} frames at {args.fps} fps"
        + ("" if source_fit.identity else f", fitted {source_fit.describe()}")
        + f"; {tracks.shape[1]} tracks by {cfg.name} ({vis.mean():.0%} visible) -> {tracks_path}",
        flush=True,
    )
    args.tracks, args.visibility = str(tracks_path), str(vis_path)
    return run(ap, args)


if __name__ == "__main__":
    sys.exit(main())
