"""The demo's pixels in and out: image sizes read from headers, binary frames, the session's recording.

* ``image_size``: (width, height) from a PNG, JPEG or WebP header without decoding a pixel, so an
  upload that declares 16000x16000 in 1 MB is refused before the decoder allocates 768 MB for it.
* ``encode_frame`` / ``pack_frame`` / ``unpack_frame``: one generated frame as JPEG or WebP behind a
  16-byte header, sent as one binary WebSocket message (the layout is in ``stream.demo.protocol``).
* ``Recording``: the encoded frames of the current stream, bounded in bytes (the oldest go first), and
  ``Recording.mp4`` to turn them into an H.264 mp4 one frame at a time (never the whole video in memory).
"""

from __future__ import annotations

import io
import struct
from typing import Optional

import cv2
import numpy as np

__all__ = [
    "FRAME_FORMATS",
    "FRAME_MAGIC",
    "FRAME_HEADER_BYTES",
    "image_size",
    "encode_frame",
    "pack_frame",
    "unpack_frame",
    "Recording",
]

FRAME_FORMATS = {"jpeg": 1, "webp": 2}  # the header's format byte
FRAME_MAGIC = b"TSF1"
# magic, frame number, chunk, flags (bit 0: replaces), format, 2 reserved bytes; little-endian
_HEADER = struct.Struct("<4sIIBBH")
FRAME_HEADER_BYTES = _HEADER.size  # 16
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
    """Walk the marker segments to the first start-of-frame (SOFn: height then width, big-endian)."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF:
            if pos + 9 > len(data):
                return None
            h, w = int.from_bytes(data[pos + 5 : pos + 7], "big"), int.from_bytes(data[pos + 7 : pos + 9], "big")
            return (w, h) if w and h else None  # height 0: defined later by a DNL marker, refused
        if length < 2:
            return None
        pos += 2 + length
    return None


def _webp_size(data: bytes) -> Optional[tuple[int, int]]:
    """The VP8X canvas and every top-level VP8 / VP8L frame's size; the largest of them counts."""
    sizes, pos, animated = [], 12, False
    while pos + 8 <= len(data) and len(sizes) < 16:
        fourcc, n = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = data[pos + 8 : pos + 8 + min(n, 32)]
        if fourcc == b"VP8X" and len(body) >= 10:
            animated = bool(body[0] & 0x02)
            sizes.append((1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little")))
        elif fourcc == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
            sizes.append((int.from_bytes(body[6:8], "little") & 0x3FFF, int.from_bytes(body[8:10], "little") & 0x3FFF))
        elif fourcc == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
            bits = int.from_bytes(body[1:5], "little")
            sizes.append((1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)))
        pos += 8 + n + (n & 1)  # chunks are padded to even sizes
    if animated:
        return (-1, -1)
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


def image_size(data: bytes, *, field: str = "image") -> tuple[int, int]:
    """(width, height) declared by a PNG, JPEG or WebP header; ``ValueError`` naming ``field`` for any
    other format or a header that does not say. Reads a few bytes; decodes nothing."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError(f"{field}: a PNG without its IHDR header (truncated or damaged)")
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(b"\xff\xd8\xff"):
        size = _jpeg_size(data)
        if size is None:
            raise ValueError(f"{field}: a JPEG whose header gives no frame size (truncated or damaged)")
        return size
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        size = _webp_size(data)
        if size == (-1, -1):
            raise ValueError(f"{field}: animated WebP is not accepted; send one still image (PNG, JPEG or WebP)")
        if size is None:
            raise ValueError(f"{field}: a WebP whose header gives no frame size (truncated or damaged)")
        return size
    raise ValueError(f"{field}: only PNG, JPEG and WebP images are accepted")


def encode_frame(frame: np.ndarray, fmt: str = "jpeg", quality: int = 85) -> bytes:
    """uint8 RGB [H, W, 3] -> JPEG or WebP bytes at ``quality`` (1..100)."""
    if fmt not in FRAME_FORMATS:
        raise ValueError(f"frame format {fmt!r}: choose one of {sorted(FRAME_FORMATS)} (--frame-format)")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"frame quality {quality}: must be in [1, 100] (--frame-quality)")
    flag = cv2.IMWRITE_JPEG_QUALITY if fmt == "jpeg" else cv2.IMWRITE_WEBP_QUALITY
    ok, buf = cv2.imencode(
        ".jpg" if fmt == "jpeg" else ".webp", np.ascontiguousarray(frame[:, :, ::-1]), [flag, int(quality)]
    )
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {fmt} frame of shape {frame.shape}")
    return buf.tobytes()


def pack_frame(image: bytes, *, n: int, chunk: int, fmt: str, replaces: bool = False) -> bytes:
    """Header + encoded image: one binary WebSocket message."""
    return _HEADER.pack(FRAME_MAGIC, n, chunk, int(bool(replaces)), FRAME_FORMATS[fmt], 0) + image


def unpack_frame(message: bytes) -> dict:
    """A binary frame message -> {n, chunk, replaces, format, image}; ``ValueError`` if it is not one."""
    if len(message) < FRAME_HEADER_BYTES or message[:4] != FRAME_MAGIC:
        raise ValueError(
            f"not a demo frame: a frame starts with {FRAME_MAGIC!r} and a {FRAME_HEADER_BYTES}-byte header"
        )
    _, n, chunk, flags, code, _ = _HEADER.unpack_from(message)
    names = {v: k for k, v in FRAME_FORMATS.items()}
    if code not in names:
        raise ValueError(f"frame format code {code}: known codes are {names}")
    return {
        "n": n,
        "chunk": chunk,
        "replaces": bool(flags & 1),
        "format": names[code],
        "image": message[FRAME_HEADER_BYTES:],
    }


class Recording:
    """The current stream's encoded frames by frame number, at most ``max_bytes`` of them: past the cap
    the oldest frames are let go (``dropped`` counts them) so a long session keeps its latest video.
    An edit's frames replace the ones with the same numbers; ``clear`` at every (re)start."""

    def __init__(self, max_bytes: int):
        if max_bytes < 1:
            raise ValueError(f"recording cap {max_bytes} bytes: must be >= 1 (--record-mb)")
        self.max_bytes = int(max_bytes)
        self.frames: dict[int, bytes] = {}
        self.nbytes = 0
        self.dropped = 0

    def clear(self) -> None:
        self.frames.clear()
        self.nbytes = self.dropped = 0

    def add(self, n: int, image: bytes) -> None:
        old = self.frames.pop(n, None)
        self.nbytes += len(image) - (len(old) if old is not None else 0)
        self.frames[n] = image
        while self.nbytes > self.max_bytes and len(self.frames) > 1:
            first = min(self.frames)
            self.nbytes -= len(self.frames.pop(first))
            self.dropped += 1

    def snapshot(self) -> list[bytes]:
        """The frames in order (references, not copies: taken on the event loop, encoded elsewhere)."""
        return [self.frames[n] for n in sorted(self.frames)]

    @staticmethod
    def mp4(images: list[bytes], *, fps: float, crf: int = 20, scale: int = 1) -> bytes:
        """Encoded frames -> H.264 mp4 bytes, decoding one frame at a time (odd sizes lose their last
        row / column: yuv420p needs even ones); ``scale`` > 1 upscales each frame (bicubic) for viewing."""
        from fractions import Fraction

        import av  # PyAV, as data.video_io.encode_mp4; frame by frame here, the recording can be long

        if not images:
            raise ValueError("nothing recorded yet: start a stream first")
        buf = io.BytesIO()
        with av.open(buf, mode="w", format="mp4") as container:
            stream = None
            for data in images:
                bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                if scale > 1:
                    size = (bgr.shape[1] * scale, bgr.shape[0] * scale)
                    bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_CUBIC)
                h, w = bgr.shape[0] & ~1, bgr.shape[1] & ~1
                if stream is None:
                    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                    stream.options = {"crf": str(crf), "preset": "veryfast"}
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr[:h, :w]), format="bgr24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():  # flush the delayed frames
                container.mux(packet)
        return buf.getvalue()
