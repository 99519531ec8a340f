"""The demo's WebSocket protocol: every client message parsed into a typed object, or refused.

Client -> server (JSON text, one object per message, ``type`` first):

* ``{"type": "start", "scene": 3}`` or ``{"type": "start", "image": "data:image/png;base64,..."}``
  (PNG, JPEG or WebP; + optional ``"prompt"``): a new stream from a synthetic scene's first frame or an
  uploaded image. The image's size is read from its header and refused above ``Limits.max_image_side``
  before any pixel is decoded.
* ``{"type": "points", "points": [{"id": 0, "x": 31.5, "y": 12.0, "pinned": false}, ...]}``: where
  every live point is now (frame pixels). A moving point makes a track; a pinned one is held still
  (MotionStream's static points); a point left out is let go (invisible from the next chunk on).
* ``{"type": "drag", "mode": "animate"|"edit", "kind": "translate"|"rotate", "method":
  "latent"|"tracks"|"both", "mask": {"box": [x0, y0, x1, y1]} | {"png": "data:image/png;base64,..."},
  "path": [[x, y], ...] (translate) | "center": [x, y], "degrees": a (rotate), "chunks": 1,
  "iterations": 4}``: a DragStream instruction (``stream.drag``).
* ``{"type": "camera", "path": "orbit"|"pan"|"zoom"|"dolly", "amount": 1.0, "seconds": 3.0}``: a camera
  move from the frame on screen (a grid lifted with its depth, ``stream.demo.live.camera_move``); the
  sign of ``amount`` is the direction. Answered with ``camera`` (the grid's positions, for the page to draw).
* ``{"type": "prompt", "prompt": "...", "sink": "recache"|"keep"}``: the next chunks under a new prompt
  (the engine re-caches the window, and the sink unless ``keep``, under it: ``stream.recache``).
  Answered with ``prompt`` (the chunk it takes effect at, the re-cache passes and milliseconds).
* ``{"type": "pause"}``, ``{"type": "resume"}``, ``{"type": "restart"}``.
* ``{"type": "step", "chunks": n}`` (1 <= n <= ``Limits.max_step_chunks``): while the stream is paused, the next n
  chunks, then paused again (each answered as a playing chunk is: its frames, then ``chunk``; then ``stepped``). A
  program drives a stream chunk by chunk this way: ``start`` with ``"paused": true`` sends the first chunk and
  pauses; then points / prompt / camera, ``step``, read the chunk, and again (``stream.client.StreamClient``).
  ``start``'s optional ``"seed"`` (an integer) fixes the stream's noise and track IDs: the same seed and the same
  messages make the same frames (``started`` says the seed a stream runs at).

Server -> client, JSON text: ``hello`` (``protocol``: this module's ``PROTOCOL_VERSION``, frame ``width`` /
``height``, fps, ``frame_format``, the ``session`` token for saving the video, limits, scenes, device and dtype,
``photo_notice``: what a photo will look like on a student whose records say it knows only the synthetic world,
else null; ``grid``: the spacings the Grid button offers, below), ``started``, ``chunk`` (per-chunk latency),
``dragged``, ``camera``, ``paused`` / ``resumed``, ``stepped`` (the chunk indices a ``step`` made), ``error`` (the
message that was refused and why; the session goes on), ``busy``.

hello's ``grid`` (``stream.demo.session.grid_hello``), frame pixels: ``{"spacing": [lo, hi] | null, "offer": [lo,
hi], "default": s, "jitter": j, "note": str | null, "lattice": str | null}``. ``spacing``: the grid spacings the
student was trained on (its run config's ``data.placement.spacing`` x the frame's shorter side; ``{}`` there:
``Placement()``'s), null when its config records no placement; ``offer``: the range the page's spacing control
offers (that one, or ``Placement()``'s when none is recorded, its low end raised so a grid fits
``limits.max_points``); ``default``: the control's first value; ``jitter``: a grid point's largest offset in
spacings; ``note``: one line when the config records no placement (the student was trained on one lattice only;
the page shows it under the control), and ``lattice``: which one, else both null. The page lays the grid itself at
a random offset with that jitter and sends it as ordinary ``points``.

Versions (hello's ``protocol``; a hello without it is version 1). A new version only adds: a field of a server
message, or an optional field or message a client may send; nothing is renamed, removed or given another meaning.
A client ignores the fields it does not know, and reads a field its server does not send (an older server) as
absent, so a client written for an older version works unchanged (``stream.demo.load`` reads only ``width`` and
``limits``). 1: the messages above without what later versions added; 2: hello's ``protocol`` and ``grid``; 3:
``start``'s ``paused`` and ``seed``, ``step`` and ``stepped``, hello's ``limits.max_step_chunks`` and
``scene_captions`` (scene k's caption; its first frame: ``GET /scene/<k>``), ``started``'s ``paused`` and ``seed``.

Server -> client, binary: one message per frame, a 16-byte little-endian header then the image
(``stream.demo.media.pack_frame``):

    bytes 0-3   b"TSF1"            magic (TrackStream Frame, layout 1)
    bytes 4-7   uint32             frame number n in the stream (0 = the first frame)
    bytes 8-11  uint32             chunk index
    byte  12    uint8 flags        bit 0: replaces (an edit: frame n was sent before, show this one)
    byte  13    uint8 format       1 = JPEG, 2 = WebP (``--frame-format``, quality ``--frame-quality``)
    bytes 14-15 reserved (0)
    bytes 16-   the JPEG / WebP file

The page draws it with ``createImageBitmap(new Blob([image]))``. A JPEG frame of 832x480 at quality 85
is ~20x smaller than the base64 PNG in JSON it replaces.

``GET /session/<session token>``: the stream as data (``stream.demo.record``), what ``trackstream generate
--session`` replays. Save video: ``GET /video/<session token>[?scale=k]`` answers the current stream's frames as an H.264 mp4 (the
encoded frames are kept, at most ``Limits.record_bytes`` per session, the oldest let go beyond it;
the ``X-Frames`` and ``X-Frames-Dropped`` headers say how many are in it and how many were let go).

Refusals name the field and what is allowed (``ProtocolError``). Nothing here touches a model.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from trackstream.stream.demo.decode import ProtocolError, decode_image
from trackstream.stream.demo.limits import Limits

__all__ = [
    "PROTOCOL_VERSION",
    "Start",
    "Points",
    "Drag",
    "Camera",
    "Prompt",
    "Control",
    "Step",
    "parse_message",
    "read_message",
    "carries_image",
    "DRAG_MODES",
    "DRAG_KINDS",
    "DRAG_METHODS",
]

PROTOCOL_VERSION = 3  # hello's "protocol"; what each version added: the module docstring
DRAG_MODES = ("animate", "edit")
DRAG_KINDS = ("translate", "rotate")
DRAG_METHODS = ("latent", "tracks", "both")
CAMERA_PATHS = ("orbit", "pan", "zoom", "dolly")
_CONTROLS = ("pause", "resume", "restart")


@dataclass(frozen=True)
class Start:
    scene: Optional[int] = None
    image: Optional[np.ndarray] = None  # uint8 [H, W, 3] RGB at the stream's size
    prompt: Optional[str] = None
    paused: bool = False  # the first chunk, then paused (a program steps it: Step)
    seed: Optional[int] = None  # the stream's noise and track IDs (None: the session's own)


@dataclass(frozen=True)
class Points:
    ids: np.ndarray  # int [P] slots in 0..max_points-1
    xy: np.ndarray  # float32 [P, 2]
    pinned: np.ndarray  # bool [P]


@dataclass(frozen=True)
class Drag:
    mode: str
    kind: str
    method: str
    mask: np.ndarray  # bool [H, W]
    chunks: int
    iterations: int
    path: Optional[np.ndarray] = None  # [K, 2] translate
    center: Optional[np.ndarray] = None  # [2] rotate
    degrees: float = 0.0


@dataclass(frozen=True)
class Camera:
    path: str  # orbit | pan | zoom | dolly (data.camera_tracks.camera_path)
    amount: float  # signed: -1 orbits / pans / zooms / dollies the other way
    seconds: float  # how long the move takes in the video


@dataclass(frozen=True)
class Prompt:
    prompt: str
    sink: str = "recache"  # recache | keep (stream.recache): the attention sink re-cached under it or kept


@dataclass(frozen=True)
class Control:
    action: str  # pause | resume | restart


@dataclass(frozen=True)
class Step:
    chunks: int  # the next chunks of a paused stream


Message = Union[Start, Points, Drag, Camera, Prompt, Control, Step]


def _number(v, field: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise ProtocolError(f"{field} must be a finite number, got {v!r}")
    return float(v)


def _int(v, field: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ProtocolError(f"{field} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _xy(v, field: str, height: int, width: int, names: tuple = ("[0]", "[1]")) -> np.ndarray:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ProtocolError(f"{field} must be [x, y], got {v!r}")
    x, y = _number(v[0], f"{field}{names[0]}"), _number(v[1], f"{field}{names[1]}")
    if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
        raise ProtocolError(
            f"{field} = [{x:g}, {y:g}] is outside the {width}x{height} frame "
            f"(x in [0, {width - 1}], y in [0, {height - 1}])"
        )
    return np.array([x, y], np.float32)


def _choice(msg: dict, field: str, choices: tuple, default: Optional[str] = None) -> str:
    v = msg.get(field, default)
    if v not in choices:
        raise ProtocolError(f"{field} must be one of {list(choices)}, got {v!r}")
    return v


def _data_url(v, field: str, limit: int) -> bytes:
    if not isinstance(v, str) or not v.startswith("data:image/") or ";base64," not in v[:40]:
        raise ProtocolError(f"{field} must be a data URL (data:image/png;base64,..., image/jpeg or image/webp)")
    if len(v) > limit:
        raise ProtocolError(f"{field} is {len(v)} bytes; at most {limit} are accepted")
    try:
        return base64.b64decode(v.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{field} is not valid base64") from None


def _mask(v, height: int, width: int, limits: Limits) -> np.ndarray:
    if not isinstance(v, dict) or len(v) != 1 or next(iter(v)) not in ("box", "png"):
        raise ProtocolError('mask must be {"box": [x0, y0, x1, y1]} or {"png": data URL of a brush mask}')
    if "box" in v:
        b = v["box"]
        if not isinstance(b, (list, tuple)) or len(b) != 4:
            raise ProtocolError(f"mask.box must be [x0, y0, x1, y1], got {b!r}")
        x0, y0 = _xy(b[:2], "mask.box[0:2]", height, width)
        x1, y1 = _xy(b[2:], "mask.box[2:4]", height, width)
        x0, x1, y0, y1 = sorted((x0, x1)) + sorted((y0, y1))
        yy, xx = np.mgrid[:height, :width]
        m = (xx >= np.floor(x0)) & (xx <= np.ceil(x1)) & (yy >= np.floor(y0)) & (yy <= np.ceil(y1))
    else:
        img = decode_image(
            _data_url(v["png"], "mask.png", limits.max_message_bytes),
            height=height,
            width=width,
            max_side=limits.max_image_side,
            max_pixels=limits.max_image_pixels,
            field="mask.png",
        )
        m = img.max(axis=-1) >= 128
    if not m.any():
        raise ProtocolError("mask is empty: brush over the object (or give a box) first")
    return m


def _points(msg: dict, height: int, width: int, limits: Limits) -> Points:
    pts = msg.get("points")
    if not isinstance(pts, list):
        raise ProtocolError("points must be a list of {id, x, y, pinned}")
    if len(pts) > limits.max_points:
        raise ProtocolError(f"points has {len(pts)} entries; at most {limits.max_points}")
    ids, xy, pinned = [], [], []
    for i, p in enumerate(pts):
        if not isinstance(p, dict):
            raise ProtocolError(f"points[{i}] must be an object {{id, x, y, pinned}}")
        ids.append(_int(p.get("id"), f"points[{i}].id", 0, limits.max_points - 1))
        xy.append(_xy([p.get("x"), p.get("y")], f"points[{i}]", height, width, names=(".x", ".y")))
        pin = p.get("pinned", False)
        if not isinstance(pin, bool):
            raise ProtocolError(f"points[{i}].pinned must be true or false")
        pinned.append(pin)
    if len(set(ids)) != len(ids):
        raise ProtocolError("points: every id must appear once")
    return Points(
        ids=np.asarray(ids, np.int64), xy=np.asarray(xy, np.float32).reshape(-1, 2), pinned=np.asarray(pinned, bool)
    )


def _drag(msg: dict, height: int, width: int, limits: Limits) -> Drag:
    mode, kind = _choice(msg, "mode", DRAG_MODES, "animate"), _choice(msg, "kind", DRAG_KINDS, "translate")
    method = _choice(msg, "method", DRAG_METHODS, "latent")
    chunks = 1 if mode == "edit" else _int(msg.get("chunks", 1), "chunks", 1, limits.max_drag_chunks)
    iterations = _int(msg.get("iterations", 4), "iterations", 0, limits.max_iterations)
    mask = _mask(msg.get("mask"), height, width, limits)
    if kind == "translate":
        path = msg.get("path")
        if not isinstance(path, list) or not 2 <= len(path) <= limits.max_path_points:
            raise ProtocolError(
                f"path must be a list of 2..{limits.max_path_points} points [x, y] (from the grab to the drop)"
            )
        pts = np.stack([_xy(p, f"path[{i}]", height, width) for i, p in enumerate(path)])
        return Drag(mode, kind, method, mask, chunks, iterations, path=pts)
    center = _xy(msg.get("center"), "center", height, width)
    degrees = _number(msg.get("degrees"), "degrees")
    if not -180 <= degrees <= 180:
        raise ProtocolError(f"degrees must be in [-180, 180], got {degrees:g}")
    return Drag(mode, kind, method, mask, chunks, iterations, center=center, degrees=degrees)


def read_message(text: Union[str, bytes], limits: Limits) -> dict:
    """The cheap half of parsing (sizes, JSON, a ``type``): run on the event loop for every message,
    so the server knows what a message is before deciding where the rest of it is parsed."""
    if isinstance(text, bytes):
        raise ProtocolError("binary messages are not accepted; send JSON text")
    soft = max(limits.max_message_bytes, limits.max_upload_bytes)
    if len(text) > soft:
        raise ProtocolError(f"message is {len(text)} bytes; at most {soft} are accepted")
    try:
        msg = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("message is not valid JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError('message must be a JSON object with a "type"')
    if msg["type"] != "start" and len(text) > limits.max_message_bytes:
        raise ProtocolError(
            f"{msg['type'][:32]} message is {len(text)} bytes; at most {limits.max_message_bytes} are accepted"
        )
    return msg


def carries_image(msg: dict) -> bool:
    """Whether parsing ``msg`` decodes an image (an upload, a brushed mask): the server does that in its
    decode worker, never on the event loop."""
    mask = msg.get("mask")
    return (msg.get("type") == "start" and "image" in msg) or (
        msg.get("type") == "drag" and isinstance(mask, dict) and "png" in mask
    )


def parse_message(
    text: Union[str, bytes, dict], *, height: int, width: int, limits: Limits, num_scenes: int
) -> Message:
    """One client message (its text, or ``read_message``'s object) -> Start | Points | Drag | Control,
    or ``ProtocolError``."""
    msg = text if isinstance(text, dict) else read_message(text, limits)
    kind = msg["type"]
    if kind == "start":
        prompt = msg.get("prompt")
        if prompt is not None and (not isinstance(prompt, str) or len(prompt) > 500):
            raise ProtocolError("prompt must be a string of at most 500 characters")
        if ("scene" in msg) == ("image" in msg):
            raise ProtocolError('start needs exactly one of "scene" (a number) or "image" (a data URL)')
        paused = msg.get("paused", False)
        if not isinstance(paused, bool):
            raise ProtocolError(f"paused must be true or false, got {paused!r}")
        seed = None if msg.get("seed") is None else _int(msg["seed"], "seed", 0, 2**31 - 1)
        if "scene" in msg:
            return Start(scene=_int(msg["scene"], "scene", 0, num_scenes - 1), prompt=prompt, paused=paused, seed=seed)
        data = _data_url(msg["image"], "image", limits.max_upload_bytes)
        return Start(
            image=decode_image(
                data,
                height=height,
                width=width,
                max_side=limits.max_image_side,
                max_pixels=limits.max_image_pixels,
            ),
            prompt=prompt,
            paused=paused,
            seed=seed,
        )
    if kind == "points":
        return _points(msg, height, width, limits)
    if kind == "drag":
        return _drag(msg, height, width, limits)
    if kind == "camera":
        path = _choice(msg, "path", CAMERA_PATHS)
        amount = _number(msg.get("amount", 1.0), "amount")
        seconds = _number(msg.get("seconds", 3.0), "seconds")
        if not 0.05 <= abs(amount) <= 3:
            raise ProtocolError(
                f"amount must be in [-3, -0.05] or [0.05, 3] (the sign is the direction), got {amount:g}"
            )
        if not 0.5 <= seconds <= 10:
            raise ProtocolError(f"seconds must be in [0.5, 10], got {seconds:g}")
        return Camera(path, amount, seconds)
    if kind == "prompt":
        prompt = msg.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > 500:
            raise ProtocolError("prompt must be a non-empty string of at most 500 characters")
        return Prompt(prompt.strip(), _choice(msg, "sink", ("recache", "keep"), "recache"))
    if kind in _CONTROLS:
        return Control(kind)
    if kind == "step":
        return Step(_int(msg.get("chunks", 1), "chunks", 1, limits.max_step_chunks))
    raise ProtocolError(
        f"unknown message type {kind!r}; one of start, points, drag, camera, prompt, pause, resume, restart, step"
    )
