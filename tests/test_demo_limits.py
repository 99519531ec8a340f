"""The demo server under inputs nobody should send: bounded loopback probes of every guard.

The real app (``stream.demo.server``) with the real uvicorn protocols (``stream.demo.guard``) on the
shipped student, in a thread of this process, with small limits so each probe ends in seconds:
half-open HTTP connections beyond the cap, slowloris headers, idle sockets holding the session slots,
a web page of another origin, a client that sends refused messages and never reads, a client that
streams and never reads, a burst of messages past the rate limit, uploads whose headers lie, and
decodes kept off the event loop while another client asks ``/health``.
"""

import asyncio
import base64
import io
import json
import logging
import os
import socket
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "demo"
MEASURED: dict = {}  # what the probes saw, written to test-artifacts/demo/limits.json (docs/results.md quotes it)
STUDENT = ROOT / "assets" / "tiny-student" / "student"


class _LogBytes(logging.Handler):
    def __init__(self):
        super().__init__()
        self.bytes = 0
        self.lines = []

    def emit(self, record):
        line = self.format(record)
        self.bytes += len(line) + 1
        self.lines.append(line)


@pytest.fixture(scope="module")
def server():
    import uvicorn

    from trackstream.stream.demo.guard import server_config
    from trackstream.stream.demo.limits import Limits
    from trackstream.stream.demo.server import create_app
    from trackstream.stream.demo.session import DemoModel

    model = DemoModel(STUDENT, num_scenes=2, device="cpu", dtype="float32")
    limits = Limits(
        max_sessions=2,
        max_connections=12,
        max_connections_per_client=8,
        header_seconds=1.0,
        idle_seconds=1.5,
        send_seconds=2.0,
        max_replies=16,
        messages_per_second=20,
        uploads_per_minute=600,
        max_image_pixels=3000 * 2000,
        send_buffer_bytes=16 * 1024,
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config, guard = server_config(create_app(model, limits), limits, host="127.0.0.1", port=port)
    logs = _LogBytes()
    for name in ("asyncio", "uvicorn.error", "trackstream.stream.demo"):
        logging.getLogger(name).addHandler(logs)
    logging.getLogger("trackstream.stream.demo").setLevel(logging.INFO)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            _health(url)
            break
        except OSError:
            assert time.time() < deadline, "the demo server did not come up"
            time.sleep(0.2)
    yield {"url": url, "port": port, "guard": guard, "limits": limits, "logs": logs, "model": model}
    srv.should_exit = True
    thread.join(timeout=20)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    MEASURED["limits"] = {k: v for k, v in vars(limits).items() if not isinstance(v, tuple)}
    (ARTIFACTS / "limits.json").write_text(json.dumps(MEASURED, indent=1))
    for name in ("asyncio", "uvicorn.error", "trackstream.stream.demo"):
        logging.getLogger(name).removeHandler(logs)


def _health(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=timeout) as r:
        return json.loads(r.read())


def _wait_sessions(url: str, n: int, seconds: float = 10.0) -> None:
    deadline = time.time() + seconds
    while _health(url)["sessions"] != n:
        assert time.time() < deadline, _health(url)
        time.sleep(0.1)


def _raw_ws(port: int, *, origin=None, rcvbuf=None):
    """A WebSocket opened by hand: the handshake's status line, and a socket this test reads only if it wants."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    )
    s.sendall((head + (f"Origin: {origin}\r\n" if origin else "") + "\r\n").encode())
    s.settimeout(5)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(1)
        if not chunk:
            break
        got += chunk
    return s, got.split(b"\r\n", 1)[0].decode()


def _frame(text: str) -> bytes:
    """One masked client text frame."""
    data, mask = text.encode(), os.urandom(4)
    n = len(data)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _closed_by_peer(s: socket.socket, seconds: float) -> bool:
    """Reads (and discards) until the server closes the socket, or ``seconds`` pass."""
    s.settimeout(0.2)
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if not s.recv(65536):
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


@pytest.mark.slow
def test_half_open_connections_are_capped_and_timed_out_and_the_log_stays_small(server):
    url, port, lim, logs = server["url"], server["port"], server["limits"], server["logs"]
    log0 = logs.bytes
    socks = []
    t0 = time.time()
    for _ in range(40):  # 40 slowloris requests from one client: headers started, never finished
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    time.sleep(0.3)
    guard, cap = server["guard"], lim.per_client_connections
    assert len(guard.open) <= cap < lim.max_connections
    # ... which cannot lock anyone else out: another client (another loopback address) is served meanwhile
    t_other = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0)) as c:
        c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        c.settimeout(5)
        assert c.recv(64).startswith(b"HTTP/1.1 200"), "a second client was locked out"
    other_ms = 1e3 * (time.perf_counter() - t_other)
    assert other_ms < 1000, f"another address's /health took {other_ms:.0f} ms during the flood"
    refused = []
    for s in socks:
        s.settimeout(0.05)
        try:
            refused.append(s.recv(200).startswith(b"HTTP/1.1 503"))
        except socket.timeout:
            refused.append(False)
    assert sum(refused) >= 40 - cap, sum(refused)  # beyond the client's cap: 503 at once
    assert all(_closed_by_peer(s, lim.header_seconds + 2) for s in socks)  # the rest: the header deadline
    waited = time.time() - t0
    assert waited < lim.header_seconds + 3
    MEASURED["slowloris_40"] = {
        "refused_at_once": sum(refused),
        "all_closed_after_s": round(waited, 2),
        "other_address_health_ms": round(other_ms, 1),
    }
    h = _health(url)  # serving again
    assert h["refused"]["header_timeouts"] >= 1 and h["refused"]["refused_per_client"] >= 40 - cap
    for s in socks:
        s.close()
    # 32 refusals and a handful of timeouts: a handful of log lines, not one per connection
    assert logs.bytes - log0 < 3000, logs.lines[-20:]
    MEASURED["slowloris_40"]["log_bytes"] = logs.bytes - log0


def test_the_server_cap_holds_across_clients_and_each_client_has_its_own():
    """ConnectionGuard alone: max_connections over every address, max_connections_per_client per address, and a
    closed connection gives its place back."""
    from trackstream.stream.demo.guard import ConnectionGuard
    from trackstream.stream.demo.limits import Limits

    class Transport:
        def __init__(self, host):
            self.host = host

        def get_extra_info(self, name):
            return (self.host, 40000) if name == "peername" else None

    guard = ConnectionGuard(Limits(max_sessions=2, max_connections=6, max_connections_per_client=3))
    a = [Transport("10.0.0.1") for _ in range(4)]
    assert [guard.admit(t) for t in a] == [True, True, True, False]  # the client's own cap
    b = [Transport(f"10.0.1.{i}") for i in range(4)]
    assert [guard.admit(t) for t in b] == [True, True, True, False]  # the server's cap (6 open)
    guard.release(a[0])
    assert guard.admit(a[3]) and guard.counts["refused_per_client"] == 1 and guard.counts["refused_connections"] == 1
    with pytest.raises(ValueError, match="max_connections_per_client"):
        Limits(max_connections=6, max_connections_per_client=7)
    assert Limits(max_connections=8).per_client_connections == 8 and Limits().per_client_connections == 16


def _ws_from(url: str, source: str):
    """A WebSocket to the demo from the loopback address ``source`` (another person)."""
    from urllib.parse import urlsplit

    from websockets.sync.client import connect

    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), source_address=(source, 0))
    return connect(url.replace("http", "ws") + "/ws", sock=sock)


@pytest.mark.slow
def test_idle_sessions_are_closed_and_free_their_slots(server):
    url = server["url"]
    a, b = _ws_from(url, "127.0.0.2"), _ws_from(url, "127.0.0.3")
    assert json.loads(a.recv(timeout=5))["type"] == "hello" and json.loads(b.recv(timeout=5))["type"] == "hello"
    with _ws_from(url, "127.0.0.4") as c:  # both slots taken
        assert json.loads(c.recv(timeout=5))["type"] == "busy"
    t0 = time.time()
    closing = json.loads(a.recv(timeout=10))
    assert closing["type"] == "closing" and "without input" in closing["message"], closing
    assert time.time() - t0 < server["limits"].idle_seconds + 2
    MEASURED["idle_closed_after_s"] = round(time.time() - t0, 2)
    _wait_sessions(url, 0)
    with _ws_from(url, "127.0.0.4") as c:  # a newcomer gets in
        assert json.loads(c.recv(timeout=5))["type"] == "hello"
    a.close()
    b.close()
    _wait_sessions(url, 0)


@pytest.mark.slow
def test_one_address_cannot_hold_every_session(server):
    """max_sessions 2, one per address (the default: max_sessions - 1): a second session from the same address is
    refused naming the cap, while another address still gets the free slot."""
    url = server["url"]
    assert server["limits"].per_client_sessions == 1
    with _ws_from(url, "127.0.0.5") as a:
        assert json.loads(a.recv(timeout=5))["type"] == "hello"
        with _ws_from(url, "127.0.0.5") as again:
            m = json.loads(again.recv(timeout=5))
            assert m["type"] == "busy" and "this address holds 1" in m["message"], m
        with _ws_from(url, "127.0.0.6") as other:
            assert json.loads(other.recv(timeout=5))["type"] == "hello"
    _wait_sessions(url, 0)
    assert _health(url)["refused"]["sessions_per_client"] >= 1


def test_a_page_of_another_origin_cannot_open_a_session(server):
    from trackstream.stream.demo.limits import origin_allowed

    port = server["port"]
    s, status = _raw_ws(port, origin="http://evil.example")
    assert " 403 " in status + " ", status
    s.close()
    s, status = _raw_ws(port, origin=f"http://127.0.0.1:{port}")  # the page's own origin
    assert " 101 " in status + " ", status
    s.close()
    assert _health(server["url"])["refused"]["origin"] >= 1
    assert origin_allowed("http://lab.example:8000", "gpu-node:8000", ("http://lab.example:8000",))
    assert origin_allowed("http://anything", "h:1", ("*",)) and origin_allowed(None, "h:1", ())
    assert not origin_allowed("http://127.0.0.1:9", "127.0.0.1:8000", ())
    _wait_sessions(server["url"], 0)


@pytest.mark.slow
def test_refused_messages_from_a_client_that_never_reads_keep_memory_bounded(server):
    url, logs = server["url"], server["logs"]
    rss0 = _health(url)["rss_mb"]
    s, status = _raw_ws(server["port"], rcvbuf=4096)
    assert " 101 " in status + " "
    junk = _frame("not json " * 400)  # 3.6 KB each, refused
    sent = 0
    t0 = time.time()
    try:
        while time.time() - t0 < 1:  # ~80,000 messages: kept, they would take hundreds of MiB
            s.sendall(junk)
            sent += 1
    except OSError:  # the server dropped it: also fine
        pass
    time.sleep(0.5)
    h = _health(url)
    assert h["rss_mb"] - rss0 < 40, (rss0, h)  # 1 s of junk at full speed
    MEASURED["junk_flood_1s"] = {"messages": sent, "rss_growth_mb": round(h["rss_mb"] - rss0, 1)}
    assert sent > 100
    s.close()
    _wait_sessions(url, 0)
    closed = [line for line in logs.lines if " closed (" in line][-1]  # the session's own summary line
    refused = int(closed.rsplit(" messages refused", 1)[0].rsplit(" ", 1)[1])
    assert refused >= min(sent, 100), closed  # every one was refused (the rate-limited ones without a reply)


@pytest.mark.slow
def test_a_client_that_streams_and_never_reads_is_dropped(server):
    url = server["url"]
    before = _health(url)["refused"]["send_timeouts"]
    s, status = _raw_ws(server["port"], rcvbuf=2048)
    assert " 101 " in status + " "
    t0 = time.time()
    s.sendall(_frame(json.dumps({"type": "start", "scene": 0})))
    deadline = t0 + 60
    while _health(url)["refused"]["send_timeouts"] == before:
        assert time.time() < deadline, _health(url)
        # it is not idle: it keeps moving a point, so only the send deadline can end it
        s.sendall(_frame(json.dumps({"type": "points", "points": [{"id": 0, "x": 10, "y": 10}]})))
        time.sleep(0.25)
    MEASURED["unread_stream_dropped_after_s"] = round(time.time() - t0, 1)
    _wait_sessions(url, 0)
    s.close()


@pytest.mark.slow
def test_a_start_waiting_for_the_network_is_not_idleness(server):
    """The network busy (another session's pass, a slow machine) for twice the idle limit after a start: the
    session waits for its stream instead of being closed as a page nobody uses."""
    from websockets.sync.client import connect

    url, lim = server["url"], server["limits"]
    with connect(url.replace("http", "ws") + "/ws") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        with server["model"].lock:  # every pass waits: the start stays being served
            ws.send(json.dumps({"type": "start", "scene": 0}))
            time.sleep(2 * lim.idle_seconds)
        kinds = []
        while "started" not in kinds:
            m = ws.recv(timeout=30)
            kinds.append(json.loads(m)["type"] if isinstance(m, str) else "frame")
        assert "closing" not in kinds, kinds
    _wait_sessions(url, 0)


@pytest.mark.slow
def test_a_burst_past_the_rate_limit_is_refused_once_a_second_and_the_session_goes_on(server):
    from websockets.sync.client import connect

    url = server["url"]
    with connect(url.replace("http", "ws") + "/ws") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        ws.send(json.dumps({"type": "start", "scene": 1}))  # playing: the idle watchdog leaves it alone
        for _ in range(200):
            ws.send(json.dumps({"type": "points", "points": [{"id": 0, "x": 5, "y": 5}]}))
        errors, kinds = [], []
        deadline = time.time() + 1
        while time.time() < deadline:
            try:
                m = ws.recv(timeout=0.2)
            except TimeoutError:
                continue
            kinds.append(json.loads(m)["type"] if isinstance(m, str) else "frame")
            if kinds[-1] == "error":
                errors.append(json.loads(m))
        # 200 at once against a burst of 40: dropped, and said once (not once per message)
        assert len(errors) == 1 and errors[0]["refused"] == "rate" and "slow down" in errors[0]["message"], errors
        n = len(kinds)
        while len(kinds) < n + 16:  # the stream goes on: more than a chunk's frames
            m = ws.recv(timeout=30)
            kinds.append(json.loads(m)["type"] if isinstance(m, str) else "frame")
        assert {"started", "chunk", "frame"} <= set(kinds) and "error" not in kinds[n:]
    _wait_sessions(url, 0)


def _png(w: int, h: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_uploads_decode_off_the_event_loop_and_a_lying_header_is_refused(server):
    from websockets.sync.client import connect

    url = server["url"]
    big = "data:image/png;base64," + base64.b64encode(_png(3000, 2000)).decode()  # at the pixel cap
    over = "data:image/png;base64," + base64.b64encode(_png(3000, 2001)).decode()
    assert len(big) < 100_000
    with connect(url.replace("http", "ws") + "/ws", max_size=None) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        ws.send(json.dumps({"type": "start", "image": over}))
        m = json.loads(ws.recv(timeout=5))
        assert m["type"] == "error" and "Limits.max_image_pixels" in m["message"], m
        stop, health = threading.Event(), []

        def probe():  # another person asking the server something while the uploads decode
            while not stop.is_set():
                t0 = time.perf_counter()
                _health(url)
                health.append(time.perf_counter() - t0)
                time.sleep(0.02)

        t = threading.Thread(target=probe)
        t.start()
        t0 = time.perf_counter()
        for _ in range(4):
            ws.send(json.dumps({"type": "start", "image": big}))
        started = answered = 0
        while answered < 4 and time.perf_counter() - t0 < 60:
            m = ws.recv(timeout=60)
            if isinstance(m, str):
                m = json.loads(m)
                started += m["type"] == "started"
                answered += m["type"] in ("started", "error")
                # a busy decoder or the per-session upload bucket (burst 3) may refuse one: both say so
                assert m["type"] != "error" or "decoding" in m["message"] or "uploads a minute" in m["message"], m
        stop.set()
        t.join()
    assert started >= 1 and len(health) > 5
    assert max(health) < 1.0, sorted(health)[-5:]  # the loop never stalled behind a decode
    MEASURED["uploads_6mp_x4"] = {
        "started": started,
        "seconds": round(time.perf_counter() - t0, 2),
        "health_ms_median": round(1e3 * float(np.median(health)), 1),
        "health_ms_max": round(1e3 * max(health), 1),
    }
    _wait_sessions(url, 0)


@pytest.mark.slow
def test_decode_worker_deadline_and_queue():
    from trackstream.stream.demo.decode import DecodeWorker, ProtocolError
    from trackstream.stream.demo.limits import Limits

    worker = DecodeWorker(Limits(decode_seconds=0.2, decode_queue=2))

    async def main():
        t0 = time.perf_counter()
        with pytest.raises(ProtocolError, match="Limits.decode_seconds"):
            await worker.run(time.sleep, 0.6)
        assert time.perf_counter() - t0 < 0.4  # refused at the deadline, not when the decode ends
        assert worker.in_flight == 1  # ... which still counts until it does
        a = asyncio.create_task(worker.run(time.sleep, 0.1))
        await asyncio.sleep(0.01)
        with pytest.raises(ProtocolError, match="Limits.decode_queue"):
            await worker.run(time.sleep, 0.1)
        with pytest.raises(ProtocolError):
            await a  # waited behind the 0.6 s one: past its deadline too
        await asyncio.sleep(0.6)
        assert worker.in_flight == 0 and worker.timeouts == 2
        assert await worker.run(lambda: 7) == 7

    asyncio.run(main())


def test_a_jpeg_that_says_64x64_to_one_reader_and_12000x12000_to_the_decoder_is_refused_undecoded(monkeypatch):
    """Two SOF headers: a walk that stops at the first reads 64x64, Pillow's decoder keeps the last
    (12000x12000, 432 MB of pixels). The size that counts is the decoder's, and they must agree."""
    import cv2
    from PIL import Image

    from trackstream.stream.demo.decode import ProtocolError, decode_image
    from trackstream.stream.demo.media import image_size

    ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))
    b = buf.tobytes()
    pos = 2
    while b[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + int.from_bytes(b[pos + 2 : pos + 4], "big")
    end = pos + 2 + int.from_bytes(b[pos + 2 : pos + 4], "big")

    def sof(side):
        s = bytearray(b[pos:end])
        s[5:7], s[7:9] = side.to_bytes(2, "big"), side.to_bytes(2, "big")
        return bytes(s)

    crafted = b[:pos] + sof(64) + sof(12000) + b[end:]
    with pytest.warns(Image.DecompressionBombWarning):  # Pillow's own bomb check only warns at this size
        assert image_size(crafted) == (64, 64) and Image.open(io.BytesIO(crafted)).size == (12000, 12000)

    def never(self, *a, **k):
        raise AssertionError("decoded a file whose readers disagree")

    monkeypatch.setattr(Image.Image, "load", never)
    monkeypatch.setattr(Image.Image, "convert", never)
    t0 = time.perf_counter()
    with pytest.raises(ProtocolError, match="its header says 64x64 but the decoder reads 12000x12000"):
        decode_image(crafted, height=64, width=64, max_side=4096)
    assert time.perf_counter() - t0 < 0.05


@pytest.mark.slow
def test_replies_a_client_leaves_unread_are_bounded_and_then_it_is_dropped():
    from trackstream.stream.demo.connection import Connection
    from trackstream.stream.demo.limits import Limits
    from trackstream.stream.demo.session import DemoModel

    model = DemoModel(STUDENT, num_scenes=1, device="cpu", dtype="float32")
    conn = Connection(None, model, Limits(max_replies=16), seed=0)  # no sender runs: nothing is ever read
    for i in range(40):
        conn.send({"type": "error", "message": f"refused {i}"})
    assert conn.replies_queued == 16 and len(conn.outbox) == 0 and conn.closed  # dropped, queue freed
    assert conn.close_reason == "16 replies unread (Limits.max_replies)"
