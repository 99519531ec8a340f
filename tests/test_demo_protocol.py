"""The demo's message validation, live tracks and drag instructions (no model, no server)."""
import base64
import json

import cv2
import numpy as np
import pytest

from stream.demo.protocol import Control, Drag, Limits, Points, ProtocolError, Start, decode_image, parse_message
from stream.demo.session import LiveTracks, drag_instruction
from stream.drag.instructions import Rotation2D, Translation

H = W = 64
LIM = Limits()


def parse(msg, **kw):
    text = msg if isinstance(msg, (str, bytes)) else json.dumps(msg)
    return parse_message(text, height=H, width=W, limits=kw.get("limits", LIM), num_scenes=8)


def png_url(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", img)
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def test_valid_messages_parse_to_typed_objects():
    assert parse({"type": "start", "scene": 3}) == Start(scene=3)
    pts = parse({"type": "points", "points": [{"id": 2, "x": 1.5, "y": 63, "pinned": True}, {"id": 0, "x": 0, "y": 0}]})
    assert isinstance(pts, Points) and pts.ids.tolist() == [2, 0] and pts.pinned.tolist() == [True, False]
    np.testing.assert_allclose(pts.xy, [[1.5, 63], [0, 0]])
    assert parse({"type": "pause"}) == Control("pause")
    d = parse({"type": "drag", "mode": "animate", "kind": "translate", "method": "both", "chunks": 2,
               "mask": {"box": [10, 10, 20, 20]}, "path": [[15, 15], [30, 15]]})
    assert isinstance(d, Drag) and d.mask.sum() == 11 * 11 and d.mask[10, 10] and not d.mask[9, 10]
    r = parse({"type": "drag", "kind": "rotate", "mask": {"box": [10, 10, 20, 20]}, "center": [15, 15], "degrees": -45})
    assert r.kind == "rotate" and r.degrees == -45 and r.method == "latent" and r.mode == "animate"


@pytest.mark.parametrize("msg, says", [
    ("{nope", "not valid JSON"),
    (b"\x00", "binary"),
    ("[1]", '"type"'),
    ({"type": "fly"}, "unknown message type 'fly'"),
    ({"type": "start"}, "exactly one of"),
    ({"type": "start", "scene": 8}, "scene must be an integer in [0, 7]"),
    ({"type": "start", "scene": True}, "scene must be an integer"),
    ({"type": "points", "points": [{"id": 0, "x": 64, "y": 0}]}, "outside the 64x64 frame"),
    ({"type": "points", "points": [{"id": 0, "x": float("nan"), "y": 0}]}, "points[0].x must be a finite number"),
    ({"type": "points", "points": [{"id": 64, "x": 1, "y": 1}]}, "points[0].id must be an integer in [0, 63]"),
    ({"type": "points", "points": [{"id": 1, "x": 1, "y": 1}, {"id": 1, "x": 2, "y": 2}]}, "once"),
    ({"type": "points", "points": [{"id": i, "x": 1, "y": 1} for i in range(65)]}, "at most 64"),
    ({"type": "points", "points": [{"id": 0, "x": "1", "y": 1}]}, "finite number"),
    ({"type": "drag", "mask": {"box": [1, 1, 5, 5]}, "path": [[1, 1]]}, "path must be a list of 2..256"),
    ({"type": "drag", "mode": "both", "mask": {"box": [1, 1, 5, 5]}}, "mode must be one of"),
    ({"type": "drag", "mask": {"circle": 3}, "path": [[1, 1], [2, 2]]}, "mask must be"),
    ({"type": "drag", "kind": "rotate", "mask": {"box": [1, 1, 5, 5]}, "center": [3, 3], "degrees": 400}, "degrees"),
    ({"type": "drag", "chunks": 9, "mask": {"box": [1, 1, 5, 5]}, "path": [[1, 1], [2, 2]]}, "chunks must be"),
    ({"type": "points", "points": [], "pad": "x" * 70000}, "at most 65536"),
    ({"type": "start", "image": "data:image/png;base64,AAAA"}, "only PNG and JPEG"),
    ({"type": "start", "image": "http://example.com/x.png"}, "data URL"),
])
def test_refusals_name_the_field(msg, says):
    with pytest.raises(ProtocolError) as e:
        parse(msg)
    assert says in str(e.value)


def test_uploads_are_bounded_and_resized():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 50:150] = (0, 0, 255)  # red (BGR) centre square survives the centre crop
    s = parse({"type": "start", "image": png_url(img), "prompt": "a red square"})
    assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8 and s.prompt == "a red square"
    assert s.image[32, 32].tolist() == [255, 0, 0]  # RGB
    small = Limits(max_upload_bytes=1000)
    with pytest.raises(ProtocolError, match="at most 1000"):
        parse({"type": "start", "image": png_url(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))},
              limits=small)
    big = png_url(np.zeros((10, 5000, 3), np.uint8))  # refused from the PNG header, before decoding
    with pytest.raises(ProtocolError, match="at most 4096 pixels"):
        parse({"type": "start", "image": big})
    with pytest.raises(ProtocolError, match="could not be decoded"):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, height=H, width=W, max_side=4096)
    brush = np.zeros((64, 64, 3), np.uint8)
    brush[5:9, 5:9] = 255
    d = parse({"type": "drag", "mask": {"png": png_url(brush)}, "path": [[6, 6], [20, 6]]})
    assert d.mask.sum() == 16 and d.mask[5:9, 5:9].all()
    with pytest.raises(ProtocolError, match="mask is empty"):
        parse({"type": "drag", "mask": {"png": png_url(np.zeros((64, 64, 3), np.uint8))}, "path": [[6, 6], [20, 6]]})


def _pts(ids, xy, pinned=None):
    return Points(ids=np.array(ids), xy=np.array(xy, np.float32),
                  pinned=np.array(pinned if pinned is not None else [False] * len(ids)))


def test_live_tracks_replay_the_gesture_at_its_speed_and_pins_stay():
    live = LiveTracks(4, fps=16)
    assert live.for_chunk(12, now=0.0)[0] is None  # no points: the empty motion condition
    live.update(_pts([0, 2], [[10, 10], [30, 30]], [False, True]), now=0.1)
    tracks, vis, new = live.for_chunk(1, now=0.2, first=True)  # chunk 0: tagged by the first frame itself
    assert tracks.shape == (1, 4, 2) and vis[0].tolist() == [True, False, True, False] and len(new) == 0
    # a gesture: point 0 goes 10 -> 22 px over 0.75 s (16 px/s = 1 px per frame), sampled every 50 ms
    for k in range(1, 16):
        live.update(_pts([0, 2], [[10 + 0.8 * k, 10], [40, 40]], [False, True]), now=0.2 + 0.05 * k)
    tracks, vis, new = live.for_chunk(12, now=1.0)  # generated after the gesture: replayed, not squeezed
    np.testing.assert_allclose(tracks[:, 0, 0], 10 + np.arange(1, 13), atol=1e-4)
    np.testing.assert_allclose(tracks[:, 2], [[30, 30]] * 12)  # pinned: held where it was pinned
    tracks, vis, new = live.for_chunk(12, now=1.1)  # the clock never passes the present: positions hold
    np.testing.assert_allclose(tracks[:, 0, 0], 22.0)
    live.update(_pts([0, 1], [[22, 10], [5, 6]]), now=1.2)
    tracks, vis, new = live.for_chunk(12, now=2.0)
    assert new.tolist() == [1]  # appeared mid-stream: to be tagged before it moves
    assert vis[0].tolist() == vis[-1].tolist() == [True, True, False, False]  # from the first frame; 2 let go
    live.update(_pts([0], [[40, 10]]), now=10.0)  # long after: the replay jumps, lagging <= max_lag
    tracks, _, _ = live.for_chunk(12, now=10.0)
    np.testing.assert_allclose(tracks[-1, 0], [40, 10])
    assert len(live.samples) <= 2  # consumed samples are dropped


def test_drag_instruction_geometry():
    mask = np.zeros((H, W), bool)
    mask[20:28, 20:28] = True
    d = Drag(mode="animate", kind="translate", method="latent", mask=mask, chunks=2, iterations=4,
             path=np.array([[24, 24], [36, 24]], np.float32))
    instr = drag_instruction(d, height=H, width=W, token=4, prompt="p")
    traj = instr.trajectories[0]
    assert isinstance(traj, Translation) and traj.steps == 6 and instr.num_chunks == 2
    np.testing.assert_allclose(traj.points[-1], [36, 24], atol=1e-6)
    np.testing.assert_allclose(np.diff(traj.points[:, 0]), 2.0, atol=1e-6)  # equal arc length
    ys, xs = np.nonzero(instr.editable)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (16, 43, 16, 31)  # the swept box + one token
    r = drag_instruction(Drag(mode="edit", kind="rotate", method="latent", mask=mask, chunks=1, iterations=4,
                              center=np.array([23.5, 23.5], np.float32), degrees=90), height=H, width=W, token=4, prompt="")
    rot = r.trajectories[0]
    assert isinstance(rot, Rotation2D) and rot.steps == 1
    np.testing.assert_allclose(rot.angle(1), 90, atol=1e-6)  # positive = clockwise on screen
    np.testing.assert_allclose(rot.displace(np.array([[33.5, 23.5]]), 1), [[23.5, 33.5]], atol=1e-6)  # right -> down
