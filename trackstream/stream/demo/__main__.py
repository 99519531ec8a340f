"""The live demo: a web page where you drag and the video follows.

    trackstream demo --student runs/make-run/dmd/export/student --codec assets/tiny-teacher
    # then open http://127.0.0.1:8000

``make demo`` does this on make run's student (``DEMO_ARGS="--frame-quality 90"`` etc.). Binds
127.0.0.1 unless told otherwise (``--host 0.0.0.0`` exposes it to the network: there is no
authentication; from a laptop, tunnel instead: ``ssh -L 8000:127.0.0.1:8000 user@gpu-host``).
``--max-sessions`` people stream at once; the next one is told the demo is busy. Runs on CUDA + bf16
when a GPU is present, else CPU + fp32 (``--device`` / ``--dtype``). See docs/demo.md.
"""

from __future__ import annotations

import argparse
import logging
import sys

from trackstream.stream.demo.media import FRAME_FORMATS
from trackstream.stream.options import add_network_args, add_precision_args, network_codec

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="trackstream demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_network_args(ap)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max-sessions", type=int, default=2)
    ap.add_argument(
        "--max-sessions-per-client",
        type=int,
        default=None,
        help="live sessions from one client address (default: --max-sessions - 1, at least 1)",
    )
    ap.add_argument("--max-points", type=int, default=64)
    ap.add_argument("--scenes", type=int, default=8, help="synthetic first frames offered on the page")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_precision_args(ap)
    ap.add_argument("--compile", action="store_true", help="the engine's compiled streaming step (CUDA graphs on CUDA)")
    ap.add_argument(
        "--frame-format",
        default="jpeg",
        choices=sorted(FRAME_FORMATS),
        help="how frames travel to the page (binary WebSocket messages)",
    )
    ap.add_argument("--frame-quality", type=int, default=85, help="JPEG / WebP quality, 1..100")
    ap.add_argument(
        "--record-mb",
        type=float,
        default=64.0,
        help="encoded frames kept per session for 'Save video' (MiB; the oldest go beyond it)",
    )
    ap.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="URL",
        help="a web origin besides the page's own that may open sessions (repeatable; * = any site)",
    )
    ap.add_argument(
        "--depth-model",
        default=None,
        metavar="DIR",
        help="a local transformers depth-estimation folder for camera moves (default: the frame taken as a plane)",
    )
    ap.add_argument("--max-connections", type=int, default=64, help="open connections at once (pages + sessions)")
    ap.add_argument(
        "--max-connections-per-client",
        type=int,
        default=None,
        help="open connections from one client address, so that one client cannot take every connection "
        "(default: 16, or --max-connections if lower)",
    )
    ap.add_argument(
        "--idle-minutes", type=float, default=2.0, help="a page with nothing playing and no input is closed after this"
    )
    return ap


def _load(args):
    """The server's ``Limits`` and the loaded ``DemoModel``; a bad value or file is a ``ValueError``."""
    from trackstream.stream.demo.limits import Limits
    from trackstream.stream.demo.session import DemoModel

    if not 1 <= args.frame_quality <= 100:
        raise ValueError(f"--frame-quality {args.frame_quality}: must be in [1, 100]")
    if not args.record_mb > 0:
        raise ValueError(f"--record-mb {args.record_mb}: must be > 0")
    if not args.idle_minutes > 0:
        raise ValueError(f"--idle-minutes {args.idle_minutes}: must be > 0")
    limits = Limits(
        max_sessions=args.max_sessions,
        max_points=args.max_points,
        record_bytes=int(args.record_mb * 2**20),
        max_sessions_per_client=args.max_sessions_per_client,
        max_connections=args.max_connections,
        max_connections_per_client=args.max_connections_per_client,
        idle_seconds=60 * args.idle_minutes,
        allowed_origins=tuple(args.allow_origin),
    )
    model = DemoModel(
        args.student,
        network_codec(args),
        num_scenes=args.scenes,
        device=args.device,
        dtype=args.dtype,
        compile=args.compile,
        offload_encoders=args.offload_encoders,
        depth_model=args.depth_model,
        decoder=args.decoder,
        decoder_name=args.decoder_name,
    )
    return limits, model


def _port_taken(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host``:``port`` (another server holds it), or None when it can."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a socket in TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use (another demo?): choose another with --port {port + 10}"
            return f"cannot listen on {host}:{port} ({e.strerror}): check --host / --port"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)

    import torch

    from trackstream.stream.demo.guard import serve
    from trackstream.stream.demo.server import create_app

    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s", datefmt="%H:%M:%S"
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    taken = _port_taken(args.host, args.port)  # before loading anything, and before the banner
    if taken:
        print(f"[demo] error: {taken}", file=sys.stderr)
        return 2
    try:
        limits, model = _load(args)
    except ValueError as e:
        print(f"[demo] error: {e}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("trackstream.stream.demo").warning(
            "binding %s: anyone who can reach this machine can use the demo", args.host
        )
    print(
        f"[demo] {model.width}x{model.height} at {model.fps} fps on {model.device} ({model.dtype}"
        f"{', compiled' if args.compile else ''}), {args.frame_format} frames at quality {args.frame_quality}, "
        f"{args.max_sessions} sessions: open http://{args.host}:{args.port}",
        flush=True,
    )
    app = create_app(model, limits, frame_format=args.frame_format, frame_quality=args.frame_quality)
    try:
        serve(app, limits, host=args.host, port=args.port)
    except ValueError as e:  # the descriptor limit
        print(f"[demo] error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has closed the sessions, then re-raises the signal
        print("[demo] stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
