"""One person's connection to the demo: receiver, generator, sender and watchdog, each bounded.

* receiver: every message is rate-limited (``Limits.messages_per_second``; uploads and drags have
  their own per-minute budgets), read cheaply on the event loop (``protocol.read_message``), and an
  image in it (an upload, a brushed mask) is decoded in the server's one decode worker with a deadline
  (``DecodeWorker``): the event loop never decodes a pixel. A refused message gets an ``error`` reply
  and the session goes on;
* generator: one chunk at a time in a worker thread with the model to itself, paced to stay
  ``Limits.lead_seconds`` ahead of the person's playback clock; drags and restarts between chunks;
* sender: frames in a bounded queue (a slow reader loses the oldest, counted in ``dropped``) and
  JSON replies in another (``Limits.max_replies``: a client that lets them pile up is dropped);
  a send blocked ``Limits.send_seconds`` drops the connection too (``stream.demo.guard``);
* watchdog: no message, no stream playing and no request waiting for ``Limits.idle_seconds``, or no message at all for
  ``Limits.quiet_seconds``: the page is told why (``closing``) and the session closes, freeing its slot.

Each session writes a line when it opens, starts a stream, drags and closes (with its counts).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque
from typing import Optional

from starlette.websockets import WebSocket

from trackstream.stream.demo.decode import DecodeWorker, ProtocolError
from trackstream.stream.demo.guard import ABORT
from trackstream.stream.demo.limits import Limits, RateLimit, rss_mb
from trackstream.stream.demo.media import Recording, encode_frame, pack_frame
from trackstream.stream.demo.protocol import (
    Camera,
    Control,
    Drag,
    Points,
    Prompt,
    Start,
    Step,
    carries_image,
    parse_message,
    read_message,
)
from trackstream.stream.demo.session import DemoModel, Emitted, Session

__all__ = ["Connection"]

log = logging.getLogger("trackstream.stream.demo")


class _Frame:
    """One frame waiting in the outbox: its binary message."""

    __slots__ = ("n", "message")

    def __init__(self, n: int, message: bytes):
        self.n, self.message = n, message


class Connection:
    def __init__(
        self,
        ws: Optional[WebSocket],
        model: DemoModel,
        limits: Limits,
        seed: int,
        *,
        frame_format: str = "jpeg",
        frame_quality: int = 85,
        decoder: Optional[DecodeWorker] = None,
    ):
        self.ws, self.model, self.limits = ws, model, limits
        self.frame_format, self.frame_quality = frame_format, frame_quality
        self.decoder = decoder or DecodeWorker(limits)
        self.session = Session(model, limits, seed=seed)
        self.token = secrets.token_urlsafe(16)  # names this session's recording (GET /video/<token>)
        self.name = self.token[:6]  # in the log
        self.recording = Recording(limits.record_bytes)
        self.outbox: deque = deque()  # frames (bounded: dropped counts) and control replies (bounded: max_replies)
        self.frames_queued = self.replies_queued = 0
        self.dropped = self.refused = self.chunks = 0
        self.wake_sender = asyncio.Event()
        self.wake_generator = asyncio.Event()
        self.pending: deque = deque()  # Start / Drag / restart, run by the generator between chunks
        self.serving = False  # the generator is running one of them
        self.paused = False
        self.closed = False
        self.close_reason = "the page left"
        self.play_t0: Optional[float] = None  # the client's playback clock, in frames since play_t0
        self.play_frames = 0
        self.opened = self.last_message = time.monotonic()
        self.rate = RateLimit(limits.messages_per_second, 2 * limits.messages_per_second)
        self.uploads = RateLimit(limits.uploads_per_minute / 60, 3)
        self.drags = RateLimit(limits.drags_per_minute / 60, 5)
        self._slow_down_said = 0.0

    # -- out ---------------------------------------------------------------------------------------

    def send(self, msg: dict) -> None:
        if self.closed:
            return
        if self.replies_queued >= self.limits.max_replies:  # it sends and never reads: memory stays bounded
            self.abort(f"{self.replies_queued} replies unread (Limits.max_replies)")
            return
        self.outbox.append(msg)
        self.replies_queued += 1
        self.wake_sender.set()

    def abort(self, reason: str) -> None:
        """Drop the connection now (unsent bytes and all) and end the session."""
        if self.closed:
            return
        self.closed, self.close_reason = True, reason
        self.outbox.clear()
        self.wake_sender.set()
        self.wake_generator.set()
        drop = self.ws.scope.get("extensions", {}).get(ABORT) if self.ws is not None else None
        if drop is not None:
            drop()

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
            while self.outbox and not self.closed:
                msg = self.outbox.popleft()
                if isinstance(msg, _Frame):
                    self.frames_queued -= 1
                    await self.ws.send_bytes(msg.message)
                else:
                    self.replies_queued -= 1
                    await self.ws.send_text(json.dumps(msg))

    # -- in ----------------------------------------------------------------------------------------

    def _refuse(self, text: str, message: str) -> None:
        self.refused += 1
        self.send({"type": "error", "message": message, "refused": _kind(text)})

    async def receiver(self) -> None:
        m, lim = self.model, self.limits
        kw = dict(height=m.height, width=m.width, limits=lim, num_scenes=m.num_scenes)
        while not self.closed:
            raw = await self.ws.receive()
            if raw["type"] == "websocket.disconnect":
                return
            self.last_message = time.monotonic()
            text = raw.get("text") if raw.get("text") is not None else raw.get("bytes")
            if not self.rate.take():  # too fast: dropped, and told so at most once a second
                self.refused += 1
                if self.last_message - self._slow_down_said > 1.0:
                    self._slow_down_said = self.last_message
                    self.send(
                        {
                            "type": "error",
                            "message": f"slow down: at most {lim.messages_per_second:g} messages a second "
                            "(Limits.messages_per_second); some were dropped",
                            "refused": "rate",
                        }
                    )
                continue
            try:
                obj = read_message(text, lim)
                if obj["type"] == "start" and "image" in obj and not self.uploads.take():
                    raise ProtocolError(f"at most {lim.uploads_per_minute:g} uploads a minute: wait a little")
                if obj["type"] in ("drag", "camera", "prompt") and not self.drags.take():
                    raise ProtocolError(
                        f"at most {lim.drags_per_minute:g} drags, camera moves and prompt changes a minute: wait a little"
                    )
                if carries_image(obj):  # decoded in the decode worker, never on the event loop
                    msg = await self.decoder.run(parse_message, obj, **kw)
                else:
                    msg = parse_message(obj, **kw)
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
                self._refuse(text, str(e))
            # messages that arrived together are all ready at once: let the sender hand each reply to the
            # socket, so replies queue here only when the client is not reading them
            await asyncio.sleep(0)

    async def watchdog(self) -> None:
        """Frees the slot of a page nobody uses (see the module docstring)."""
        lim = self.limits
        while not self.closed:
            await asyncio.sleep(min(1.0, lim.idle_seconds / 4, lim.quiet_seconds / 4))
            quiet = time.monotonic() - self.last_message
            playing = self.session.started and not self.paused
            # a start or drag the page waits for (queued behind other sessions, or being built) is not idleness
            asked = self.serving or bool(self.pending)
            if quiet > lim.quiet_seconds or (quiet > lim.idle_seconds and not (playing or asked)):
                what = lim.quiet_seconds if quiet > lim.quiet_seconds else lim.idle_seconds
                reason = f"{_duration(what)} without input" + ("" if playing else " and nothing playing")
                self.send({"type": "closing", "message": f"closed after {reason}: reload to start again"})
                await asyncio.sleep(0.25)  # the sender gets the message out if the page reads at all
                self.close_reason = reason
                try:
                    await asyncio.wait_for(self.ws.close(code=4000, reason="idle"), 2.0)
                except Exception:  # noqa: BLE001 - not read or already gone: dropped instead
                    pass
                self.abort(reason)
                return

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
                self.serving = True
                try:
                    await self._handle(self.pending.popleft())
                finally:
                    self.serving = False
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
                log.exception("session %s: chunk failed", self.name)
                self.paused = True
                self.send({"type": "error", "message": f"the stream stopped: {e}", "refused": "chunk"})
                continue
            await self._emit(em, waited)

    async def _emit(self, em: Emitted, waited: float) -> None:
        images = await asyncio.to_thread(self.encode, em)
        if not self.paused:
            self.play_frames += len(em.frames)
        self.chunks += 1
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
                self.paused, self.play_t0 = isinstance(msg, Start) and msg.paused, None
                self.recording.clear()  # a new stream: "save video" saves this one
                what = "restart" if isinstance(msg, Control) else "upload" if msg.image is not None else "scene"
                log.info("session %s: stream started (%s)", self.name, what)
                started = {"type": "started", "prompt": self.session.prompt, "fps": self.model.fps}
                self.send({**started, "paused": self.paused, "seed": self.session.seed})
                await self._emit(em, waited)
            elif isinstance(msg, Step):
                if not self.session.started:
                    raise ProtocolError("step: nothing to step, start a stream first")
                if not self.paused:
                    raise ProtocolError('step needs a paused stream: send pause first, or start with "paused": true')
                made = []
                for _ in range(msg.chunks):
                    em, waited = await self._compute(self.session.next_chunk)
                    await self._emit(em, waited)
                    made.append(em.index)
                self.send({"type": "stepped", "chunks": made})
            elif isinstance(msg, Prompt):
                t0 = time.perf_counter()
                passes, _ = await self._compute(self.session.switch_prompt, msg)
                ms = round((time.perf_counter() - t0) * 1e3, 1)
                log.info(
                    "session %s: prompt switched at chunk %d (%d passes, %.0f ms)",
                    self.name,
                    self.session.chunk,
                    passes,
                    ms,
                )
                self.send(
                    {"type": "prompt", "prompt": msg.prompt, "chunk": self.session.chunk, "passes": passes, "ms": ms}
                )
            elif isinstance(msg, Camera):
                (tracks, vis), _ = await self._compute(self.session.camera, msg)
                step = max(1, len(tracks) // 40)  # at most ~40 keyframes for the page to draw the points along
                keep = list(range(0, len(tracks), step)) + ([len(tracks) - 1] if (len(tracks) - 1) % step else [])
                log.info("session %s: camera %s %+g over %gs", self.name, msg.path, msg.amount, msg.seconds)
                self.send(
                    {
                        "type": "camera",
                        "path": msg.path,
                        "seconds": msg.seconds,
                        "times": [round(k / self.model.fps, 4) for k in keep],
                        # per point (slot n), its [x, y] at each kept frame, null where out of view
                        "points": [
                            [[round(float(v), 2) for v in tracks[k, n]] if vis[k, n] else None for k in keep]
                            for n in range(tracks.shape[1])
                        ],
                    }
                )
            elif isinstance(msg, Drag):
                (ems, result), waited = await self._compute(self.session.drag, msg)
                for em in ems:
                    await self._emit(em, waited)
                    waited = 0.0
                log.info(
                    "session %s: %s %s drag (%s) in %.2fs", self.name, msg.mode, msg.kind, msg.method, result.seconds
                )
                final = [[round(float(v), 5) for v in lg.losses[-1]] for lg in result.logs if lg.losses]
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
            self._refuse(json.dumps({"type": type(msg).__name__.lower()}), str(e))

    def summary(self) -> str:
        return (
            f"session {self.name} closed ({self.close_reason}) after {time.monotonic() - self.opened:.0f}s: "
            f"{self.chunks} chunks, {self.recording.nbytes / 2**20:.1f} MiB recorded, {self.dropped} frames "
            f"dropped, {self.refused} messages refused"
        )


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 120 else f"{seconds:g} s"


def _kind(text) -> str:
    try:
        return str(json.loads(text).get("type"))[:32]
    except Exception:  # noqa: BLE001 - whatever it was, it was refused
        return "unreadable"
