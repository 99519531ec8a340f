"""Replay a drag instruction on a student export: the video, the intended-vs-achieved overlay, metrics.

    trackstream drag --student RUN/dmd/export/student \\
        --image first.png --instruction DIR/drag_trajectory.json --out runs/drag [--method tracks|latent|both]
        [--iterations 4] [--before 0] [--after 1] [--prompt "..."] [--compare] [--device cuda --dtype bf16]

The instruction is DragStream's ``*_trajectory.json`` with its PNG masks (``stream.drag.instructions``),
drawn on the reference frame: the last frame shown before the drag. ``--before N`` streams N chunks
first (an edit needs N >= 1: it re-generates the last of them; with N = 1 the reference is the first
frame); ``--after M`` streams M more chunks after the drag. ``--method``: by default the one that works on
the student at hand, its own tracks on a track-conditioned student (a track head), else DragStream's latent
optimisation (``editor.default_method``); each chunk prints a line as it is done. The background is pinned with static
points off the editable area when the student has a track head (``--no-pin`` to stream without).
Writes ``video.mp4``, ``overlay.png`` (last steered frame: intended handle paths green, tracked ones
red), ``metrics.json``: per trajectory the handle's distance to its intended place per frame and its
mean (ObjMC's definition, at the handle the user grabbed) and the mean over the object's token centres;
seconds per steered frame; with ``--compare`` the undragged stream's, the runtime factor RF and the
background PSNR against it (outside the editable area). ``trackstream drag-bench`` scores whole
benchmark sets with the harness's metrics (entity-point ObjMC, DAI, ...). ``--device`` / ``--dtype``:
default CUDA + bf16 when a GPU is present, else CPU + fp32 (the latent optimisation itself keeps
its variables and optimiser state in fp32 whatever the DiT's dtype).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trackstream.stream.options import (
    add_network_args,
    add_precision_args,
    add_tracker_args,
    load_network_args,
    parsed_precision,
    refuse,
    tracker_config,
)

if TYPE_CHECKING:  # the command imports torch and the engine only once its arguments are parsed
    import torch

    from trackstream.stream.drag.instructions import DragInstruction
    from trackstream.stream.drag.optimize import DragConfig
    from trackstream.stream.engine import StreamingGenerator

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """The command; a bad file or value (``ValueError``) is its one-line refusal, exit 2, not a traceback."""
    try:
        return _main(argv)
    except ValueError as err:
        refuse(str(err))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_args(ap)
    ap.add_argument("--image", required=True, help="first frame (PNG/JPEG at the student's size)")
    ap.add_argument("--instruction", required=True, help="DragStream *_trajectory.json (PNG masks beside it)")
    ap.add_argument("--prompt", default=None, help="default: the instruction's prompt")
    ap.add_argument(
        "--method",
        default=None,
        choices=["latent", "tracks", "both"],
        help="default: tracks on a track-conditioned student (a track head), else latent",
    )
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--before", type=int, default=None, help="chunks streamed before the drag (default 0; edit 1)")
    ap.add_argument("--after", type=int, default=1, help="chunks streamed after the drag")
    ap.add_argument("--no-pin", action="store_true", help="no static points off the editable area")
    ap.add_argument("--compare", action="store_true", help="also stream without the drag: RF and background PSNR")
    add_tracker_args(ap, default="lk")  # as drag-bench: ObjMC and point error of the achieved motion
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fps", type=int, default=16)
    ap.add_argument("--out", required=True)
    add_precision_args(ap)
    return ap


@dataclasses.dataclass(frozen=True)
class _Replay:
    """What both streams (dragged and, with ``--compare``, undragged) share: the engine, the first frame
    [1, 3, H, W], the prompt, the instruction and the chunk counts around it."""

    engine: StreamingGenerator
    cfg: DragConfig
    instr: DragInstruction
    image: torch.Tensor
    text: torch.Tensor
    lens: torch.Tensor
    args: argparse.Namespace
    before: int

    def stream(self, drag: bool) -> tuple[list, list, float]:
        """Every chunk's output, the steered ones, and the seconds they took; a line per chunk as it is done."""
        from trackstream.stream.drag.editor import DragEditor
        from trackstream.stream.drag.points import pins_for

        engine, instr, args = self.engine, self.instr, self.args
        editor = DragEditor(engine, self.cfg)
        pins = pins_for(engine, instr, self.image, seed=args.seed) if self.cfg.pin else None
        kw = {} if pins is None else dict(zip(("tracks", "visibility"), pins.over(engine, 0)), track_ids=pins.ids)

        def pinned(chunk):  # the static pins over this chunk's pixel frames
            return [] if pins is None else list(pins.over(engine, chunk))

        name = "dragged" if drag else "undragged"
        outs = [_said(name, editor.start(self.image, self.text, self.lens, seed=args.seed, **kw))]
        outs += [_said(name, editor.step(*pinned(i))) for i in range(1, self.before + 1)]
        t0 = time.perf_counter()
        if drag:
            if instr.mode == "edit":
                outs.pop()

            def steer(n, out, log):
                passes = f", {log.forwards} optimisation passes" if log.forwards else ""
                _said(name, out, f"the drag ({args.method}{passes})")

            steered = editor.drag(instr, method=args.method, on_chunk=steer).chunks
        else:
            steered = [outs.pop()] if instr.mode == "edit" else []
            steered += [
                _said(name, editor.step(*pinned(editor.state.chunk)))
                for _ in range(instr.num_chunks if instr.mode == "animate" else 0)
            ]
        seconds = time.perf_counter() - t0 if drag or instr.mode == "animate" else steered[0].seconds
        outs += steered
        for _ in range(args.after):  # what was dragged stays where it went (its points held), else the pins
            held = editor.held_tracks()
            outs.append(_said(name, editor.step(*(held if held is not None else pinned(editor.state.chunk)))))
        return outs, steered, seconds


def _said(stream: str, out, what: str = ""):
    """``out`` (a ChunkOutput) once its line is printed: the command's progress, chunk by chunk."""
    lo, hi = out.pixel_range
    print(
        f"{stream} chunk {out.index}: frames {lo}-{hi - 1}, {out.seconds:.1f} s" + (f", {what}" if what else ""),
        flush=True,
    )
    return out


def _main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    device, dtype = parsed_precision(ap, args)

    import cv2
    import torch

    from trackstream.data.trackers import build_tracker
    from trackstream.data.video_io import image_tensor, to_uint8, write_mp4
    from trackstream.stream.drag.editor import default_method
    from trackstream.stream.drag.instructions import read_dragstream
    from trackstream.stream.drag.optimize import DragConfig
    from trackstream.stream.engine import StreamingGenerator

    instr = read_dragstream(args.instruction)
    before = args.before if args.before is not None else (1 if instr.mode == "edit" else 0)
    if instr.mode == "edit" and before < 1:
        raise ValueError("--before must be >= 1 for an edit: it re-generates the last streamed chunk")
    net, codec, conditioner = load_network_args(args, device, dtype)
    if args.method is None:
        args.method = default_method(net)
        why = "a track-conditioned student" if args.method == "tracks" else "a student without a track head"
        print(f"method {args.method} ({why}; --method picks another)", flush=True)
    engine = StreamingGenerator(
        net, codec, config=net.conventions.stream_config(args.student), image_features_fn=conditioner.image_features
    )
    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"--image {args.image!r} could not be read")
    H, W = bgr.shape[:2]
    if tuple(instr.editable.shape) != (H, W):
        raise ValueError(f"the instruction's masks are {instr.editable.shape[::-1]} (w, h) but --image is {W}x{H}")
    image = image_tensor(bgr[:, :, ::-1]).to(device)
    text, lens = conditioner.text([args.prompt if args.prompt is not None else instr.prompt])
    cfg = DragConfig(iterations=args.iterations, seed=args.seed, pin=not args.no_pin)
    replay = _Replay(engine, cfg, instr, image, text, lens, args, before)

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    outs, steered, seconds = replay.stream(True)
    video = np.concatenate([to_uint8(o.frames[0]) for o in outs])
    write_mp4(out_dir / "video.mp4", video, fps=args.fps)
    # the reference frame and the steered span in the video's frame numbers
    ref_frame = steered[0].pixel_range[0] - 1
    end = steered[-1].pixel_range[1]
    tracker = build_tracker(**dataclasses.asdict(tracker_config(args)))
    print(f"tracking the handles in the video ({args.tracker})", flush=True)
    metrics = {
        "method": args.method,
        "iterations": args.iterations,
        "mode": instr.mode,
        "frames": [ref_frame, end],
        "seconds_per_frame": seconds / sum(o.frames.shape[2] for o in steered),
    }
    with torch.no_grad():  # pixels per DiT token
        token = H // codec.encode(image[:, :, None]).shape[-2] * net.dit.patch_size[1]
    metrics["trajectories"] = _trajectories(instr, tracker, video, (ref_frame, end), token, out_dir / "overlay.png")
    if args.compare:
        base_outs, _, base_seconds = replay.stream(False)
        base = np.concatenate([to_uint8(o.frames[0]) for o in base_outs])
        write_mp4(out_dir / "undragged.mp4", base, fps=args.fps)
        outside = ~np.asarray(instr.editable, bool)
        diff = (video[ref_frame + 1 : end][:, outside].astype(np.float64) - base[ref_frame + 1 : end][:, outside]) ** 2
        metrics["undragged_seconds_per_frame"] = base_seconds / sum(o.frames.shape[2] for o in steered)
        metrics["rf"] = metrics["seconds_per_frame"] / metrics["undragged_seconds_per_frame"]
        metrics["bg_psnr_vs_undragged"] = float(10 * np.log10(255.0**2 / max(diff.mean(), 1e-12)))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(_summary(metrics))
    print(f"wrote {out_dir / 'video.mp4'}, {out_dir / 'overlay.png'}, {out_dir / 'metrics.json'} (every figure)")
    return 0


def _summary(metrics: dict) -> str:
    """The drag's figures in one line each (the per-frame errors stay in metrics.json)."""
    lines = [
        f"{metrics['mode']} drag by {metrics['method']} over frames {metrics['frames'][0]}-{metrics['frames'][1]}: "
        f"{1e3 * metrics['seconds_per_frame']:.0f} ms a frame"
        + (f", {metrics['rf']:.2f}x the undragged stream's" if "rf" in metrics else "")
    ]
    for k, t in enumerate(metrics["trajectories"]):
        lines.append(
            f"  trajectory {k}: handle off its path by {t['handle_objmc']:.2f} px on average "
            f"(all its points: {t['point_error']:.2f} px)"
        )
    if "bg_psnr_vs_undragged" in metrics:
        lines.append(f"  outside the editable area: {metrics['bg_psnr_vs_undragged']:.1f} dB PSNR to the undragged")
    return "\n".join(lines)


def _trajectories(
    instr: DragInstruction, tracker, video: np.ndarray, span: tuple[int, int], token: int, overlay_path: Path
) -> list:
    """Per trajectory the intended-vs-achieved errors of its handle and token centres over ``span`` (the
    reference frame to the end of the steered chunks) of ``video`` [T, H, W, 3] uint8; draws both handle
    paths on the last steered frame, 4x, into ``overlay_path``."""
    import cv2

    from trackstream.stream.drag.adsr import mask_tokens
    from trackstream.stream.drag.instructions import frame_positions

    ref_frame, end = span
    H, W = video.shape[1:3]
    overlay = cv2.resize(
        cv2.cvtColor(video[end - 1], cv2.COLOR_RGB2BGR), (W * 4, H * 4), interpolation=cv2.INTER_NEAREST
    )
    per_traj = []
    for traj, mask in zip(instr.trajectories, instr.object_masks):
        pts = np.concatenate([np.asarray(traj.handle, np.float64)[None], mask_tokens(mask, token)])
        intended = frame_positions(instr, traj, pts, end - ref_frame)  # [T, 1 + P, 2], T from the reference frame
        q = np.concatenate([np.full((len(pts), 1), float(ref_frame)), pts], axis=1).astype(np.float32)
        achieved = tracker.track(video[:end], q)[0][ref_frame:]
        err = np.linalg.norm(achieved - intended, axis=-1)  # [T, 1 + P]
        per_traj.append(
            {
                "handle_error": err[:, 0].round(3).tolist(),
                "handle_objmc": float(err[:, 0].mean()),
                "point_error": float(err.mean()),
            }
        )
        for path, colour in ((intended[:, 0], (0, 200, 0)), (achieved[:, 0], (0, 0, 230))):
            p = np.rint(np.asarray(path) * 4 + 1.5).astype(np.int32)
            cv2.polylines(overlay, [p.reshape(-1, 1, 2)], False, colour, 1, cv2.LINE_AA)
            cv2.circle(overlay, tuple(int(v) for v in p[-1]), 3, colour, -1)
    cv2.imwrite(str(overlay_path), overlay)
    return per_traj


if __name__ == "__main__":
    sys.exit(main())
