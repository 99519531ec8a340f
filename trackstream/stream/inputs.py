"""``trackstream inputs``: ``trackstream generate``'s inputs from a shard sample, or from a clip and a tracker.

    trackstream inputs --shards shards --index 3 --out in
    trackstream inputs --video clip.mp4 --tracker lk --out in
    trackstream inputs --scene 0 --out in             # the demo page's scene 0, with its world's own tracks
    trackstream generate --image in/first.png --tracks in/tracks.npy --visibility in/visibility.npy \\
        --prompt "$(cat in/caption.txt)" --out out.mp4

Writes into ``--out``: ``first.png`` (the first frame), ``tracks.npy`` ([T, N, 2] float32, pixel (x, y) of
``first.png``), ``visibility.npy`` ([T, N] bool) and ``caption.txt`` (UTF-8).

* ``--shards``: sample ``--index`` of a shard set (a folder with its ``index.json`` or its tars, or a glob;
  the global index of ``data.shard_samples``: shards in order, samples in tar order), as ``prepare`` wrote it:
  its frame size, its tracker's tracks, its caption; ``--frames`` keeps the first frames (default: all).
* ``--video``: the clip decoded at ``--fps`` (up to ``--frames``, default 81), fitted to the frame the student
  streams (``--student``'s network.json size) by ``--fit`` (crop: scale to cover, keep the centre, the default;
  resize: squash; ``data.framing``, the rule ``prepare`` fits by), then a ``--grid`` x ``--grid`` grid of its
  first frame tracked through it by ``--tracker``, as ``prepare`` tracks a video (``data.prepare_worker``). The
  caption is ``--caption``, else the text of a sidecar file beside the clip (``clip.txt``), else empty.
* ``--scene``: the demo page's scene K for ``--student`` (its training world, ``stream.demo.session.world_for``,
  the clip the page shows as scene K, as long as the student's training clips; ``--frames`` keeps its first), with
  the world's exact tracks of its grid and its caption.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from trackstream.data.framing import FIT_MODES, hold_tracks, plan_fit
from trackstream.stream.options import SHIPPED_STUDENT, add_tracker_args, refuse, student_frame_size, tracker_config

__all__ = ["main", "from_shards", "from_video", "from_scene", "write_inputs"]


def from_shards(shards: str, index: int, frames: int | None) -> tuple[dict, str]:
    """(sample: first_frame RGB uint8 [H, W, 3], tracks, visibility, caption; a line saying where it is from) of
    sample ``index``, its first ``frames`` frames (None: all). A missing index or an undecodable video is a
    one-line ValueError: another sample in its place would be inputs the user did not ask for."""
    from trackstream.data.shard_samples import ShardSamples

    try:
        samples = ShardSamples(shards, num_frames=frames, needed_by=f"--frames {frames}")
    except (ValueError, OSError) as err:
        raise ValueError(f"--shards {shards}: {err}") from None
    if not 0 <= index < len(samples):
        raise ValueError(f"--index {index}: the shard set {shards} holds {len(samples)} samples (0-{len(samples) - 1})")
    sample = samples.get(index)
    if samples.skipped:
        raise ValueError(f"--index {index}: sample {samples.skipped[0]} has a video that does not decode")
    meta = sample["meta"]
    return sample, f"sample {index} ({meta['key']} of {meta['shard']})"


def from_video(args: argparse.Namespace) -> tuple[dict, str]:
    """(sample as ``from_shards``', a line saying what was done) of ``--video`` tracked by ``--tracker``."""
    from trackstream.data.tracker_base import grid_queries
    from trackstream.data.trackers import build_tracker
    from trackstream.data.video_io import VideoDecodeError, decode_video

    frames_wanted = 81 if args.frames is None else args.frames
    if args.grid < 1 or frames_wanted < 2:
        raise ValueError(f"--grid {args.grid} must be >= 1 and --frames {frames_wanted} >= 2")
    try:
        frames, info = decode_video(args.video, fps=args.fps, max_frames=frames_wanted)
    except (VideoDecodeError, FileNotFoundError) as err:
        raise ValueError(f"--video {args.video}: {err}") from None
    if len(frames) < 2:
        raise ValueError(f"--video {args.video} holds {len(frames)} frame(s) at {args.fps} fps: give a longer clip")
    H, W = student_frame_size(args.student) or frames.shape[1:3]
    fit = plan_fit(*frames.shape[1:3], height=H, width=W, mode=args.fit)
    frames = fit.frames(frames)
    cfg = tracker_config(args)
    tracks, vis = build_tracker(**dataclasses.asdict(cfg)).track(frames, grid_queries(H, W, args.grid))
    caption = args.caption
    sidecar = Path(args.video).with_suffix(".txt")
    if caption is None:
        caption = sidecar.read_text(encoding="utf-8").strip() if sidecar.is_file() else ""
    fitted = "" if fit.identity else f", fitted {fit.describe()}"
    said = f"{args.video}: {len(frames)} frames at {args.fps} fps{fitted}, tracked by {cfg.name}"
    sample = {"first_frame": frames[0], "tracks": tracks, "visibility": vis, "caption": caption}
    return sample, said


def from_scene(args: argparse.Namespace) -> tuple[dict, str]:
    """(sample as ``from_shards``', a line saying what it is) of the demo's scene ``--scene`` for ``--student``
    (``stream.demo.session.scene_clip``: a clip of the student's training length; ``--frames`` keeps its first)."""
    from trackstream.stream.demo.session import scene_clip

    if args.scene < 0:
        raise ValueError(f"--scene {args.scene} must be >= 0")
    clip = scene_clip(args.student, args.scene)
    n = len(clip["frames"]) if args.frames is None else args.frames
    if not 2 <= n <= len(clip["frames"]):
        raise ValueError(f"--frames {n}: scene {args.scene} is a clip of {len(clip['frames'])} frames (2 .. that)")
    sample = {"tracks": clip["tracks"][:n], "visibility": clip["visibility"][:n], "caption": clip["caption"]}
    said = f"the demo's scene {args.scene} of {args.student}'s world, {clip['tracks'].shape[1]} tracks of its grid"
    return sample | {"first_frame": clip["frames"][0]}, said


def write_inputs(out: str | Path, sample: dict) -> dict[str, Path]:
    """``sample``'s first frame, tracks, visibility and caption as ``generate``'s input files in ``out``."""
    import cv2

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("first.png", "tracks.npy", "visibility.npy", "caption.txt")}
    if not cv2.imwrite(str(paths["first.png"]), np.ascontiguousarray(sample["first_frame"][:, :, ::-1])):
        raise ValueError(f"--out {out}: could not write {paths['first.png']}")
    held = hold_tracks(np.asarray(sample["tracks"], np.float32), sample["first_frame"].shape[:2])  # as generate takes
    np.save(paths["tracks.npy"], held)
    np.save(paths["visibility.npy"], np.asarray(sample["visibility"], bool))
    paths["caption.txt"].write_text(sample["caption"], encoding="utf-8")
    return paths


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="trackstream inputs", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--shards", help="a shard set (prepare's output folder, or a glob of its tars)")
    src.add_argument("--video", help="a clip (mp4 or anything decord reads) to track")
    src.add_argument("--scene", type=int, help="the demo page's scene K of --student's world, with its own tracks")
    ap.add_argument("--index", type=int, default=0, help="--shards: the sample's global index (default 0)")
    ap.add_argument("--out", required=True, help="the folder the four files are written to")
    ap.add_argument(
        "--frames", type=int, default=None, help="frames kept (--shards, --scene: default all; --video: 81)"
    )
    ap.add_argument("--fps", type=int, default=16, help="--video: the rate it is decoded at (default 16)")
    ap.add_argument("--grid", type=int, default=16, help="--video: grid points per side (default 16: 256 tracks)")
    ap.add_argument("--caption", default=None, help="--video: the caption (default: clip.txt beside it, else empty)")
    ap.add_argument(
        "--student",
        default=str(SHIPPED_STUDENT),
        help="--video, --scene: the student the inputs are for, its frame size (default: the shipped student)",
    )
    ap.add_argument(
        "--fit", default="crop", choices=FIT_MODES, help="--video: fitted to the student's size by crop or resize"
    )
    add_tracker_args(ap, default="lk")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.frames is not None and args.frames < 1:
            raise ValueError(f"--frames {args.frames} must be >= 1")
        if args.shards:
            sample, said = from_shards(args.shards, args.index, args.frames)
        else:
            sample, said = from_video(args) if args.video else from_scene(args)
        paths = write_inputs(args.out, sample)
    except (ValueError, ImportError) as err:
        refuse(str(err))
    T, N = np.shape(sample["tracks"])[:2]
    H, W = sample["first_frame"].shape[:2]
    vis = float(np.asarray(sample["visibility"]).mean()) if T * N else 0.0
    print(f"{said}: {W}x{H}, {T} frames x {N} tracks ({vis:.0%} visible), caption {sample['caption']!r}")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    out = Path(args.out)
    print(
        f"stream it: trackstream generate --student {args.student} --image {out / 'first.png'} "
        f"--tracks {out / 'tracks.npy'} "
        f'--visibility {out / "visibility.npy"} --prompt "$(cat {out / "caption.txt"})" --out out.mp4'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
