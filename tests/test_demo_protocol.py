"""The demo's message validation, live tracks and drag instructions (no model, no server)."""

import base64
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from trackstream.stream.demo.decode import ProtocolError, decode_image
from trackstream.stream.demo.limits import Limits
from trackstream.stream.demo.live import LiveTracks
from trackstream.stream.demo.media import (
    FRAME_HEADER_BYTES,
    FRAME_MAGIC,
    Recording,
    encode_frame,
    image_size,
    pack_frame,
    unpack_frame,
)
from trackstream.stream.demo.protocol import Control, Drag, Points, Start, parse_message
from trackstream.stream.demo.session import drag_instruction
from trackstream.stream.drag.instructions import Rotation2D, Translation

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
    d = parse(
        {
            "type": "drag",
            "mode": "animate",
            "kind": "translate",
            "method": "both",
            "chunks": 2,
            "mask": {"box": [10, 10, 20, 20]},
            "path": [[15, 15], [30, 15]],
        }
    )
    assert isinstance(d, Drag) and d.mask.sum() == 11 * 11 and d.mask[10, 10] and not d.mask[9, 10]
    r = parse({"type": "drag", "kind": "rotate", "mask": {"box": [10, 10, 20, 20]}, "center": [15, 15], "degrees": -45})
    assert r.kind == "rotate" and r.degrees == -45 and r.method == "latent" and r.mode == "animate"


@pytest.mark.parametrize(
    "msg, says",
    [
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
        (
            {"type": "drag", "kind": "rotate", "mask": {"box": [1, 1, 5, 5]}, "center": [3, 3], "degrees": 400},
            "degrees",
        ),
        ({"type": "drag", "chunks": 9, "mask": {"box": [1, 1, 5, 5]}, "path": [[1, 1], [2, 2]]}, "chunks must be"),
        ({"type": "points", "points": [], "pad": "x" * 70000}, "at most 65536"),
        ({"type": "start", "image": "data:image/png;base64,AAAA"}, "only PNG, JPEG and WebP"),
        ({"type": "start", "image": "http://example.com/x.png"}, "data URL"),
    ],
)
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
        parse(
            {"type": "start", "image": png_url(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))},
            limits=small,
        )
    big = png_url(np.zeros((10, 5000, 3), np.uint8))  # refused from the PNG header, before decoding
    with pytest.raises(ProtocolError, match="at most 4096 pixels"):
        parse({"type": "start", "image": big})
    with pytest.raises(ProtocolError, match="without its IHDR"):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, height=H, width=W, max_side=4096)
    brush = np.zeros((64, 64, 3), np.uint8)
    brush[5:9, 5:9] = 255
    d = parse({"type": "drag", "mask": {"png": png_url(brush)}, "path": [[6, 6], [20, 6]]})
    assert d.mask.sum() == 16 and d.mask[5:9, 5:9].all()
    with pytest.raises(ProtocolError, match="mask is empty"):
        parse({"type": "drag", "mask": {"png": png_url(np.zeros((64, 64, 3), np.uint8))}, "path": [[6, 6], [20, 6]]})


def _pts(ids, xy, pinned=None):
    return Points(
        ids=np.array(ids),
        xy=np.array(xy, np.float32),
        pinned=np.array(pinned if pinned is not None else [False] * len(ids)),
    )


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
    d = Drag(
        mode="animate",
        kind="translate",
        method="latent",
        mask=mask,
        chunks=2,
        iterations=4,
        path=np.array([[24, 24], [36, 24]], np.float32),
    )
    instr = drag_instruction(d, height=H, width=W, token=4, prompt="p")
    traj = instr.trajectories[0]
    assert isinstance(traj, Translation) and traj.steps == 6 and instr.num_chunks == 2
    np.testing.assert_allclose(traj.points[-1], [36, 24], atol=1e-6)
    np.testing.assert_allclose(np.diff(traj.points[:, 0]), 2.0, atol=1e-6)  # equal arc length
    ys, xs = np.nonzero(instr.editable)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (16, 43, 16, 31)  # the swept box + one token
    r = drag_instruction(
        Drag(
            mode="edit",
            kind="rotate",
            method="latent",
            mask=mask,
            chunks=1,
            iterations=4,
            center=np.array([23.5, 23.5], np.float32),
            degrees=90,
        ),
        height=H,
        width=W,
        token=4,
        prompt="",
    )
    rot = r.trajectories[0]
    assert isinstance(rot, Rotation2D) and rot.steps == 1
    np.testing.assert_allclose(rot.angle(1), 90, atol=1e-6)  # positive = clockwise on screen
    np.testing.assert_allclose(rot.displace(np.array([[33.5, 23.5]]), 1), [[23.5, 33.5]], atol=1e-6)  # right -> down


# -- image headers: the size is read before decoding, for every accepted format -----------------------


def _rgb(h, w, seed=0):
    """A smooth picture with edges (what a generated frame looks like), uint8 RGB [h, w, 3]."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(xx / 23 + seed), 128 + 100 * np.cos(yy / 17), (xx + yy) % 256], -1)
    img[h // 4 : h // 2, w // 3 : w // 2] = (250, 40, 40)
    return np.clip(img + np.random.default_rng(seed).normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def _encode(img, ext, *params):
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf.tobytes()


def _chunk(fourcc: bytes, body: bytes) -> bytes:
    return fourcc + len(body).to_bytes(4, "little") + body + (b"\x00" if len(body) % 2 else b"")


def _riff(*chunks: bytes) -> bytes:
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def _vp8x(vp8_file: bytes, w: int, h: int) -> bytes:
    """An extended (VP8X) WebP around a simple one's VP8 chunk, the canvas declared as w x h."""
    return _riff(
        _chunk(b"VP8X", b"\x00" * 4 + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")), vp8_file[12:]
    )


def _patched(data: bytes, w: int, h: int) -> bytes:
    """The same file with its header declaring w x h (the pixels stay those of a tiny image)."""
    b = bytearray(data)
    if data.startswith(b"\xff\xd8"):
        pos = 2
        while b[pos + 1] not in (0xC0, 0xC1, 0xC2):
            pos += 2 + int.from_bytes(b[pos + 2 : pos + 4], "big")
        b[pos + 5 : pos + 7], b[pos + 7 : pos + 9] = h.to_bytes(2, "big"), w.to_bytes(2, "big")
    elif data[12:16] == b"VP8 ":
        b[26:28], b[28:30] = w.to_bytes(2, "little"), h.to_bytes(2, "little")
    elif data[12:16] == b"VP8L":
        bits = int.from_bytes(b[21:25], "little") & ~((1 << 28) - 1)
        b[21:25] = (bits | (w - 1) | ((h - 1) << 14)).to_bytes(4, "little")
    elif data[12:16] == b"VP8X":
        b[24:27], b[27:30] = (w - 1).to_bytes(3, "little"), (h - 1).to_bytes(3, "little")
    else:
        b[16:20], b[20:24] = w.to_bytes(4, "big"), h.to_bytes(4, "big")
    return bytes(b)


def _formats(img):
    lossy = _encode(img, ".webp", cv2.IMWRITE_WEBP_QUALITY, 80)
    return {
        "png": _encode(img, ".png"),
        "jpeg": _encode(img, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90),
        "jpeg-progressive": _encode(img, ".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        "webp-vp8": lossy,
        "webp-vp8l": _encode(img, ".webp", cv2.IMWRITE_WEBP_QUALITY, 101),
        "webp-vp8x": _vp8x(lossy, img.shape[1], img.shape[0]),
    }


def test_image_size_reads_every_format_header_and_the_decoder_agrees():
    img = _rgb(23, 37)[:, :, ::-1]
    files = _formats(img)
    assert files["webp-vp8"][12:16] == b"VP8 " and files["webp-vp8l"][12:16] == b"VP8L"
    for name, data in files.items():
        assert image_size(data) == (37, 23), name
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (23, 37, 3), name
        s = parse(
            {"type": "start", "image": f"data:image/{name.split('-')[0]};base64," + base64.b64encode(data).decode()}
        )
        assert s.image.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="JPEG whose header gives no frame size"):
        image_size(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 7 + b"\xff\xda")
    with pytest.raises(ValueError, match="animated WebP"):
        image_size(_riff(_chunk(b"VP8X", b"\x02" + b"\x00" * 9)))
    with pytest.raises(ProtocolError, match="could not be decoded"):  # a sane header, damaged pixels
        decode_image(files["png"][:60], height=H, width=W, max_side=4096)


@pytest.mark.parametrize("name", ["png", "jpeg", "jpeg-progressive", "webp-vp8", "webp-vp8l", "webp-vp8x"])
def test_an_upload_declaring_16000x16000_is_refused_from_its_header_without_decoding(name, monkeypatch):
    data = _patched(_formats(_rgb(16, 16)[:, :, ::-1])[name], 16000, 16000)
    assert len(data) < 4096 and image_size(data) == (16000, 16000)
    import time

    def never(*a, **k):
        raise AssertionError("the decoder was called on an oversized image")

    from PIL import Image

    monkeypatch.setattr(cv2, "imdecode", never)
    monkeypatch.setattr(Image.Image, "load", never)  # the decoder the demo uses
    url = f"data:image/{name.split('-')[0]};base64," + base64.b64encode(data).decode()
    t0 = time.perf_counter()
    with pytest.raises(ProtocolError) as e:
        parse({"type": "start", "image": url})
    assert time.perf_counter() - t0 < 0.05
    assert str(e.value) == (
        "image is 16000x16000; at most 4096 pixels a side (Limits.max_image_side): scale it down first"
    )


# -- frames out: binary JPEG / WebP messages, the recording, its mp4 ----------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_binary_frames_round_trip(fmt):
    frame = _rgb(48, 80)
    image = encode_frame(frame, fmt, 90)
    msg = pack_frame(image, n=4_000_000_000, chunk=7, fmt=fmt, replaces=True)
    assert msg[:4] == FRAME_MAGIC and len(msg) == FRAME_HEADER_BYTES + len(image)
    got = unpack_frame(msg)
    assert (got["n"], got["chunk"], got["replaces"], got["format"]) == (4_000_000_000, 7, True, fmt)
    back = cv2.imdecode(np.frombuffer(got["image"], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert back.shape == frame.shape and np.abs(back.astype(int) - frame).mean() < 4
    assert image_size(got["image"]) == (80, 48)
    assert unpack_frame(pack_frame(image, n=0, chunk=0, fmt=fmt))["replaces"] is False
    with pytest.raises(ValueError, match="not a demo frame"):
        unpack_frame(b"{json}" + image)
    with pytest.raises(ValueError, match="--frame-quality"):
        encode_frame(frame, fmt, 0)
    with pytest.raises(ValueError, match="--frame-format"):
        encode_frame(frame, "png")


def test_binary_frames_are_far_smaller_than_base64_png(capsys):
    sizes = {}
    for h, w in ((64, 64), (480, 832)):
        frame = _rgb(h, w, seed=1)
        png = len(png_url(frame[:, :, ::-1]))
        sizes[w, h] = (
            png,
            len(encode_frame(frame, "jpeg", 85)) + FRAME_HEADER_BYTES,
            len(encode_frame(frame, "webp", 85)) + FRAME_HEADER_BYTES,
        )
        with capsys.disabled():
            print(f"\n[demo] {w}x{h}: base64 PNG {png} B, JPEG 85 {sizes[w, h][1]} B, WebP 85 {sizes[w, h][2]} B")
    png, jpeg, webp = sizes[832, 480]
    assert jpeg < png / 5 and webp < png / 5


def test_recording_is_bounded_replaced_by_edits_and_saved_as_mp4():
    import av

    frames = [encode_frame(_rgb(24, 40, seed=k), "jpeg", 85) for k in range(10)]
    rec = Recording(max_bytes=sum(map(len, frames[:6])) + 10)
    for n, f in enumerate(frames):
        rec.add(n, f)
    assert rec.dropped == 4 and sorted(rec.frames) == list(range(4, 10)) and rec.nbytes <= rec.max_bytes
    rec.add(9, frames[0])  # an edit replaces frame 9
    assert rec.frames[9] == frames[0] and rec.nbytes == sum(len(v) for v in rec.frames.values())
    data = Recording.mp4(rec.snapshot(), fps=16)
    with av.open(io.BytesIO(data)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == len(rec.frames) and decoded[0].shape == (24, 40, 3)
    first = cv2.imdecode(np.frombuffer(frames[4], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert np.abs(decoded[0].astype(int) - first).mean() < 8
    rec.clear()
    assert rec.snapshot() == [] and rec.nbytes == rec.dropped == 0
    with pytest.raises(ValueError, match="nothing recorded yet"):
        Recording.mp4([], fps=16)


def test_demo_options_are_refused_in_one_line(capsys):
    from trackstream.stream.demo.__main__ import main

    student, codec = "assets/tiny-student/student", "assets/tiny-teacher/codec.pt"
    assert main(["--student", student, "--codec", codec, "--frame-quality", "0"]) == 2
    assert "--frame-quality 0: must be in [1, 100]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # the parser's usage error: one spelling, bf16 | fp16 | fp32 | auto
        main(["--student", student, "--codec", codec, "--dtype", "float64"])
    assert exit_.value.code == 2 and "--dtype='float64': choose auto (bf16 on CUDA" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a codec name spelled as the old conf file was: the new spelling named
        main(["--student", student, "--codec", codec, "--codec-name", "tiny_ae"])
    assert "it is spelled tiny-ae" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["--student", student, "--codec", codec, "--device", "cuda"]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--student", student, "--codec", codec, "--frame-format", "png"])


def test_hello_offers_the_grid_spacings_the_students_run_config_records(tmp_path):
    """hello's grid: data.placement's spacing range in frame pixels ({}: Placement()'s), none (and one line saying
    so) for a config without one, nothing claimed without a config; the offer fits max_points."""
    from types import SimpleNamespace

    import yaml

    from trackstream.stream.demo.protocol import PROTOCOL_VERSION
    from trackstream.stream.demo.server import _Server
    from trackstream.stream.demo.session import StartPoints, grid_hello, start_points

    shipped = Path(__file__).resolve().parents[1] / "assets" / "tiny-student" / "student"

    def student(name: str, data) -> str:
        run = tmp_path / name
        shutil.copytree(shipped, run / "dmd" / "export" / "student", dirs_exist_ok=True)  # a real export
        if data is not None:  # a run's RUN/dmd/config.yaml beside RUN/dmd/export/student
            (run / "dmd" / "config.yaml").write_text(yaml.safe_dump({"data": data}))
        return run / "dmd" / "export" / "student"

    def hello(folder, max_points: int = 64) -> dict:
        model = SimpleNamespace(
            height=64, width=64, fps=16, chunk_frames=12, num_scenes=2, has_track_head=True, photo_notice=None,
            device="cpu", dtype="float32", start_points=start_points(folder), scene=lambda k: (None, f"scene {k}"),
        )  # fmt: skip
        server = _Server(model, Limits(max_points=max_points), seed=0, frame_format="jpeg", frame_quality=85)
        return server.hello(SimpleNamespace(token="t"))

    world = {"source": "synthetic", "height": 64, "width": 64, "grid_size": 16}
    mixture = hello(student("mixture", {**world, "placement": {}}))
    assert mixture["protocol"] == PROTOCOL_VERSION == 3
    # Placement()'s spacing, 0.06-0.25 of the shorter side; 64 points fit a grid no finer than 8 px
    assert mixture["grid"] == {
        "spacing": [3.84, 16.0],
        "offer": [8.0, 16.0],
        "default": 8.0,
        "jitter": 0.25,
        "note": None,
        "lattice": None,
    }
    assert hello(student("mixture", {**world, "placement": {}}), max_points=256)["grid"]["offer"] == [4.0, 16.0]
    narrow = hello(student("narrow", {**world, "placement": {"spacing": [0.15, 0.2], "jitter": 0.1}}))["grid"]
    assert narrow["spacing"] == [9.6, 12.8] and narrow["offer"] == [9.6, 12.8] and narrow["default"] == 9.6
    assert narrow["jitter"] == 0.1
    for data in (world, {**world, "placement": None}):  # an older student: trained on the one lattice
        g = hello(student("lattice", data))["grid"]
        assert g["spacing"] is None and g["offer"] == [8.0, 16.0] and g["default"] == 8.0
        assert g["note"] == "trained on one lattice of points only: grids elsewhere may break its picture"
        assert g["lattice"] == "16x16 points at x, y = 1.5 + 4k px; its run config records no data.placement"
    bare = hello(student("bare", None))["grid"]  # no run config: nothing claimed
    assert bare["spacing"] is None and bare["note"] is bare["lattice"] is None and bare["offer"] == [8.0, 16.0]
    # the shipped student was distilled on the placement mixture: its run config records data.placement ({})
    from trackstream.data.placements import Placement

    assert start_points(shipped) == StartPoints("placement", placement=Placement())
    with pytest.raises(ValueError, match="data.placement has unknown fields"):
        start_points(student("bad", {**world, "placement": {"spacings": [0.1, 0.2]}}))

    # the finest grid offered holds at most max_points points at any offset (the page's layout, demo.js)
    for h, w, m in ((64, 64, 64), (64, 64, 100), (48, 80, 64), (480, 832, 64)):
        s = grid_hello(StartPoints("unknown"), height=h, width=w, max_points=m)["offer"][0]
        assert 0.06 * min(h, w) <= s <= 0.25 * min(h, w)
        for ox in np.linspace(-0.5, s - 0.5, 7, endpoint=False):
            assert len(np.arange(ox, w - 0.5, s)) * len(np.arange(ox, h - 0.5, s)) <= m, (h, w, m, s, ox)
