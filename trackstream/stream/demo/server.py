"""The demo's ASGI app (Starlette): one page, one WebSocket per person, frames pushed as they are decoded.

    app = create_app(DemoModel(student), Limits(max_sessions=2), frame_format="jpeg", frame_quality=85)
    serve(app, limits, host="127.0.0.1", port=8000)        # uvicorn with stream.demo.guard's protocols

A WebSocket handshake from a web origin other than the page's own (and ``Limits.allowed_origins``) is
refused with 403: any site the person visits could otherwise stream, upload and drag through their
browser. Connections beyond ``Limits.max_sessions`` get ``busy`` and are closed with code 1013 (try
again later). Each session is a ``stream.demo.connection.Connection`` (receiver, generator, sender,
watchdog); the server's one ``DecodeWorker`` decodes every upload. ``GET /video/<session token>`` turns
a session's bounded ``Recording`` into an mp4 (one at a time); ``GET /health`` says how many sessions
are open, the server's memory and what the guards refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import cv2
import numpy as np
from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from trackstream.stream.demo.connection import Connection
from trackstream.stream.demo.decode import DecodeWorker
from trackstream.stream.demo.limits import Limits, origin_allowed, rss_mb
from trackstream.stream.demo.media import FRAME_FORMATS, Recording
from trackstream.stream.demo.protocol import PROTOCOL_VERSION
from trackstream.stream.demo.session import DemoModel, grid_hello

__all__ = ["create_app"]

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("trackstream.stream.demo")


class _Server:
    """One app's shared state (the live sessions, the decoder, the counters) and its endpoints."""

    def __init__(self, model: DemoModel, limits: Limits, *, seed: int, frame_format: str, frame_quality: int):
        self.model, self.limits, self.seed = model, limits, seed
        self.frame_format, self.frame_quality = frame_format, frame_quality
        self.live: dict = {}  # session token -> connection
        self.hosts: dict = {}  # session token -> its client's address
        self.counter = {"n": 0, "origin_refused": 0}
        self.decoder = DecodeWorker(limits)
        self.saving = asyncio.Semaphore(1)  # one mp4 encode at a time: bounded CPU and memory whatever is asked

    async def video(self, request):
        conn = self.live.get(request.path_params["token"])
        if conn is None:
            return PlainTextResponse(
                "no live session with this token: a recording lives as long as its page's "
                "connection (reload and stream again)",
                status_code=404,
            )
        images, dropped = conn.recording.snapshot(), conn.recording.dropped
        if not images:
            return PlainTextResponse("nothing recorded yet: start a stream first", status_code=409)
        scale = request.query_params.get("scale", "1")
        top = max(1, 1024 // max(self.model.width, self.model.height))  # an upscaled copy at most ~1024 px a side
        if not scale.isdigit() or not 1 <= int(scale) <= top:
            return PlainTextResponse(f"scale={scale!r}: an integer in [1, {top}]", status_code=400)
        async with self.saving:
            data = await asyncio.to_thread(Recording.mp4, images, fps=self.model.fps, scale=int(scale))
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

    async def scene(self, request):
        """Scene k's first frame as a PNG (the page's preview and thumbnails, before any stream)."""
        k = request.path_params["k"]
        if not k.isdigit() or not 0 <= int(k) < self.model.num_scenes:
            return PlainTextResponse(f"scene {k!r}: one of 0..{self.model.num_scenes - 1}", status_code=404)
        frame, _ = await asyncio.to_thread(self.model.scene, int(k))
        png = cv2.imencode(".png", np.ascontiguousarray(frame[:, :, ::-1]))[1].tobytes()
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    async def session_file(self, request):
        """The live session's record (``stream.demo.record``): what ``trackstream generate --session`` replays."""
        conn = self.live.get(request.path_params["token"])
        if conn is None:
            return PlainTextResponse("no live session with this token (reload and stream again)", status_code=404)
        if not conn.session.record.events:
            return PlainTextResponse("nothing recorded yet: start a stream first", status_code=409)
        data = await asyncio.to_thread(conn.session.record.to_bytes)
        return Response(
            data,
            media_type="application/octet-stream",
            headers={
                "Content-Disposition": 'attachment; filename="trackstream-session.npz"',
                "X-Events": str(len(conn.session.record.events)),
                "Cache-Control": "no-store",
            },
        )

    async def page(self, request):
        return FileResponse(STATIC / "index.html")

    async def health(self, request):
        guard = getattr(request.app.state, "guard", None)  # set by guard.server_config (absent in TestClient)
        refused = {"origin": self.counter["origin_refused"], "decode_timeouts": self.decoder.timeouts}
        refused["sessions_per_client"] = self.counter.get("client_refused", 0)
        refused.update(guard.counts if guard is not None else {})
        return JSONResponse(
            {
                "sessions": len(self.live),
                "max_sessions": self.limits.max_sessions,
                "connections": len(guard.open) if guard is not None else None,
                "rss_mb": round(rss_mb(), 1),
                "refused": refused,
            }
        )

    async def socket(self, ws: WebSocket):
        limits = self.limits
        if not origin_allowed(ws.headers.get("origin"), ws.headers.get("host"), limits.allowed_origins):
            self.counter["origin_refused"] += 1
            log.warning(
                "refused a WebSocket from origin %s (--allow-origin to let it in)", ws.headers.get("origin")[:100]
            )
            await ws.close(code=1008)  # before accept: the handshake is answered 403
            return
        await ws.accept()
        if len(self.live) >= limits.max_sessions:
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
        host = ws.client.host if ws.client else None
        held = sum(1 for h in self.hosts.values() if h == host)
        if held >= limits.per_client_sessions:
            self.counter["client_refused"] = self.counter.get("client_refused", 0) + 1
            await ws.send_text(
                json.dumps(
                    {
                        "type": "busy",
                        "message": f"this address holds {held} of the demo's {limits.max_sessions} sessions "
                        f"(at most {limits.per_client_sessions} per address): close one first",
                    }
                )
            )
            await ws.close(code=1013)
            return
        self.counter["n"] += 1
        conn = Connection(
            ws,
            self.model,
            limits,
            seed=self.seed + self.counter["n"],
            frame_format=self.frame_format,
            frame_quality=self.frame_quality,
            decoder=self.decoder,
        )
        self.live[conn.token] = conn
        self.hosts[conn.token] = host
        client = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
        log.info("session %s opened from %s (%d of %d)", conn.name, client, len(self.live), limits.max_sessions)
        await ws.send_text(json.dumps(self.hello(conn)))
        await self.run(conn)

    def hello(self, conn: Connection) -> dict:
        """The first message of a session: what the page needs to know of the model and the limits."""
        model, limits = self.model, self.limits
        return {
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "height": model.height,
            "width": model.width,
            "fps": model.fps,
            "chunk_frames": model.chunk_frames,
            "scenes": model.num_scenes,
            "scene_captions": [model.scene(k)[1] for k in range(model.num_scenes)],  # protocol 3
            "track_head": model.has_track_head,
            "photo_notice": model.photo_notice,  # stream.trained_world: the page shows it after an upload
            # the Grid button's spacings: what the student's data.placement records (protocol 2)
            "grid": grid_hello(
                model.start_points, height=model.height, width=model.width, max_points=limits.max_points
            ),
            "frame_format": self.frame_format,
            "frame_quality": self.frame_quality,
            "session": conn.token,
            "device": model.device,
            "dtype": model.dtype,
            "limits": {
                "max_points": limits.max_points,
                "max_upload_bytes": limits.max_upload_bytes,
                "max_message_bytes": limits.max_message_bytes,
                "max_drag_chunks": limits.max_drag_chunks,
                "max_step_chunks": limits.max_step_chunks,
                "max_image_side": limits.max_image_side,
                "max_image_pixels": limits.max_image_pixels,
                "idle_seconds": limits.idle_seconds,
                "messages_per_second": limits.messages_per_second,
                "record_bytes": limits.record_bytes,
            },
        }

    async def run(self, conn: Connection) -> None:
        """A session's receiver, sender, generator and watchdog until the first of them ends."""
        tasks = [asyncio.create_task(t()) for t in (conn.sender, conn.generator, conn.watchdog)]
        receiver = asyncio.create_task(conn.receiver())
        try:  # the session ends when the page leaves or any of its parts ends or fails
            done, _ = await asyncio.wait([receiver, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t.exception() is not None and not isinstance(t.exception(), (WebSocketDisconnect, OSError)):
                    conn.close_reason = f"failed: {t.exception()!r}"[:200]
                    log.error("session %s failed", conn.name, exc_info=t.exception())
        finally:
            conn.closed = True
            conn.wake_sender.set()
            conn.wake_generator.set()
            for t in (receiver, *tasks):
                t.cancel()
            await asyncio.gather(receiver, *tasks, return_exceptions=True)
            self.live.pop(conn.token, None)
            self.hosts.pop(conn.token, None)
            log.info(conn.summary())


def create_app(
    model: DemoModel, limits: Limits = Limits(), *, seed: int = 0, frame_format: str = "jpeg", frame_quality: int = 85
) -> Starlette:
    """The demo's app over one loaded model; at most ``limits.max_sessions`` live connections; frames
    sent as ``frame_format`` (jpeg | webp) at ``frame_quality`` (1..100)."""
    if frame_format not in FRAME_FORMATS:
        raise ValueError(f"frame_format {frame_format!r}: choose one of {sorted(FRAME_FORMATS)} (--frame-format)")
    if not 1 <= frame_quality <= 100:
        raise ValueError(f"frame_quality {frame_quality}: must be in [1, 100] (--frame-quality)")
    server = _Server(model, limits, seed=seed, frame_format=frame_format, frame_quality=frame_quality)
    routes = [
        Route("/", server.page),
        Route("/health", server.health),
        Route("/video/{token}", server.video),
        Route("/session/{token}", server.session_file),
        Route("/scene/{k}", server.scene),
        WebSocketRoute("/ws", server.socket),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)
