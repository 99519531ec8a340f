"""Load test of a running demo server: N people streaming at once, one too many, and bad messages.

    python -m trackstream.stream.demo --student ... --codec ... --port 8000 &
    python -m trackstream.stream.demo.load --url ws://127.0.0.1:8000/ws --sessions 2 --seconds 30 --out load.json

Each of the N sessions starts a synthetic scene, lays a grid of points and pans it (live tracks) for
``--seconds``, recording every chunk's latency (compute + waiting for the shared model) and the
server's resident memory. While they stream, session N+1 must be refused (``busy``, close code 1013),
and the first session sends malformed and oversized messages, each of which must be answered with an
``error`` while its frames keep coming. The report (JSON) has per-session latency percentiles, frames
(and bytes per binary frame message), drops, the refusal and the rejections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import numpy as np

from trackstream.stream.demo.media import unpack_frame

__all__ = ["run_load", "bad_messages"]


def _grid(n: int, size: int, offset: float) -> list[dict]:
    pts = []
    for j in range(n):
        for i in range(n):
            x, y = (i + 0.5) * size / n - 0.5 + offset, (j + 0.5) * size / n - 0.5
            if 0 <= x <= size - 1:
                pts.append({"id": j * n + i, "x": round(x, 2), "y": round(y, 2), "pinned": False})
    return pts


def bad_messages(max_message_bytes: int, width: int) -> list:
    """(name, message) pairs the server must refuse without closing the session."""
    return [
        ("not json", "{nope"),
        ("not an object", "[1, 2]"),
        ("unknown type", json.dumps({"type": "explode"})),
        ("point outside the frame", json.dumps({"type": "points", "points": [{"id": 0, "x": width + 5, "y": 1}]})),
        ("point id out of range", json.dumps({"type": "points", "points": [{"id": 10**6, "x": 1, "y": 1}]})),
        (
            "wrong field type",
            json.dumps(
                {"type": "drag", "mode": "animate", "kind": "translate", "path": "left", "mask": {"box": [1, 1, 5, 5]}}
            ),
        ),
        ("oversized", json.dumps({"type": "points", "points": [], "pad": "x" * (max_message_bytes + 10)})),
        ("binary", b"\x00\x01\x02"),
        ("bad image", json.dumps({"type": "start", "image": "data:image/png;base64,AAAA"})),
    ]


def _client(url: str, k: int) -> dict:
    """Connection options of the k-th simulated person: on a loopback server each comes from its own loopback
    address (127.0.0.(2 + k)), as people do, so the server's per-address caps see several clients."""
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    return {"local_addr": (f"127.0.0.{2 + k}", 0)} if host.startswith("127.") else {}


async def _session(url: str, scene: int, seconds: float, *, bad: bool, client: int = 0) -> dict:
    import websockets

    chunks, errors, frames, frames_after_bad, frame_bytes = [], [], 0, 0, 0
    async with websockets.connect(url, max_size=2**24, **_client(url, client)) as ws:
        hello = json.loads(await ws.recv())
        if hello["type"] != "hello":
            return {"refused": hello}
        W = hello["width"]
        await ws.send(json.dumps({"type": "start", "scene": scene}))
        await ws.send(json.dumps({"type": "points", "points": _grid(8, W, 0.0)}))
        t0, sent_bad, last_move, offset = time.perf_counter(), None, 0.0, 0.0
        bad_msgs = bad_messages(hello["limits"]["max_message_bytes"], W) if bad else []
        while (now := time.perf_counter() - t0) < seconds:
            if bad and sent_bad is None and now > seconds / 4:
                for _, m in bad_msgs:
                    await ws.send(m)
                sent_bad = now
            if now - last_move > 0.25:  # pan the grid right and back: live tracks every quarter second
                offset = 6 * np.sin(now / 2)
                await ws.send(json.dumps({"type": "points", "points": _grid(8, W, offset)}))
                last_move = now
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=0.25)
            except asyncio.TimeoutError:
                continue
            if isinstance(raw, bytes):  # a frame: binary JPEG / WebP behind its header
                unpack_frame(raw)
                frames += 1
                frame_bytes += len(raw)
                frames_after_bad += sent_bad is not None
                continue
            m = json.loads(raw)
            if m["type"] == "chunk":
                chunks.append(m)
            elif m["type"] == "error":
                errors.append(m["message"])
    lat = np.array([c["latency_ms"] for c in chunks[1:]] or [np.nan])  # chunk 0 is the frame itself
    return {
        "scene": scene,
        "chunks": len(chunks),
        "frames": frames,
        "bytes_per_frame": frame_bytes / max(frames, 1),
        "dropped": chunks[-1]["dropped"] if chunks else None,
        "latency_ms": {"median": float(np.median(lat)), "p95": float(np.percentile(lat, 95)), "max": float(lat.max())},
        "compute_ms_median": float(np.median([c["compute_ms"] for c in chunks[1:]] or [np.nan])),
        "rss_mb": [c["rss_mb"] for c in chunks],
        "errors": errors,
        "bad_sent": len(bad_msgs),
        "frames_after_bad": frames_after_bad,
    }


async def _refused(url: str, client: int) -> dict:
    import websockets

    async with websockets.connect(url, **_client(url, client)) as ws:
        first = json.loads(await ws.recv())
        try:
            await asyncio.wait_for(ws.recv(), timeout=5)
        except websockets.ConnectionClosed as e:
            return {"first": first, "close_code": e.rcvd.code if e.rcvd else None}
        return {"first": first, "close_code": None}


async def _load(url: str, sessions: int, seconds: float) -> dict:
    tasks = [asyncio.create_task(_session(url, k, seconds, bad=k == 0, client=k)) for k in range(sessions)]
    await asyncio.sleep(min(3.0, seconds / 3))
    refused = await _refused(url, sessions)  # a person beyond the sessions: the demo is busy
    results = await asyncio.gather(*tasks)
    await asyncio.sleep(0.5)  # the server notices the closed sessions
    after = await _session(url, 0, 2.0, bad=False, client=sessions)  # a slot is free again
    rss = [r for s in results for r in s.get("rss_mb", [])]
    return {
        "url": url,
        "sessions": results,
        "refused": refused,
        "after": {"chunks": after.get("chunks"), "frames": after.get("frames")},
        "rss_mb": {
            "first": rss[0] if rss else None,
            "last": results[0]["rss_mb"][-1] if rss else None,
            "max": max(rss) if rss else None,
        },
        "seconds": seconds,
    }


def run_load(url: str, *, sessions: int, seconds: float) -> dict:
    return asyncio.run(_load(url, sessions, seconds))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trackstream.stream.demo.load", description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="ws://127.0.0.1:8000/ws")
    ap.add_argument("--sessions", type=int, default=2, help="the server's --max-sessions")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--out", default=None, help="write the report (JSON) here")
    args = ap.parse_args(argv)
    report = run_load(args.url, sessions=args.sessions, seconds=args.seconds)
    text = json.dumps(report, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    for s in report["sessions"]:
        print(
            f"[load] scene {s['scene']}: {s['chunks']} chunks, {s['frames']} frames "
            f"({s['bytes_per_frame'] / 1024:.1f} KiB each), latency median "
            f"{s['latency_ms']['median']:.0f} ms p95 {s['latency_ms']['p95']:.0f} ms, dropped {s['dropped']}, "
            f"errors {len(s['errors'])}/{s['bad_sent']}"
        )
    print(
        f"[load] session {args.sessions + 1}: {report['refused']['first'].get('type')} (close {report['refused']['close_code']}); "
        f"server RSS {report['rss_mb']['first']} -> {report['rss_mb']['last']} MiB (max {report['rss_mb']['max']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
