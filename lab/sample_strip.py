"""A training run's held-out samples as one picture: per clip, the ground truth above the model's video with tracks,
at frames 0, 8, 16 and 24 (what docs/embedded-world.md shows beside the curve).

    python -m lab.sample_strip --run-dir RUN --step 5500 --out docs/embedded_world/teacher_objects_5500.jpg
    python -m lab.sample_strip --videos EVAL/videos/student_with_tracks --out strip.jpg   # a `trackstream eval` folder

Reads ``RUN/samples/step_XXXXXXXX_NNN_{ground_truth_video,with_tracks}.mp4`` (the teacher stage's periodic
evaluation) and writes a JPEG, each pixel doubled so a 64 x 64 clip stays readable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from trackstream.data.video_io import decode_video

FRAMES = (0, 8, 16, 24)


def strip(run_dir: Path, step: int, *, clips: int = 4, scale: int = 2) -> np.ndarray:
    """uint8 [2 * clips * H * scale, len(FRAMES) * W * scale, 3]: ground truth and with-tracks rows per clip."""
    rows = []
    for i in range(clips):
        for kind in ("ground_truth_video", "with_tracks"):
            path = run_dir / "samples" / f"step_{step:08d}_{i:03d}_{kind}.mp4"
            if not path.is_file():
                raise ValueError(f"{path} is missing: give a --step the run evaluated at (RUN/samples/)")
            frames, _ = decode_video(str(path))
            rows.append(np.concatenate([frames[min(t, len(frames) - 1)] for t in FRAMES], axis=1))
    img = np.concatenate(rows, axis=0)
    return cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)


def folder_strip(folder: Path, *, clips: int = 4, scale: int = 2) -> np.ndarray:
    """The first ``clips`` videos of a folder of ``<id>.mp4`` (sorted by name), one row each, frames 0, 8, 16, 24."""
    paths = sorted(Path(folder).glob("*.mp4"))[:clips]
    if not paths:
        raise ValueError(f"{folder} holds no .mp4: give a `trackstream eval` run's videos/<row>/ folder")
    rows = []
    for path in paths:
        frames, _ = decode_video(str(path))
        rows.append(np.concatenate([frames[min(t, len(frames) - 1)] for t in FRAMES], axis=1))
    img = np.concatenate(rows, axis=0)
    return cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, help="a training run (with --step)")
    ap.add_argument("--step", type=int)
    ap.add_argument("--videos", type=Path, help="or a folder of <id>.mp4 (an eval row)")
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.videos:
        img = folder_strip(args.videos, clips=args.clips)
    elif args.run_dir and args.step is not None:
        img = strip(args.run_dir, args.step, clips=args.clips)
    else:
        ap.error("give --run-dir RUN --step N, or --videos DIR")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"wrote {args.out} ({img.shape[1]} x {img.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
