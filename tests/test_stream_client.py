"""A stream driven from Python (``stream.client.StreamClient``) against the real server (``stream.demo.server`` with
uvicorn, the shipped student) on 127.0.0.1: a paused start, three steps with tracks sent before each, a prompt
change, the recording saved, the same steps again at the server's seed giving the same frames, and the server's
refusals and limits raised as exceptions in its own words."""

import socket
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from trackstream.stream.client import ServerBusy, StreamClient, StreamRefused

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "assets" / "tiny-student" / "student"


@pytest.fixture(scope="module")
def server():
    import uvicorn

    from trackstream.stream.demo.guard import server_config
    from trackstream.stream.demo.limits import Limits
    from trackstream.stream.demo.server import create_app
    from trackstream.stream.demo.session import DemoModel

    model = DemoModel(STUDENT, num_scenes=2, device="cpu", dtype="float32")
    limits = Limits(max_sessions=1, max_points=16, max_step_chunks=3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config, _ = server_config(create_app(model, limits, seed=7), limits, host="127.0.0.1", port=port)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
            break
        except OSError:
            assert time.time() < deadline, "the demo server did not come up"
            time.sleep(0.2)
    yield f"ws://127.0.0.1:{port}/ws", model
    srv.should_exit = True
    thread.join(timeout=20)


def _wait_free(url: str, seconds: float = 10.0) -> None:
    """The server frees a session slot once it sees the socket close."""
    health = url.replace("ws://", "http://").replace("/ws", "/health")
    import json

    deadline = time.time() + seconds
    while json.loads(urllib.request.urlopen(health, timeout=5).read())["sessions"]:
        assert time.time() < deadline
        time.sleep(0.1)


def _drive(url: str, out: Path | None = None, session: Path | None = None) -> list[np.ndarray]:
    """Scene 0, paused; two points (one pinned) moved right 3 px a chunk for three steps; the frames made."""
    with StreamClient(url, timeout=120) as stream:
        first = stream.start(scene=0, seed=11)
        assert (first.index, first.frames.shape[1:]) == (0, (stream.height, stream.width, 3))
        made = [first]
        for t in range(3):
            stream.points({0: (20.0 + 3 * t, 30.0), 1: (44.0, 30.0)}, pinned={1})
            made.append(stream.step())
        if out is not None:
            stream.prompt("a bright red ball on a table")
            made.append(stream.step())
            stream.save(out)
        if session is not None:
            stream.save_session(session)
    _wait_free(url)
    return [c.frames for c in made]


@pytest.mark.slow
def test_a_program_steps_a_stream_with_its_tracks_and_gets_the_frames(server, tmp_path):
    url, model = server
    frames = _drive(url, tmp_path / "stream.mp4", tmp_path / "session.npz")
    assert len(frames) == 5 and all(f.dtype == np.uint8 for f in frames)
    assert [len(f) for f in frames[1:]] == [model.chunk_frames] * 4  # each step: one chunk's frames
    assert all(np.isfinite(f.astype(float)).all() and f.std() > 1 for f in frames)
    from trackstream.data.video_io import probe_video

    assert probe_video(tmp_path / "stream.mp4").num_frames == sum(len(f) for f in frames)
    # the same requests at the same seed, in another session, make the same stream (JPEG of the same pixels)
    again = _drive(url)
    for a, b in zip(frames[:4], again):
        np.testing.assert_array_equal(a, b)
    # the session as data, replayed (stream.demo.session.replay, what generate --session runs): the same pixels,
    # sent as the server sends them (the same JPEG)
    import cv2

    from trackstream.stream.demo.media import encode_frame
    from trackstream.stream.demo.record import SessionRecord
    from trackstream.stream.demo.session import replay

    replayed = replay(model, SessionRecord.load(tmp_path / "session.npz"))
    got = np.concatenate(frames)
    assert sorted(replayed) == list(range(len(got)))
    for n, frame in replayed.items():
        sent = cv2.imdecode(np.frombuffer(encode_frame(frame, "jpeg", 85), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        np.testing.assert_array_equal(sent, got[n])
    from trackstream.stream.generate import main

    out = tmp_path / "replayed.mp4"
    args = ["--session", str(tmp_path / "session.npz"), "--out", str(out), "--session-tracks", str(tmp_path / "t.pt")]
    assert main([*args, "--device", "cpu", "--dtype", "fp32"]) == 0
    assert probe_video(out).num_frames == len(got) and (tmp_path / "t.pt").is_file()


@pytest.mark.slow
def test_the_servers_refusals_and_limits_are_raised_in_its_words(server):
    url, _ = server
    with StreamClient(url, timeout=120) as stream:
        with pytest.raises(StreamRefused, match="step: nothing to step, start a stream first"):
            stream.step()
        stream.start(scene=1)
        with pytest.raises(StreamRefused, match=r"points\[0\] = \[500, 1\] is outside the 64x64 frame"):
            stream.points({0: (500.0, 1.0)})
            stream.step()
        with pytest.raises(StreamRefused, match=r"points has 17 entries; at most 16"):
            stream.points({i: (1.0, 1.0) for i in range(17)})
            stream.step()
        with pytest.raises(StreamRefused, match=r"chunks must be an integer in \[1, 3\]"):
            stream.step(4)
        with pytest.raises(ServerBusy, match=r"the demo is busy \(1 sessions streaming\)"):
            StreamClient(url, timeout=30)  # the server's max_sessions: this one holds its only slot
        assert stream.step().frames.shape[0] > 0  # the session went on after each refusal
    _wait_free(url)
