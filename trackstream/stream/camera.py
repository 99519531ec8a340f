"""``trackstream camera``: tracks of a camera move over an image, for ``trackstream generate`` (camera control).

    trackstream camera --image first.png --depth depth.npy --path orbit --frames 81 --out cam.npy
    trackstream camera --image first.png --depth-model /models/depth-anything-v2-small --path dolly --out cam.npy
    trackstream generate --image first.png --tracks cam.npy --visibility cam.visibility.npy --prompt "..." ...

A grid of the image's points is lifted to 3D with the depth (a map, or a local monocular depth model), moved
by the camera path (orbit, pan, zoom, dolly, or a file of poses), projected back, with visibility from a depth
test (``data.camera_tracks``). Writes ``--out`` (tracks [T, N, 2]) and ``<out>.visibility.npy`` ([T, N]).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from trackstream.data.camera_tracks import PATHS, camera_path, camera_tracks, read_camera_path
from trackstream.stream.options import refuse

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="trackstream camera", description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", required=True, help="the first frame (PNG / JPEG): its size is the tracks' size")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--depth", help="depth map: .npy [H, W] or a 16-bit PNG in millimetres")
    src.add_argument("--depth-model", help="a local transformers depth-estimation folder (Depth Anything, DPT)")
    ap.add_argument("--path", required=True, help=f"{' | '.join(PATHS)} | a .json / .npy file of poses")
    ap.add_argument("--frames", type=int, default=81, help="frames of the move, the first included (default 81)")
    ap.add_argument("--amount", type=float, default=1.0, help="scale of a named move (1: moderate)")
    ap.add_argument("--fov", type=float, default=60.0, help="horizontal field of view in degrees (default 60)")
    ap.add_argument("--grid", type=int, default=16, help="grid points per side (default 16: 256 tracks)")
    ap.add_argument("--device", default="auto", help="the depth model's device: auto (CUDA when present), cpu, cuda")
    ap.add_argument("--out", required=True, help="tracks .npy; the visibility goes beside it (<out>.visibility.npy)")
    args = ap.parse_args(argv)
    try:
        import cv2

        bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"--image {args.image!r} could not be read as an image")
        if args.grid < 1 or args.frames < 2:
            raise ValueError(f"--grid {args.grid} must be >= 1 and --frames {args.frames} >= 2")
        if args.depth:
            from trackstream.models.depth import read_depth

            depth = read_depth(args.depth)
            if depth.shape != bgr.shape[:2]:
                raise ValueError(
                    f"--depth is {depth.shape[1]}x{depth.shape[0]} but --image is {bgr.shape[1]}x{bgr.shape[0]}: "
                    "give the depth of this image at its size"
                )
        else:
            from trackstream.models.depth import estimate_depth
            from trackstream.models.precision import resolve_device

            depth = estimate_depth(bgr[:, :, ::-1].copy(), args.depth_model, device=resolve_device(args.device))
        if args.path in PATHS:
            path = camera_path(args.path, args.frames, target_depth=float(np.median(depth)), amount=args.amount)
        else:
            path = read_camera_path(args.path, args.frames)
        tracks, vis = camera_tracks(depth, path, fov_degrees=args.fov, grid_size=args.grid)
    except ValueError as err:
        refuse(str(err))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, tracks)
    vis_path = out.with_name(out.name.removesuffix(".npy") + ".visibility.npy")
    np.save(vis_path, vis)
    print(
        f"{args.path}: {tracks.shape[0]} frames x {tracks.shape[1]} tracks at {bgr.shape[1]}x{bgr.shape[0]}, "
        f"{vis.mean():.0%} visible; wrote {out} and {vis_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
