"""The demo's camera moves: the message, the grid lifted from the frame on screen and moved along the path,
scheduled on the live tracks at the stream's rate, and ended by the person's own input."""

import time
from pathlib import Path

import numpy as np
import pytest

from trackstream.stream.demo.decode import ProtocolError
from trackstream.stream.demo.limits import Limits
from trackstream.stream.demo.live import LiveTracks, camera_move
from trackstream.stream.demo.protocol import Camera, Points, parse_message

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "assets" / "tiny-student" / "student"


def _parse(msg: dict):
    import json

    return parse_message(json.dumps(msg), height=64, width=64, limits=Limits(), num_scenes=2)


def test_camera_messages_are_parsed_or_refused_naming_the_field():
    assert _parse({"type": "camera", "path": "orbit", "amount": -1, "seconds": 2}) == Camera("orbit", -1.0, 2.0)
    assert _parse({"type": "camera", "path": "dolly"}) == Camera("dolly", 1.0, 3.0)
    for bad, says in (
        ({"path": "spin"}, "path must be one of"),
        ({"path": "pan", "amount": 0}, "amount must be in"),
        ({"path": "pan", "amount": 9}, "amount must be in"),
        ({"path": "pan", "seconds": 60}, "seconds must be in"),
        ({"path": "pan", "seconds": "3"}, "seconds must be a finite number"),
    ):
        with pytest.raises(ProtocolError, match=says):
            _parse({"type": "camera", **bad})


def test_a_pan_moves_the_grid_left_and_is_replayed_at_the_streams_rate():
    frame = np.zeros((64, 64, 3), np.uint8)
    tracks, vis = camera_move(frame, Camera("pan", 1.0, 1.0), depth_fn=lambda f: np.ones(f.shape[:2]), fps=16, slots=64)
    assert tracks.shape == (17, 64, 2) and vis[0].all()
    assert (tracks[-1, vis[-1], 0] < tracks[0, vis[-1], 0]).all()  # the camera goes right: the picture goes left
    assert np.abs(tracks[:, :, 1] - tracks[:1, :, 1]).max() < 1e-4  # and not up or down
    assert (
        camera_move(frame, Camera("pan", 1.0, 1.0), depth_fn=lambda f: np.ones((64, 64)), fps=16, slots=9)[0].shape[1]
        == 9
    )  # a 3 x 3 grid when the session has 9 slots

    live = LiveTracks(64, 16)
    live.update(Points(np.array([0]), np.array([[10.0, 10.0]], np.float32), np.array([False])), now=0.0)
    live.for_chunk(12, now=0.75)  # streaming: the replay clock at 0.75 s
    live.schedule(tracks, vis, now=0.75)
    assert not live.tagged.any()  # IDs are content: the grid is tagged anew on the frame on screen
    got, gvis, new = live.for_chunk(12, now=1.5)
    assert set(new.tolist()) == set(range(64))  # every grid point to tag before this chunk
    # frame j of the chunk is read at 0.75 + (j + 1) / 16 s, half way between the move's frames j and j + 1
    both = vis[:12] & vis[1:13]  # (a point leaving the frame holds where it was last seen)
    np.testing.assert_allclose(got[:, :64][both], ((tracks[:12] + tracks[1:13]) / 2)[both], atol=1e-4)
    assert (gvis[:, :64] == vis[:12]).all()
    got2, _, _ = live.for_chunk(12, now=3.0)
    np.testing.assert_allclose(got2[-1, :64][vis[-1]], tracks[-1][vis[-1]], atol=1e-4)  # it ends where the move ends


def test_the_persons_input_ends_a_scheduled_move():
    tracks = np.repeat(np.linspace(0, 30, 17, dtype=np.float32)[:, None, None], 2, axis=2).repeat(4, axis=1)
    live = LiveTracks(8, 16)
    live.schedule(tracks, np.ones((17, 4), bool), now=0.0)
    live.update(Points(np.array([0]), np.array([[5.0, 5.0]], np.float32), np.array([False])), now=0.3)
    assert all(t <= 0.3 for t, *_ in live.samples)  # the rest of the move is dropped, time order kept


@pytest.mark.slow
def test_a_session_streams_a_camera_move_from_the_frame_on_screen():
    from trackstream.stream.demo.protocol import Start
    from trackstream.stream.demo.session import DemoModel, Session

    model = DemoModel(STUDENT, num_scenes=1, device="cpu", dtype="float32")
    session = Session(model, Limits(max_points=16), seed=0)
    with pytest.raises(ProtocolError, match="start a stream first"):
        session.camera(Camera("orbit", 1.0, 1.0))
    session.start(Start(scene=0))
    session.next_chunk()
    tracks, vis = session.camera(Camera("orbit", 1.0, 1.0))
    assert tracks.shape == (17, 16, 2)  # a 4 x 4 grid for 16 slots
    time.sleep(0.8)
    em = session.next_chunk()
    assert em.frames.shape[0] == model.chunk_frames and session.last_tracks is not None
    sent = session.last_tracks[0][0].numpy()  # [T, S, 2] the chunk's tracks: the move's, in the grid's slots
    assert np.isfinite(sent).all() and np.abs(sent[:, :16] - tracks[:1]).max() > 0.1  # the grid moved
