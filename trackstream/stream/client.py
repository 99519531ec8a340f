"""Drive a running stream server (``trackstream demo``) from Python, chunk by chunk: for a program that controls a
stream (a robot policy, a game loop, an evaluation script) instead of a person in the page.

    from trackstream.stream.client import StreamClient

    with StreamClient("ws://127.0.0.1:8000/ws") as stream:
        first = stream.start(scene=0, seed=1)         # or image=<RGB uint8 array or a file>, prompt="..."
        stream.points({0: (20.0, 30.0), 1: (40.0, 30.0)}, pinned={1})
        for t in range(3):
            stream.points({0: (20.0 + 2 * t, 30.0), 1: (40.0, 30.0)}, pinned={1})
            chunk = stream.step()                     # Chunk(index, frames uint8 [n, H, W, 3] RGB, latency_ms)
        stream.prompt("the ball turns blue")          # from the next chunk on
        stream.camera("pan", amount=1.0, seconds=2.0)
        stream.save("stream.mp4")                     # the server's recording of this stream, as an mp4
        stream.save_session("stream.npz")             # the stream as data: trackstream generate --session replays it

The stream is paused between steps (``start`` asks the server for a paused start: protocol 3's ``paused`` and
``step``, ``stream.demo.protocol``), so what a program sends before ``step`` steers exactly the chunks that step
makes. Points are frame pixels of the stream's size (``width`` x ``height``, read from the server's hello); a
pinned point is held still, a point left out is let go. What the server refuses is raised here, with its own
words: ``StreamRefused`` (a message it refused: a point outside the frame, more points than ``max_points``, too
many messages a second), ``ServerBusy`` (no session free: its ``max_sessions`` or per-address cap),
``SessionClosed`` (the server ended the session, e.g. idle for ``idle_seconds``). Every wait has ``timeout``
seconds (``TimeoutError`` past it).
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Union
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from trackstream.stream.demo.media import unpack_frame

__all__ = ["StreamClient", "Chunk", "StreamError", "StreamRefused", "ServerBusy", "SessionClosed"]

MIN_PROTOCOL = 3  # paused start and step


class StreamError(RuntimeError):
    """What the server said went wrong (``message``: its words)."""


class StreamRefused(StreamError):
    """A message the server refused; the session goes on. ``refused``: the message's type."""

    def __init__(self, message: str, refused: str = ""):
        super().__init__(message)
        self.refused = refused


class ServerBusy(StreamError):
    """No session free on the server (its ``max_sessions``, or its per-address cap)."""


class SessionClosed(StreamError):
    """The server ended the session."""


@dataclass(frozen=True)
class Chunk:
    index: int  # the chunk's index in the stream (0: the first)
    frames: np.ndarray  # uint8 [n, H, W, 3] RGB, the chunk's frames as the server sent them (JPEG / WebP decoded)
    first_frame: int  # the stream's frame number of frames[0]
    latency_ms: float  # the server's compute + wait for the model


class StreamClient:
    """One session on a stream server (see the module docstring)."""

    def __init__(self, url: str = "ws://127.0.0.1:8000/ws", *, timeout: float = 120.0):
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        self.url, self.timeout = url, timeout
        self._closed_error = ConnectionClosed
        self._ws = connect(url, max_size=2**24, open_timeout=timeout)
        hello = self._read_json()
        if hello.get("type") == "busy":
            self._ws.close()
            raise ServerBusy(hello.get("message", "the server is busy"))
        if hello.get("type") != "hello":
            raise StreamError(f"{url} did not greet as a stream server (first message: {hello.get('type')!r})")
        if int(hello.get("protocol", 1)) < MIN_PROTOCOL:
            self._ws.close()
            raise StreamError(
                f"{url} speaks protocol {hello.get('protocol', 1)}; this client needs {MIN_PROTOCOL} (paused start "
                "and step): update the server"
            )
        self.hello = hello
        self.width, self.height, self.fps = int(hello["width"]), int(hello["height"]), int(hello["fps"])
        self.limits = dict(hello.get("limits", {}))
        self._frames: dict[int, tuple[int, np.ndarray]] = {}  # frame number -> (chunk, RGB)

    # ------------------------------------------------------------------ the session

    def start(
        self,
        *,
        scene: Optional[int] = None,
        image: Union[np.ndarray, str, os.PathLike, None] = None,
        prompt: Optional[str] = None,
        seed: Optional[int] = None,
    ) -> Chunk:
        """A new stream from synthetic scene ``scene`` or from ``image`` (RGB uint8 [H, W, 3], or an image file),
        paused after its first chunk, which is returned. ``seed``: the stream's noise and track IDs (the same seed
        and the same calls make the same frames; default: the session's, ``self.seed`` after the call)."""
        if (scene is None) == (image is None):
            raise ValueError("start: give exactly one of scene= or image=")
        msg: dict = {"type": "start", "paused": True}
        if scene is not None:
            msg["scene"] = int(scene)
        else:
            msg["image"] = _data_url(image)
        if prompt is not None:
            msg["prompt"] = prompt
        if seed is not None:
            msg["seed"] = int(seed)
        self._frames.clear()
        self._send(msg)
        self.seed = self._wait_for("started").get("seed")
        return self._read_chunk()

    def points(self, points: Mapping[int, Iterable[float]], *, pinned: Iterable[int] = ()) -> None:
        """Where every live point is now: {id: (x, y)} in frame pixels (ids 0 .. ``max_points`` - 1); the ids in
        ``pinned`` are held still. A point left out is let go. Takes effect from the next chunk made."""
        held = set(pinned)
        msg = [
            {"id": int(i), "x": float(xy[0]), "y": float(xy[1]), "pinned": int(i) in held}
            for i, xy in ((i, tuple(p)) for i, p in points.items())
        ]
        self._send({"type": "points", "points": msg})

    def step(self, chunks: int = 1) -> Union[Chunk, list[Chunk]]:
        """The next ``chunks`` chunks of the paused stream (one: a Chunk; more: a list)."""
        self._send({"type": "step", "chunks": int(chunks)})
        made = [self._read_chunk() for _ in range(int(chunks))]
        self._wait_for("stepped")
        return made[0] if chunks == 1 else made

    def prompt(self, prompt: str, *, sink: str = "recache") -> dict:
        """The next chunks under ``prompt`` (``sink``: "recache" or "keep"); the server's reply."""
        self._send({"type": "prompt", "prompt": prompt, "sink": sink})
        return self._wait_for("prompt")

    def camera(self, path: str, *, amount: float = 1.0, seconds: float = 3.0) -> dict:
        """A camera move from the frame on screen (orbit, pan, zoom, dolly); the server's reply holds the grid's
        positions (``points``) at ``times``: send them with ``points`` as the stream steps."""
        self._send({"type": "camera", "path": path, "amount": float(amount), "seconds": float(seconds)})
        return self._wait_for("camera")

    def drag(self, **instruction) -> tuple[list[Chunk], dict]:
        """A DragStream instruction (the fields of the protocol's ``drag``: mode, kind, method, mask, path or
        center and degrees, chunks, iterations): the chunks it made (an edit replaces frames) and the reply."""
        self._send({"type": "drag", **instruction})
        chunks, reply = [], None
        while reply is None:
            msg = self._next()
            if isinstance(msg, dict) and msg["type"] == "chunk":
                chunks.append(self._chunk_of(msg))
            elif isinstance(msg, dict) and msg["type"] == "dragged":
                reply = msg
        return chunks, reply

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """The server's recording of this stream (``GET /video/<session>``) written to ``path`` (an mp4)."""
        return self._download("video", path)

    def save_session(self, path: Union[str, os.PathLike]) -> Path:
        """This stream as data (``GET /session/<session>``, ``stream.demo.record``) written to ``path``:
        ``trackstream generate --session FILE`` streams it again to the same frames."""
        return self._download("session", path)

    def _download(self, what: str, path: Union[str, os.PathLike]) -> Path:
        parts = urlsplit(self.url)
        scheme = "https" if parts.scheme == "wss" else "http"
        url = urlunsplit((scheme, parts.netloc, f"/{what}/{self.hello['session']}", "", ""))
        with urllib.request.urlopen(url, timeout=self.timeout) as reply:
            data = reply.read()
        path = Path(path)
        path.write_bytes(data)
        return path

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> "StreamClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    def _send(self, msg: dict) -> None:
        try:
            self._ws.send(json.dumps(msg))
        except self._closed_error as err:
            raise SessionClosed(f"the server closed the session ({err})") from None

    def _next(self) -> Union[dict, None]:
        """The next message: a JSON reply (refusals and closings raised), or None after a frame (kept)."""
        try:
            raw = self._ws.recv(timeout=self.timeout)
        except TimeoutError:
            raise TimeoutError(f"no message from {self.url} in {self.timeout:g} s") from None
        except self._closed_error as err:
            raise SessionClosed(f"the server closed the session ({err})") from None
        if isinstance(raw, bytes):
            frame = unpack_frame(raw)
            rgb = cv2.imdecode(np.frombuffer(frame["image"], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
            self._frames[frame["n"]] = (frame["chunk"], np.ascontiguousarray(rgb))
            return None
        msg = json.loads(raw)
        kind = msg.get("type")
        if kind == "error":
            raise StreamRefused(msg.get("message", "refused"), msg.get("refused", ""))
        if kind == "busy":
            raise ServerBusy(msg.get("message", "the server is busy"))
        if kind == "closing":
            raise SessionClosed(msg.get("message", "the server closed the session"))
        return msg

    def _read_json(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            raw = self._ws.recv(timeout=self.timeout)
            if isinstance(raw, str):
                return json.loads(raw)
        raise TimeoutError(f"no message from {self.url} in {self.timeout:g} s")

    def _wait_for(self, kind: str) -> dict:
        while True:
            msg = self._next()
            if isinstance(msg, dict) and msg["type"] == kind:
                return msg

    def _read_chunk(self) -> Chunk:
        while True:
            msg = self._next()
            if isinstance(msg, dict) and msg["type"] == "chunk":
                return self._chunk_of(msg)

    def _chunk_of(self, msg: dict) -> Chunk:
        """The frames of chunk ``msg["index"]`` (sent before its ``chunk`` message), in frame order."""
        numbers = sorted(n for n, (c, _) in self._frames.items() if c == msg["index"])
        frames = np.stack([self._frames.pop(n)[1] for n in numbers]) if numbers else np.zeros((0, 0, 0, 3), np.uint8)
        return Chunk(
            index=int(msg["index"]),
            frames=frames,
            first_frame=numbers[0] if numbers else -1,
            latency_ms=float(msg.get("latency_ms", 0.0)),
        )


def _data_url(image: Union[np.ndarray, str, os.PathLike]) -> str:
    """An RGB uint8 array or an image file as a PNG data URL (what ``start`` uploads)."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be RGB uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
        ok, png = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]))
        if not ok:
            raise ValueError("image could not be encoded as PNG")
        data, mime = png.tobytes(), "image/png"
    else:
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"image {str(path)!r} does not exist")
        data = path.read_bytes()
        mime = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}.get(
            path.suffix.lower(), "image/png"
        )
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
