"""Command line streaming generation: an image, a prompt and tracks in, an mp4 out, chunk by chunk.

    python -m stream.generate --student RUN/dmd/export/student --codec RUN/teacher/codec/codec.pt \\
        --image first.png --tracks tracks.npy [--visibility visibility.npy] --prompt "..." \\
        --out video.mp4 [--chunks N] [--sink 1 --window 1 --steps 3 --shift 3.0]

``tracks.npy`` is [T, N, 2] pixel (x, y) at the video's size; frames beyond T get no tracks (the
empty motion condition), so ``--chunks`` may run past the recording. Each chunk is decoded and
appended to the output as soon as it is generated; the per-chunk latency is printed.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", required=True, help="exported student folder (ODE-init or DMD stage export)")
    ap.add_argument("--codec", required=True, help="the teacher's codec checkpoint")
    ap.add_argument("--codec-name", default="tiny-ae")
    ap.add_argument("--image", required=True)
    ap.add_argument("--tracks", required=True)
    ap.add_argument("--visibility", default=None)
    ap.add_argument("--prompt", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--chunks", type=int, default=None, help="default: as many as the tracks cover")
    ap.add_argument("--sink", type=int, default=None, help="sink chunks; default: the student's (conventions.causal)")
    ap.add_argument("--window", type=int, default=None, help="window chunks; default: the student's")
    ap.add_argument("--steps", type=int, default=None, help="default: the student's (conventions.causal)")
    ap.add_argument("--shift", type=float, default=None,
                    help="schedule shift; default: the one in the student's network.json (conventions.causal)")
    ap.add_argument("--fps", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import cv2

    from data.video_io import to_uint8, write_mp4
    from models.conditioner import load_export
    from models.tracks import sample_track_ids
    from stream.chunks import StreamConfig
    from stream.engine import StreamingGenerator, tracks_from_array

    net, codec, conditioner = load_export(args.student, codec_name=args.codec_name, codec=args.codec)
    text_encoder = conditioner.text_encoder
    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"--image {args.image!r} could not be read")
    image = torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    tracks = torch.from_numpy(np.load(args.tracks)).float()[None]
    if tracks.ndim != 4 or tracks.shape[-1] != 2:
        raise ValueError(f"--tracks must hold [T, N, 2] pixel coordinates, got {tuple(tracks.shape[1:])}")
    vis = (torch.from_numpy(np.load(args.visibility)).bool()[None] if args.visibility
           else torch.ones(tracks.shape[:3], dtype=torch.bool))
    streaming = net.conventions.streaming
    if streaming is None:
        raise ValueError(f"{args.student}/network.json records no streaming configuration (conventions.causal): "
                         "export the student with the ODE-init or DMD stage")
    changes = {k: v for k, v in (("sink_chunks", args.sink), ("window_chunks", args.window)) if v is not None}
    cfg = StreamConfig.of(streaming, steps=args.steps, shift=args.shift, **changes)
    engine = StreamingGenerator(net, codec, config=cfg, image_features_fn=conditioner.image_features)
    T = tracks.shape[1]
    n = args.chunks or 1 + ((T - 1) // 4) // cfg.chunk_frames  # whole chunks the recording covers
    text, lens = text_encoder.encode([args.prompt])
    state = engine.start(image, text, lens, track_ids=sample_track_ids(1, tracks.shape[2]), seed=args.seed)
    frames = []
    for out in engine.stream(state, tracks_from_array(tracks, vis), num_chunks=n):
        frames.append(to_uint8(out.frames[0]))
        print(f"chunk {out.index:4d}: frames {out.pixel_range[0]}-{out.pixel_range[1] - 1}, "
              f"{1e3 * out.seconds:.1f} ms, {out.nfe} NFE", flush=True)
    write_mp4(args.out, np.concatenate(frames), fps=args.fps)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
