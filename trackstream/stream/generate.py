"""Command line streaming generation: an image, a prompt and tracks in, an mp4 out, chunk by chunk.

    trackstream generate --student RUN/dmd --image first.png --tracks tracks.npy --prompt "..." --out video.mp4
    trackstream generate --student RUN/dmd/export/student \\
        --image first.png --tracks tracks.npy [--visibility visibility.npy] --prompt "..." \\
        --out video.mp4 [--chunks N] [--sink 1 --window 1 --steps 3 --shift 3.0] [--device cuda --dtype bf16]

``tracks.npy`` is [T, N, 2] pixel (x, y) in the image's pixels (finite, at most one frame size outside the
frame: ``data.track_inputs``); FastVideo's track files (``.pt`` / ``.npz`` / a folder: normalised points,
visibility and IDs) are read too, and their IDs tag the tracks. An image at another size than the student's is fitted to it by ``--fit`` (crop:
scale to cover and keep the centre, the default; resize: squash each axis), the tracks with it, points that
leave the frame invisible (``data.framing``). Frames beyond T get no tracks (the empty motion condition), so
``--chunks`` may run past the recording. Each chunk is decoded and appended to the output as soon as it is
generated; the per-chunk latency is printed (synchronised with
the device, so it is the chunk's real wall time) and, at the end, frames per second over the chunks
after the first generated one (that one pays the warm-up: allocator, kernels, caches); a stream too short to
have chunks after its warm-up gets the frames/s over all its chunks, warm-up included, said so.
``--device`` / ``--dtype``: default CUDA + bf16 when a GPU is present, else CPU + fp32.
``--compile``: the compiled streaming step (``models.stream_buffers``); the default is the same step eager.
``--prompt-schedule FILE``: lines ``frame<TAB>prompt``, the prompt switched mid-stream at the first chunk
starting at or after each frame, the KV cache re-cached under the new prompt (``stream.prompts``;
``--prompt-sink keep`` leaves the sink's K/V as they were, ``stream.recache``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from trackstream.data.framing import FIT_MODES
from trackstream.models.streaming import StreamConfig
from trackstream.models.tracks import latent_frames
from trackstream.stream.chunks import chunk_pixel_frames, whole_chunks
from trackstream.stream.options import (
    add_network_args,
    add_precision_args,
    load_network_args,
    network_codec,
    parsed_precision,
    refuse,
)

if TYPE_CHECKING:
    from trackstream.models.codecs.base import VideoCodec
    from trackstream.models.conditioner import Conditioner
    from trackstream.models.motion_wan import MotionWan

__all__ = ["main", "run", "add_stream_args", "fit_to_student", "stream_chunks"]


def fit_to_student(bgr: np.ndarray, tracks: np.ndarray, visibility: np.ndarray, conventions, *, mode: str):
    """The image, its tracks and their visibility at the student's size (a student streams the size it was
    trained at), by ``data.framing``'s rule ``mode``: as given when the image is at that size (or the student
    records none), else fitted, the tracks moved as its pixels were and points that leave the frame invisible."""
    from trackstream.data.framing import plan_fit

    h, w = bgr.shape[:2]
    H, W = conventions.height or h, conventions.width or w
    fit = plan_fit(h, w, height=H, width=W, mode=mode)
    if fit.identity:
        return bgr, tracks, visibility
    fitted, vis = fit.tracks(tracks, visibility)
    lost = int((visibility.any(0) & ~vis.any(0)).sum())
    print(
        f"fitting the image {fit.describe()} (--fit); the tracks follow"
        + (f", {lost} of {tracks.shape[1]} leave the frame (invisible)" if lost else ""),
        flush=True,
    )
    return fit.frames(bgr), fitted, vis


def stream_chunks(causal, tracks_shape: tuple, chunks: int | None) -> int:
    """The chunks to stream: ``--chunks``, else the whole chunks the tracks' T frames cover; tracks too
    short for one chunk after the first frame are refused (a file saved [N, T, 2] reads as T = N)."""
    T, N = tracks_shape[0], tracks_shape[1]
    covered = whole_chunks(causal, latent_frames(T))
    if chunks is not None:
        if chunks < 1:
            raise ValueError(f"--chunks {chunks} must be >= 1")
        return chunks
    if covered < 2:
        need = chunk_pixel_frames(causal, 1)[1]
        raise ValueError(
            f"--tracks covers {T} frames (read as [T, N, 2] = [{T}, {N}, 2]) but a stream needs at least {need} "
            "(the first chunk after the image): record more frames, transpose a file saved as [N, T, 2], or "
            "pass --chunks"
        )
    return covered


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default=None, help="the first frame (required unless --session)")
    ap.add_argument("--tracks", default=None, help="the tracks (required unless --session)")
    ap.add_argument("--visibility", default=None)
    ap.add_argument(
        "--session",
        default=None,
        metavar="FILE",
        help="a demo session saved by the page (trackstream-session.npz): streamed again through the calls it "
        "made, to the same frames (its first frame, tracks, prompts, drags and seed; --student: the one it ran)",
    )
    ap.add_argument(
        "--session-tracks",
        default=None,
        metavar="FILE",
        help="with --session: also write its tracks as a track file (.npy beside <FILE>.visibility.npy, or .pt: "
        "FastVideo's) that generate, camera's consumers and eval read",
    )
    ap.add_argument("--out", required=True)
    ap.add_argument("--fps", type=int, default=16)
    add_stream_args(ap)
    return ap


def add_stream_args(ap) -> None:
    """Every option of the stream but its inputs and output (``--image``, ``--tracks``, ``--visibility``,
    ``--out``, ``--fps``): the network, prompts, chunking, seed, speed and precision. ``trackstream transfer``
    takes them all (listed in its ``--help``, checked before it tracks anything)."""
    add_network_args(ap)
    ap.add_argument("--prompt", default="")
    ap.add_argument(
        "--prompt-schedule",
        default=None,
        metavar="FILE",
        help="UTF-8 lines frame<TAB>prompt: switch the prompt from that pixel frame on (frame 0: the initial prompt)",
    )
    ap.add_argument(
        "--prompt-sink",
        default="recache",
        choices=("recache", "keep"),
        help="on a prompt switch, re-cache the sink chunks too (default) or keep their K/V",
    )
    ap.add_argument("--chunks", type=int, default=None, help="default: as many as the tracks cover")
    ap.add_argument("--sink", type=int, default=None, help="sink chunks; default: the student's (conventions.causal)")
    ap.add_argument("--window", type=int, default=None, help="window chunks; default: the student's")
    ap.add_argument("--steps", type=int, default=None, help="default: the student's (conventions.causal)")
    ap.add_argument(
        "--shift",
        type=float,
        default=None,
        help="schedule shift; default: the one in the student's network.json (conventions.causal)",
    )
    ap.add_argument(
        "--fit",
        default="crop",
        choices=FIT_MODES,
        help="an image at another size than the student's: crop (scale to cover, keep the centre; the default) or "
        "resize (squash each axis); the tracks follow (data.framing)",
    )
    ap.add_argument("--resize", dest="fit", action="store_const", const="resize", help="the same as --fit resize")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the streaming step (CUDA graphs on CUDA; one compilation per chunk layout)",
    )
    ap.add_argument(
        "--reference-step",
        action="store_true",
        help="the reference step (cache concatenated and re-roped every pass) instead of the static buffers",
    )
    ap.add_argument(
        "--no-overlap-decode",
        action="store_true",
        help="decode each chunk before sampling the next (the default on the CPU; on CUDA the decode runs by default "
        "on a second stream, overlapping the next chunk's sampling)",
    )
    add_precision_args(ap)


@dataclass(frozen=True)
class _Loaded:
    """What a stream is made from, every part read and checked before the first chunk."""

    bgr: np.ndarray  # [H, W, 3] at the student's size
    tracks: np.ndarray  # [T, N, 2] pixel (x, y)
    visibility: np.ndarray  # [T, N]
    ids: np.ndarray | None  # [N] the tracks' own IDs (FastVideo's track files), else drawn from --seed
    net: MotionWan
    codec: VideoCodec
    conditioner: Conditioner
    cfg: StreamConfig
    chunks: int
    schedule: list  # stream.prompts' switches, placed on chunks


def _load(args, device: torch.device, dtype: torch.dtype) -> _Loaded:
    import cv2

    from trackstream.data.track_inputs import load_track_inputs
    from trackstream.stream.prompts import place_switches, read_prompt_schedule

    # every input checked before the first chunk: a bad file or value is one line (exit 2) naming it and the
    # fix (models.formats.files, data.track_inputs), not a usage block or a traceback; nothing is written
    if args.compile and args.reference_step:
        refuse("--compile compiles the static-buffer step: drop --reference-step")
    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        refuse(f"--image {args.image!r} could not be read as an image (a missing file, or not PNG / JPEG)")
    try:
        schedule = read_prompt_schedule(args.prompt_schedule) if args.prompt_schedule else []
        tracks_np, vis_np, ids = load_track_inputs(
            args.tracks, args.visibility, height=bgr.shape[0], width=bgr.shape[1]
        )
        net, codec, conditioner = load_network_args(args, device, dtype)
        cfg = net.conventions.stream_config(  # a teacher export (no causal conventions) is refused here
            args.student, steps=args.steps, shift=args.shift, sink_chunks=args.sink, window_chunks=args.window
        )
        bgr, tracks_np, vis_np = fit_to_student(bgr, tracks_np, vis_np, net.conventions, mode=args.fit)
        n = stream_chunks(cfg.causal, tracks_np.shape, args.chunks)
        schedule = place_switches(schedule, cfg.causal, n, args.prompt_schedule) if schedule else []
    except ValueError as err:
        refuse(str(err))
    return _Loaded(bgr, tracks_np, vis_np, ids, net, codec, conditioner, cfg, n, schedule)


def _prompts(loaded: _Loaded, prompt: str):
    """The first chunk's prompt encoding (text [1, L, D], lengths [1]) and {chunk: encoding} of the switches
    after it, all encoded before the first chunk."""
    schedule, causal = loaded.schedule, loaded.cfg.causal
    prompt = schedule[0].prompt if schedule and schedule[0].chunk == 0 else prompt
    text, lens = loaded.conditioner.text([prompt])  # the engine moves these (and the tracks) to the network's device
    switches = {}  # chunk -> the new prompt's encoding
    for s in schedule:
        lo, hi = chunk_pixel_frames(causal, s.chunk)
        print(f"prompt from frame {s.frame} -> chunk {s.chunk} (frames {lo}-{hi - 1}): {s.prompt!r}", flush=True)
        if s.chunk > 0:
            switches[s.chunk] = loaded.conditioner.text([s.prompt])
    return text, lens, switches


def _stream(engine, state, source, n: int, switches: dict, sink: str) -> list[np.ndarray]:
    """Every chunk's frames [T, H, W, 3] uint8, with the per-chunk latency printed as it comes and the
    frames/s after the warm-up at the end."""
    from trackstream.data.video_io import to_uint8
    from trackstream.stream.prompts import scheduled_stream

    # each chunk layout's first chunk pays the warm-up (allocator, kernels, compilation): chunk 0 (no cache),
    # chunk 1 (sink only), ..., up to the first chunk of the steady layout (sink + full window); time after it
    c = engine.config.causal
    warm = c.sink_chunks + (c.window_chunks if c.window_chunks is not None else 0) + 1
    if c.window_frames is not None:  # the layout is steady from the first chunk whose cache stops growing
        warm = next(i for i in range(c.sink_chunks, 10**6) if c.cache_start(i) == c.cache_start(i + 1)) + 1
    frames, timed, t_timed = [], 0, 0.0
    t_prev = t_start = time.perf_counter()
    # overlapping decode hands chunk i out after chunk i + 1 was sampled: the first timed chunk's frames were
    # made before the timed window opened, so they are not counted (else n chunks over n - 1 chunk times)
    early = []

    def on_switch(chunk: int, passes: int, seconds: float) -> None:
        what = f"{passes} pass" + ("" if passes == 1 else "es")
        print(f"chunk {chunk:4d}: prompt switched, KV re-cache {what}, {1e3 * seconds:.1f} ms", flush=True)

    for out in scheduled_stream(engine, state, source, n, switches, sink=sink, on_switch=on_switch):
        frames.append(to_uint8(out.frames[0]))
        now = time.perf_counter()  # out.seconds is synchronised in the engine, so now is too
        if out.index >= warm:
            if engine.overlap_decode and not early:
                early.append(out.frames.shape[2])
            else:
                timed += out.frames.shape[2]
            t_timed += now - t_prev
        t_prev = now
        print(
            f"chunk {out.index:4d}: frames {out.pixel_range[0]}-{out.pixel_range[1] - 1}, "
            f"{1e3 * out.seconds:.1f} ms (synchronised), {out.nfe} NFE",
            flush=True,
        )
    if timed and t_timed > 0:
        print(
            f"{timed / t_timed:.2f} frames/s ({timed} frames in {t_timed:.2f} s wall, chunks {warm}-{n - 1}: each "
            "chunk layout's first chunk excluded, warm-up and compilation)",
            flush=True,
        )
    elif frames:  # every chunk paid a layout's warm-up: the whole stream's rate, which understates the steady one
        total, wall = sum(len(f) for f in frames), t_prev - t_start
        print(
            f"{total / wall:.2f} frames/s ({total} frames in {wall:.2f} s wall, all {n} chunks: warm-up included; "
            f"the steady rate needs more than {warm} chunks)",
            flush=True,
        )
    return frames


def _photo_note(student: str) -> None:
    """One line when the student's records say it knows only the synthetic world (``stream.trained_world``):
    an image from elsewhere melts, and the person should know that before they watch it."""
    from trackstream.stream.trained_world import photo_notice, trained_world

    notice = photo_notice(trained_world(student))
    if notice is not None:  # a frame of its own world (trackstream inputs --scene) is not a photo: said so
        print(f"note: if --image is a photo, not a frame of its own world: {notice}", flush=True)


def _replay(args, device: torch.device, dtype: torch.dtype) -> int:
    """``--session``: the saved demo session streamed again (``stream.demo.record.replay``) to ``--out``."""
    from trackstream.data.video_io import write_mp4
    from trackstream.models.precision import dtype_name
    from trackstream.stream.demo.record import SessionRecord, session_tracks
    from trackstream.stream.demo.session import DemoModel, replay

    try:
        record = SessionRecord.load(args.session)
        model = DemoModel(args.student, network_codec(args), num_scenes=1, device=str(device), dtype=dtype_name(dtype))
        frames = replay(model, record)
    except ValueError as err:
        refuse(str(err))
    video = np.stack([frames[n] for n in sorted(frames)])
    write_mp4(args.out, video, fps=args.fps)
    print(f"{args.session}: {len(record.events)} calls replayed at seed {record.header['seed']}, {len(video)} frames")
    if args.session_tracks:
        written = session_tracks(record, args.session_tracks)
        print(f"wrote its tracks: {', '.join(map(str, written))}")
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    return run(ap, ap.parse_args(argv))


def run(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The stream of parsed ``args`` (``ap``: the parser that read them, for its usage errors)."""
    device, dtype = parsed_precision(ap, args)
    if getattr(args, "session", None):  # generate's own flag (transfer streams through run without it)
        return _replay(args, device, dtype)
    if not args.image or not args.tracks:
        ap.error("--image and --tracks are required (or --session FILE: a saved demo session)")

    from trackstream.data.video_io import image_tensor, write_mp4
    from trackstream.models.precision import dtype_name
    from trackstream.models.tracks import sample_track_ids
    from trackstream.stream.chunk_io import tracks_from_array
    from trackstream.stream.engine import StreamingGenerator

    loaded = _load(args, device, dtype)
    _photo_note(args.student)
    cfg, n = loaded.cfg, loaded.chunks
    h, w = loaded.bgr.shape[:2]
    first, last = chunk_pixel_frames(cfg.causal, 0)[0], chunk_pixel_frames(cfg.causal, n - 1)[1]
    if loaded.tracks.shape[0] > last:
        print(
            f"note: --tracks has {loaded.tracks.shape[0]} frames; frames {last}-{loaded.tracks.shape[0] - 1} are past "
            f"the last whole chunk and are not generated (whole chunks of {cfg.causal.chunk_frames} latent frames = "
            f"{4 * cfg.causal.chunk_frames} pixel frames each after the first; or pass --chunks)",
            flush=True,
        )
    print(
        f"{args.student}: {device}, {dtype_name(dtype)}; {w}x{h}, {n} chunks ({cfg.name}) = frames {first}-{last - 1}, "
        f"{loaded.tracks.shape[1]} tracks",
        flush=True,
    )
    image = image_tensor(loaded.bgr[:, :, ::-1]).to(device)
    tracks, vis = torch.from_numpy(loaded.tracks)[None], torch.from_numpy(loaded.visibility)[None]
    engine = StreamingGenerator(
        loaded.net,
        loaded.codec,
        config=cfg,
        image_features_fn=loaded.conditioner.image_features,
        fast=not args.reference_step,
        compile=args.compile,
        overlap_decode=device.type == "cuda" and not args.no_overlap_decode,
    )
    text, lens, switches = _prompts(loaded, args.prompt)
    if loaded.ids is not None:  # the tracks' own IDs: the stream tags them as their file does
        ids = torch.from_numpy(loaded.ids)[None]
    else:  # --seed: all of it, from the range the network's IDs were trained on
        gen = torch.Generator().manual_seed(args.seed)
        ids = sample_track_ids(1, tracks.shape[2], id_range=loaded.net.track_id_range, generator=gen)
    state = engine.start(image, text, lens, track_ids=ids, seed=args.seed)
    frames = _stream(engine, state, tracks_from_array(tracks, vis), n, switches, args.prompt_sink)
    write_mp4(args.out, np.concatenate(frames), fps=args.fps)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
