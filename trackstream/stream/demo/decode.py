"""An uploaded first frame decoded only after its size is known and agreed on, within pixel caps.

Two readers look at the header before any pixel is decoded: ``media.image_size`` (our own walk of the
PNG / JPEG / WebP header) and Pillow's ``Image.open`` (lazy: it parses the header and allocates
nothing). The decoder that then runs is Pillow's, and it fills exactly the size its own header parse
reported, so the size checked is the size allocated. If the two readers disagree the upload is refused
(a file crafted to say one size to one reader and another to the decoder is exactly the attack), and
after decoding the size is checked once more.

Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale when that still covers the stream's frame
(``Image.draft``: libjpeg's DCT scaling), so a 4000x3000 photo costs what a 500x375 one does.

Time: the server runs ``decode_image`` in its one decode worker with a deadline (``Limits.decode_seconds``);
the pixel caps bound how long one decode can take (tests/test_demo_limits.py measures it).
"""

from __future__ import annotations

import asyncio
import functools
import io
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np

from trackstream.stream.demo.media import image_size

__all__ = ["ProtocolError", "DecodeWorker", "decode_image", "probe_image"]

_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}


class ProtocolError(ValueError):
    """A refused client message; ``str`` is what the client is told. Defined here, below ``protocol``,
    because an undecodable upload is the first refusal a message can meet."""


def probe_image(
    data: bytes, *, max_side: int, max_pixels: Optional[int] = None, field: str = "image"
) -> tuple[int, int, str]:
    """(width, height, format) of an upload whose two header readers agree and that fits the caps;
    ``ProtocolError`` naming ``field`` otherwise. Decodes nothing."""
    from PIL import Image

    try:
        w, h = image_size(data, field=field)
    except ValueError as e:
        raise ProtocolError(str(e)) from None
    if max(w, h) > max_side:
        raise ProtocolError(
            f"{field} is {w}x{h}; at most {max_side} pixels a side (Limits.max_image_side): scale it down first"
        )
    max_pixels = max_side * max_side if max_pixels is None else max_pixels
    if w * h > max_pixels:
        raise ProtocolError(
            f"{field} is {w}x{h} = {w * h / 1e6:.1f} MP; at most {max_pixels / 1e6:.1f} MP "
            "(Limits.max_image_pixels): scale it down first"
        )
    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: our caps are far below it
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - any header Pillow cannot read is refused the same way
        raise ProtocolError(f"{field} could not be decoded (not a readable PNG, JPEG or WebP)") from None
    fmt = _FORMATS.get(im.format or "")
    if fmt is None:
        raise ProtocolError(f"{field}: only PNG, JPEG and WebP images are accepted")
    if getattr(im, "n_frames", 1) != 1:
        raise ProtocolError(f"{field}: animated images are not accepted; send one still image")
    if im.size != (w, h):
        raise ProtocolError(
            f"{field}: its header says {w}x{h} but the decoder reads {im.size[0]}x{im.size[1]}; "
            "a damaged or crafted file is refused"
        )
    return w, h, fmt


def decode_image(
    data: bytes, *, height: int, width: int, max_side: int, max_pixels: Optional[int] = None, field: str = "image"
) -> np.ndarray:
    """PNG / JPEG / WebP bytes -> uint8 [height, width, 3] RGB (scaled to cover the stream's frame, the
    centre kept: ``data.framing``'s crop), decoded only after ``probe_image`` agreed on the size."""
    from PIL import Image

    from trackstream.data.framing import fit_frames

    w, h, fmt = probe_image(data, max_side=max_side, max_pixels=max_pixels, field=field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            if fmt == "jpeg":  # DCT-domain downscale, at most to the frame's size (never below it)
                im.draft("RGB", (width, height))
            im = im.convert("RGB")  # decodes: exactly im.size pixels
    except Exception:  # noqa: BLE001 - truncated data, a broken stream: refused, the server goes on
        raise ProtocolError(f"{field} could not be decoded (truncated or damaged)") from None
    if im.size[0] > w or im.size[1] > h:  # draft may only shrink; anything else is a decoder surprise
        raise ProtocolError(f"{field}: decoded at {im.size[0]}x{im.size[1]}, more than its header's {w}x{h}")
    # the one fitting rule of every command (data.framing's crop: scale to cover, keep the centre)
    return np.ascontiguousarray(fit_frames(np.asarray(im), height=height, width=width, mode="crop"))


class DecodeWorker:
    """The server's one thread that decodes uploads: at most ``Limits.decode_queue`` at once in it
    (running or waiting), each answered within ``Limits.decode_seconds`` or refused. A decode that
    outlives its deadline finishes in the worker (a thread cannot be stopped) but still counts against
    the queue until it does, so a stream of slow uploads cannot pile work up behind it."""

    def __init__(self, limits):
        self.limits = limits
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-decode")
        self.in_flight = 0
        self.timeouts = 0

    async def run(self, fn, *args, **kwargs):
        if self.in_flight >= self.limits.decode_queue:
            raise ProtocolError(
                f"the server is decoding {self.in_flight} other uploads (Limits.decode_queue): try again in a moment"
            )
        self.in_flight += 1
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

        def done(_):
            self.in_flight -= 1

        fut.add_done_callback(done)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.limits.decode_seconds)
        except asyncio.TimeoutError:
            self.timeouts += 1
            fut.add_done_callback(lambda f: f.exception())  # its late result is dropped, quietly
            raise ProtocolError(
                f"the image took over {self.limits.decode_seconds:g} s to decode (Limits.decode_seconds): "
                "send a smaller one"
            ) from None
