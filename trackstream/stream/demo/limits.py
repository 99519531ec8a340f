"""What one demo server accepts, and the small policies that enforce it per client.

``Limits`` is every bound in one place (``docs/demo.md`` lists them with what happens at each):
sessions, message and upload sizes, decoded pixels and decode time, queued frames and replies, the
recording, idle / quiet / send / header timeouts, open connections, per-client message rates, and the
web origins allowed to open a session. ``RateLimit`` is a token bucket; ``origin_allowed`` is the
WebSocket handshake's Origin check; ``ThrottledLog`` keeps a flood of one log line from filling a disk.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

__all__ = ["Limits", "RateLimit", "origin_allowed", "ThrottledLog", "rss_mb"]


def rss_mb() -> float:
    """Resident memory of this process (MiB): what the memory bounds are measured in."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: the peak instead
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass(frozen=True)
class Limits:
    """What one server accepts; the defaults fit a small CPU (two cores) and the tiny student."""

    max_sessions: int = 2
    # live sessions from one client address; None: max_sessions - 1 (at least 1), so one address never holds every
    # session and locks the others out
    max_sessions_per_client: Optional[int] = None
    max_message_bytes: int = 64 * 1024  # any message but an upload
    max_upload_bytes: int = 2 * 2**20  # an uploaded first frame (the data URL's size)
    max_image_side: int = 4096  # an upload's width and height, read from its header before decoding
    max_image_pixels: int = 4096 * 3072  # width x height (a 12 MP phone photo fits)
    decode_seconds: float = 5.0  # an upload not decoded by then is refused (the decode worker is shared)
    decode_queue: int = 2  # uploads waiting for the server's one decode worker; more are refused
    max_points: int = 64
    max_path_points: int = 256
    max_drag_chunks: int = 4
    max_step_chunks: int = 8  # chunks one step message asks of a paused stream
    max_iterations: int = 8
    queue_frames: int = 48  # frames waiting for a slow client; the oldest are dropped beyond it
    max_replies: int = 64  # JSON replies waiting for a client that does not read: closed beyond it
    send_seconds: float = 30.0  # a client that takes nothing for this long is closed
    send_buffer_bytes: int = 256 * 1024  # kernel send buffer per connection: how much an unread client holds
    lead_seconds: float = 1.0  # how far generation runs ahead of the client's playback clock
    record_bytes: int = 64 * 2**20  # encoded frames kept per session for "save video" (~1600 832x480 JPEGs)
    idle_seconds: float = 120.0  # no message and no stream playing (never started, or paused): closed
    quiet_seconds: float = 1800.0  # no message at all, even while streaming: closed
    header_seconds: float = 10.0  # an HTTP request whose headers are not complete by then: closed
    max_connections: int = 64  # open TCP connections (pages, WebSockets, half-open): more are closed at once
    # open connections from one client address: one client holding half-open connections cannot fill the
    # server's cap and lock everyone else out (as nginx's limit_conn per address); None: min(16, max_connections)
    max_connections_per_client: Optional[int] = None
    messages_per_second: float = 60.0  # per session, burst of 2 s' worth; beyond it refused ("slow down")
    uploads_per_minute: float = 12.0  # start messages with an image, per session (burst 3)
    drags_per_minute: float = 30.0  # DragStream instructions, per session (burst 5)
    allowed_origins: tuple = ()  # web origins besides the page's own that may open a session; "*" = any

    def __post_init__(self):
        ints = ("max_sessions", "max_points", "queue_frames", "record_bytes", "max_replies", "max_connections")
        for name in ints + ("max_image_side", "max_image_pixels", "decode_queue", "send_buffer_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} = {getattr(self, name)}: must be >= 1")
        for name in ("decode_seconds", "send_seconds", "idle_seconds", "quiet_seconds", "header_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} = {getattr(self, name)}: must be > 0 seconds")
        for name in ("messages_per_second", "uploads_per_minute", "drags_per_minute"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} = {getattr(self, name)}: must be > 0")
        if self.max_connections < self.max_sessions + 2:
            raise ValueError(
                f"Limits.max_connections = {self.max_connections}: needs room for every session and a page "
                f"load (at least max_sessions + 2 = {self.max_sessions + 2})"
            )
        if (
            self.max_connections_per_client is not None
            and not 2 <= self.max_connections_per_client <= self.max_connections
        ):
            raise ValueError(
                f"Limits.max_connections_per_client = {self.max_connections_per_client}: between 2 (a page and its "
                f"session) and max_connections = {self.max_connections}"
            )
        for o in self.allowed_origins:
            if o != "*" and not (urlsplit(o).scheme in ("http", "https") and urlsplit(o).netloc):
                raise ValueError(f"allowed origin {o!r}: give scheme://host[:port], e.g. http://localhost:8000, or *")

    @property
    def per_client_sessions(self) -> int:
        return self.max_sessions_per_client or max(1, self.max_sessions - 1)

    @property
    def per_client_connections(self) -> int:
        return self.max_connections_per_client or min(16, self.max_connections)

    @property
    def hard_message_bytes(self) -> int:
        """Above this the WebSocket layer closes the connection (memory bound); between the soft limits
        and this, a message is refused with an error and the session stays."""
        return 4 * max(self.max_message_bytes, self.max_upload_bytes)


class RateLimit:
    """A token bucket: ``rate`` per second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic):
        assert rate > 0 and burst >= 1
        self.rate, self.burst, self.clock = float(rate), float(burst), clock
        self.tokens, self.t = float(burst), clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def origin_allowed(origin: Optional[str], host: Optional[str], allowed: tuple) -> bool:
    """Whether a WebSocket handshake may open a session. Browsers always send ``Origin``: a page on
    another site (which the person may visit while the demo runs) must not stream, drag or upload
    through their browser. Same origin (Origin's host:port equals the Host header) and the listed
    origins pass; no Origin at all is a non-browser client (a script could send any header anyway)."""
    if origin is None:
        return True
    if "*" in allowed or origin.rstrip("/") in {a.rstrip("/") for a in allowed}:
        return True
    return bool(host) and urlsplit(origin).netloc.lower() == host.lower()


class ThrottledLog(logging.Filter):
    """At most ``per_window`` records of one (logger, message template) per ``window`` seconds; the
    next one after a quiet spell says how many were held back. A flood of one line (a refused
    connection per millisecond, the loop's "out of file descriptors") then costs a few lines a minute."""

    def __init__(self, per_window: int = 5, window: float = 60.0, clock=time.monotonic):
        super().__init__()
        self.per_window, self.window, self.clock = per_window, window, clock
        self.seen: dict = {}  # key -> [window start, count, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:200])
        now = self.clock()
        entry = self.seen.get(key)
        if entry is None or now - entry[0] > self.window:
            held = entry[2] if entry else 0
            self.seen[key] = [now, 1, 0]
            if len(self.seen) > 1000:  # bounded: forget the oldest templates
                for k in sorted(self.seen, key=lambda k: self.seen[k][0])[:500]:
                    del self.seen[k]
            if held:
                record.msg = f"{record.msg} [{held} more like this in the last {self.window:.0f} s held back]"
            return True
        entry[1] += 1
        if entry[1] <= self.per_window:
            return True
        entry[2] += 1
        return False

    def install(self, *names: str) -> "ThrottledLog":
        """Attach to these loggers' handlers' path (as a filter on each logger)."""
        for name in names:
            logging.getLogger(name).addFilter(self)
        return self
