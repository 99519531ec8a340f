"""The demo's ASGI app (Starlette): one page, one WebSocket per person, frames pushed as they are decoded.

    app = create_app(DemoModel(student, codec), Limits(max_sessions=2), frame_format="jpeg", frame_quality=85)
    uvicorn.run(app, host="127.0.0.1", port=8000, ws_max_size=Limits().hard_message_bytes)

Per connection three things run: the receiver (parses every message, ``stream.demo.protocol``; a
refused one gets an ``error`` reply and the session goes on), the generator (one chunk at a time in a
worker thread, paced to stay ``Limits.lead_seconds`` ahead of the person's playback clock, drags
between chunks) and the sender (a bounded queue of frames: a client that reads too slowly loses the
oldest frames, counted in ``dropped``, and memory never grows). Frames travel as binary JPEG / WebP
messages (``stream.demo.protocol``), encoded in a worker thread; the same bytes are kept in the
session's bounded ``Recording``, which ``GET /video/<session token>`` turns into an mp4. Connections
beyond ``Limits.max_sessions`` get ``busy`` and are closed with code 1013 (try again later).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections import deque
from pathlib import Path
from typing import Optional

from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from trackstream.stream.demo.media import FRAME_FORMATS, Recording, encode_frame, pack_frame
from trackstream.stream.demo.protocol import Control, Drag, Limits, Points, ProtocolError, Start, parse_message
from trackstream.stream.demo.session import DemoModel, Emitted, Session

__all__ = ["create_app", "rss_mb"]

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("trackstream.stream.demo")


def rss_mb() -> float:
    """Resident memory of this process (MiB)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: the peak instead
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_PARSE_IN_THREAD = 16 * 1024  # a message this long may carry an image: decoded off the event loop


class _Frame:
    """One frame waiting in the outbox: its binary message."""

    __slots__ = ("n", "message")

    def __init__(self, n: int, message: bytes):
        self.n, self.message = n, message


class _Connection:
    def __init__(
        self,
        ws: WebSocket,
        model: DemoModel,
        limits: Limits,
        seed: int,
        *,
        frame_format: str = "jpeg",
        frame_quality: int = 85,
    ):
        self.ws, self.model, self.limits = ws, model, limits
        self.frame_format, self.frame_quality = frame_format, frame_quality
        self.session = Session(model, limits, seed=seed)
        self.token = secrets.token_urlsafe(16)  # names this session's recording (GET /video/<token>)
        self.recording = Recording(limits.record_bytes)
        self.outbox: deque = deque()  # frames (bounded by hand: dropped counts) and control replies
        self.frames_queued = 0
        self.dropped = 0
        self.wake_sender = asyncio.Event()
        self.wake_generator = asyncio.Event()
        self.pending: deque = deque()  # Start / Drag / restart, run by the generator between chunks
        self.paused = False
        self.closed = False
        self.play_t0: Optional[float] = None  # the client's playback clock, in frames since play_t0
        self.play_frames = 0

    # -- out ---------------------------------------------------------------------------------------

    def send(self, msg: dict) -> None:
        self.outbox.append(msg)
        self.wake_sender.set()

    def encode(self, em: Emitted) -> list[bytes]:
        """The chunk's frames as JPEG / WebP (pure: run in a worker thread)."""
        return [encode_frame(f, self.frame_format, self.frame_quality) for f in em.frames]

    def send_frames(self, em: Emitted, images: list[bytes]) -> None:
        """Queue the chunk's encoded frames and record them (the recording keeps what was generated,
        also what a slow client lost)."""
        for j, image in enumerate(images):
            n = em.start + j
            self.recording.add(n, image)
            if self.frames_queued >= self.limits.queue_frames:  # the slow client loses the oldest frame
                for k, m in enumerate(self.outbox):
                    if isinstance(m, _Frame):
                        del self.outbox[k]
                        self.frames_queued -= 1
                        self.dropped += 1
                        break
            self.outbox.append(
                _Frame(n, pack_frame(image, n=n, chunk=em.index, fmt=self.frame_format, replaces=em.replaces))
            )
            self.frames_queued += 1
        self.wake_sender.set()

    async def sender(self) -> None:
        while not self.closed:
            await self.wake_sender.wait()
            self.wake_sender.clear()
            while self.outbox:
                msg = self.outbox.popleft()
                if isinstance(msg, _Frame):
                    self.frames_queued -= 1
                    await self.ws.send_bytes(msg.message)
                else:
                    await self.ws.send_text(json.dumps(msg))

    # -- in ----------------------------------------------------------------------------------------

    async def receiver(self) -> None:
        m = self.model
        while True:
            raw = await self.ws.receive()
            if raw["type"] == "websocket.disconnect":
                return
            text = raw.get("text") if raw.get("text") is not None else raw.get("bytes")
            try:
                kw = dict(height=m.height, width=m.width, limits=self.limits, num_scenes=m.num_scenes)
                if text is not None and len(text) > _PARSE_IN_THREAD:  # an upload's decode must not stall the others
                    msg = await asyncio.to_thread(parse_message, text, **kw)
                else:
                    msg = parse_message(text, **kw)
                if isinstance(msg, Points):
                    self.session.points(msg)
                elif isinstance(msg, Control) and msg.action in ("pause", "resume"):
                    self.paused = msg.action == "pause"
                    self.play_t0 = None
                    self.send({"type": "paused" if self.paused else "resumed", "chunk": self.session.chunk})
                    self.wake_generator.set()
                else:  # start / restart / drag: done by the generator, in order, between chunks
                    if len(self.pending) >= 4:
                        raise ProtocolError("too many requests waiting (4): wait for the last ones to finish")
                    self.pending.append(msg)
                    self.wake_generator.set()
            except ProtocolError as e:
                self.send({"type": "error", "message": str(e), "refused": _kind(text)})

    # -- generation --------------------------------------------------------------------------------

    async def _compute(self, fn, *args):
        """``fn(*args)`` in a worker thread with the model to itself; (result, seconds waited for it)."""

        def run():
            t0 = time.perf_counter()
            with self.model.lock:
                waited = time.perf_counter() - t0
                return fn(*args), waited

        return await asyncio.to_thread(run)

    async def generator(self) -> None:
        fps, chunk_s = self.model.fps, self.model.chunk_frames / self.model.fps
        while not self.closed:
            if self.pending:
                await self._handle(self.pending.popleft())
                continue
            if self.paused or not self.session.started:
                self.wake_generator.clear()
                await self.wake_generator.wait()
                continue
            now = time.perf_counter()
            if self.play_t0 is None:
                self.play_t0, self.play_frames = now, 0
            ahead = self.play_frames / fps - (now - self.play_t0)
            if ahead < 0:  # slower than real time: the clock waits for the stream
                self.play_t0 = now - self.play_frames / fps
            elif ahead > self.limits.lead_seconds:
                self.wake_generator.clear()
                try:
                    await asyncio.wait_for(
                        self.wake_generator.wait(), timeout=min(ahead - self.limits.lead_seconds, chunk_s)
                    )
                except asyncio.TimeoutError:
                    pass
                continue
            try:
                em, waited = await self._compute(self.session.next_chunk)
            except Exception as e:  # noqa: BLE001 - the stream stops, the connection and the server stay
                log.exception("chunk failed")
                self.paused = True
                self.send({"type": "error", "message": f"the stream stopped: {e}", "refused": "chunk"})
                continue
            await self._emit(em, waited)

    async def _emit(self, em: Emitted, waited: float) -> None:
        images = await asyncio.to_thread(self.encode, em)
        if not self.paused:
            self.play_frames += len(em.frames)
        self.send_frames(em, images)
        self.send(
            {
                "type": "chunk",
                "index": em.index,
                "frames": len(em.frames),
                "compute_ms": round(em.seconds * 1e3, 1),
                "wait_ms": round(waited * 1e3, 1),
                "latency_ms": round((em.seconds + waited) * 1e3, 1),
                "dropped": self.dropped,
                "rss_mb": round(rss_mb(), 1),
            }
        )

    async def _handle(self, msg) -> None:
        try:
            if isinstance(msg, Start) or (isinstance(msg, Control) and msg.action == "restart"):
                em, waited = await self._compute(self.session.start, msg if isinstance(msg, Start) else None)
                self.paused, self.play_t0 = False, None
                self.recording.clear()  # a new stream: "save video" saves this one
                self.send({"type": "started", "prompt": self.session.prompt, "fps": self.model.fps})
                await self._emit(em, waited)
            elif isinstance(msg, Drag):
                (ems, result), waited = await self._compute(self.session.drag, msg)
                for em in ems:
                    await self._emit(em, waited)
                    waited = 0.0
                final = [[round(float(v), 5) for v in log.losses[-1]] for log in result.logs if log.losses]
                self.send(
                    {
                        "type": "dragged",
                        "mode": msg.mode,
                        "method": msg.method,
                        "chunks": [e.index for e in ems],
                        "seconds": round(result.seconds, 3),
                        "segments": result.segments,
                        "final_loss": final,
                    }
                )
        except ValueError as e:  # ProtocolError, or the editor refusing (e.g. an edit with nothing to edit)
            self.send({"type": "error", "message": str(e), "refused": type(msg).__name__.lower()})


def _kind(text) -> str:
    try:
        return str(json.loads(text).get("type"))[:32]
    except Exception:  # noqa: BLE001 - whatever it was, it was refused
        return "unreadable"


def create_app(
    model: DemoModel, limits: Limits = Limits(), *, seed: int = 0, frame_format: str = "jpeg", frame_quality: int = 85
) -> Starlette:
    """The demo's app over one loaded model; at most ``limits.max_sessions`` live connections; frames
    sent as ``frame_format`` (jpeg | webp) at ``frame_quality`` (1..100)."""
    if frame_format not in FRAME_FORMATS:
        raise ValueError(f"frame_format {frame_format!r}: choose one of {sorted(FRAME_FORMATS)} (--frame-format)")
    if not 1 <= frame_quality <= 100:
        raise ValueError(f"frame_quality {frame_quality}: must be in [1, 100] (--frame-quality)")
    live: dict = {}  # session token -> connection
    counter = {"n": 0}
    saving = asyncio.Semaphore(1)  # one mp4 encode at a time: bounded CPU and memory whatever is asked

    async def video(request):
        conn = live.get(request.path_params["token"])
        if conn is None:
            return PlainTextResponse(
                "no live session with this token: a recording lives as long as its page's "
                "connection (reload and stream again)",
                status_code=404,
            )
        images, dropped = conn.recording.snapshot(), conn.recording.dropped
        if not images:
            return PlainTextResponse("nothing recorded yet: start a stream first", status_code=409)
        async with saving:
            data = await asyncio.to_thread(Recording.mp4, images, fps=model.fps)
        return Response(
            data,
            media_type="video/mp4",
            headers={
                "Content-Disposition": 'attachment; filename="trackstream.mp4"',
                "X-Frames": str(len(images)),
                "X-Frames-Dropped": str(dropped),
                "Cache-Control": "no-store",
            },
        )

    async def page(request):
        return FileResponse(STATIC / "index.html")

    async def health(request):
        return JSONResponse({"sessions": len(live), "max_sessions": limits.max_sessions, "rss_mb": round(rss_mb(), 1)})

    async def socket(ws: WebSocket):
        await ws.accept()
        if len(live) >= limits.max_sessions:
            await ws.send_text(
                json.dumps(
                    {
                        "type": "busy",
                        "message": f"the demo is busy ({limits.max_sessions} "
                        "sessions streaming); try again in a minute",
                    }
                )
            )
            await ws.close(code=1013)
            return
        counter["n"] += 1
        conn = _Connection(
            ws, model, limits, seed=seed + counter["n"], frame_format=frame_format, frame_quality=frame_quality
        )
        live[conn.token] = conn
        await ws.send_text(
            json.dumps(
                {
                    "type": "hello",
                    "height": model.height,
                    "width": model.width,
                    "fps": model.fps,
                    "chunk_frames": model.chunk_frames,
                    "scenes": model.num_scenes,
                    "track_head": model.has_track_head,
                    "frame_format": frame_format,
                    "frame_quality": frame_quality,
                    "session": conn.token,
                    "device": model.device,
                    "dtype": model.dtype,
                    "limits": {
                        "max_points": limits.max_points,
                        "max_upload_bytes": limits.max_upload_bytes,
                        "max_message_bytes": limits.max_message_bytes,
                        "max_drag_chunks": limits.max_drag_chunks,
                        "max_image_side": limits.max_image_side,
                        "record_bytes": limits.record_bytes,
                    },
                }
            )
        )
        tasks = [asyncio.create_task(conn.sender()), asyncio.create_task(conn.generator())]
        try:
            await conn.receiver()
        except WebSocketDisconnect:
            pass
        except Exception:  # noqa: BLE001 - one broken connection must not take the server down
            log.exception("session failed")
        finally:
            conn.closed = True
            conn.wake_sender.set()
            conn.wake_generator.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            live.pop(conn.token, None)

    routes = [
        Route("/", page),
        Route("/health", health),
        Route("/video/{token}", video),
        WebSocketRoute("/ws", socket),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)
