"""``trackstream camera``: tracks of a camera move over an image, for ``trackstream generate`` (camera control).

    trackstream camera --image first.png --depth depth.npy --path orbit --frames 81 --out cam.npy
    trackstream camera --image first.png --depth-model /models/depth-anything-v2-small --path dolly --out cam.npy
    trackstream camera --image first.png --path pan --out cam.npy            # no depth: a flat picture
    trackstream generate --image first.png --tracks cam.npy --visibility cam.visibility.npy --prompt "..." ...

The image is fitted to the frame the student streams (``--student``'s network.json size) by ``--fit`` (crop:
scale to cover, keep the centre, the default; resize: squash; ``data.framing``), as ``generate`` will fit it,
and its depth with it. A grid of that frame's points is lifted to 3D with the depth (a map, a local monocular
depth model, or without either a plane facing the camera, as the demo takes a frame), moved by the camera path
(orbit, pan, zoom, dolly, or a file of poses), projected back, with visibility from a depth test
(``data.camera_tracks``). Writes ``--out`` (tracks [T, N, 2] in the image's pixels, which ``generate`` fits back
to the same frame) and ``<out>.visibility.npy`` ([T, N]); an ``--out`` ending in ``.pt`` is FastVideo's track file
instead (``data.track_inputs.write_fastvideo_tracks``: what their tooling writes and ``generate`` reads).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from trackstream.data.camera_tracks import PATHS, camera_path, camera_tracks, read_camera_path
from trackstream.data.framing import FIT_MODES, plan_fit
from trackstream.data.track_inputs import write_fastvideo_tracks
from trackstream.stream.options import SHIPPED_STUDENT, refuse, student_frame_size

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="trackstream camera", description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", required=True, help="the first frame (PNG / JPEG): the tracks are in its pixels")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--depth", help="depth map at the image's size: .npy [H, W] or a 16-bit PNG in millimetres")
    src.add_argument("--depth-model", help="a local transformers depth-estimation folder (Depth Anything, DPT)")
    ap.add_argument("--path", required=True, help=f"{' | '.join(PATHS)} | a .json / .npy file of poses")
    ap.add_argument("--frames", type=int, default=81, help="frames of the move, the first included (default 81)")
    ap.add_argument("--amount", type=float, default=1.0, help="scale of a named move (1: moderate)")
    ap.add_argument("--fov", type=float, default=60.0, help="horizontal field of view in degrees (default 60)")
    ap.add_argument("--grid", type=int, default=16, help="grid points per side (default 16: 256 tracks)")
    ap.add_argument(
        "--student",
        default=str(SHIPPED_STUDENT),
        help="the export the tracks are for: the image is fitted to the size it streams (default: the shipped one)",
    )
    ap.add_argument(
        "--fit",
        default="crop",
        choices=FIT_MODES,
        help="how the image is fitted to the student's size, as generate --fit: crop (default) or resize",
    )
    ap.add_argument("--device", default="auto", help="the depth model's device: auto (CUDA when present), cpu, cuda")
    ap.add_argument(
        "--out",
        required=True,
        help="tracks .npy (the visibility goes beside it: <out>.visibility.npy), or a .pt: FastVideo's track file "
        "(track_points normalised over the image, track_visibility, track_ids)",
    )
    return ap


def _depth(args, bgr: np.ndarray) -> np.ndarray:
    """The image's depth [h, w] > 0: the map, the depth model's estimate, or a plane facing the camera."""
    if args.depth:
        from trackstream.models.depth import read_depth

        depth = read_depth(args.depth)
        if depth.shape != bgr.shape[:2]:
            raise ValueError(
                f"--depth is {depth.shape[1]}x{depth.shape[0]} but --image is {bgr.shape[1]}x{bgr.shape[0]}: "
                "give the depth of this image at its size"
            )
        return depth
    if args.depth_model:
        from trackstream.models.depth import estimate_depth
        from trackstream.models.precision import resolve_device

        return estimate_depth(bgr[:, :, ::-1].copy(), args.depth_model, device=resolve_device(args.device))
    print(
        "no --depth or --depth-model: the image is taken as a flat picture facing the camera (as the demo does); "
        "a pan or an orbit then moves every point alike, without parallax",
        flush=True,
    )
    return np.ones(bgr.shape[:2])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        import cv2

        bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"--image {args.image!r} could not be read as an image")
        if args.grid < 1 or args.frames < 2:
            raise ValueError(f"--grid {args.grid} must be >= 1 and --frames {args.frames} >= 2")
        H, W = student_frame_size(args.student) or bgr.shape[:2]
        fit = plan_fit(*bgr.shape[:2], height=H, width=W, mode=args.fit)
        # nearest: a depth edge stays an edge (an average would put a surface between the two)
        depth = fit.frames(_depth(args, bgr), interpolation=cv2.INTER_NEAREST)
        if args.path in PATHS:
            path = camera_path(args.path, args.frames, target_depth=float(np.median(depth)), amount=args.amount)
        else:
            path = read_camera_path(args.path, args.frames)
        tracks, vis = camera_tracks(depth, path, fov_degrees=args.fov, grid_size=args.grid)
    except ValueError as err:
        refuse(str(err))
    tracks = fit.tracks_in_source(tracks)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".pt":  # FastVideo's track file, normalised over the image as given
        write_fastvideo_tracks(out, tracks, vis, height=bgr.shape[0], width=bgr.shape[1])
        written = f"{out} (FastVideo's track file)"
    else:
        np.save(out, tracks)
        vis_path = out.with_name(out.name.removesuffix(".npy") + ".visibility.npy")
        np.save(vis_path, vis)
        written = f"{out} and {vis_path}"
    fitted = "" if fit.identity else f" (made on the image fitted {fit.describe()}, written in its pixels)"
    print(
        f"{args.path}: {tracks.shape[0]} frames x {tracks.shape[1]} tracks at {W}x{H}{fitted}, "
        f"{vis.mean():.0%} visible; wrote {written}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
