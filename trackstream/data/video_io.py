"""Video encoding/decoding helpers shared by the synthetic world, the shard pipeline and the loaders.

Design:
* Decoding goes through decord (fast seeking, reads from a path or from in-memory bytes). decord's
  bundled FFmpeg 4.1 cannot read AV1, so a decode failure is reported as a `VideoDecodeError` the
  pipeline can record, never as a crash of the whole job.
* Encoding goes through PyAV + libx264 (OpenCV's `avc1` writer needs an H.264 encoder its pip wheels do not bundle, and
  imageio's default mp4 writer fails without imageio-ffmpeg: ``TypeError: expected bytes, NoneType found``).
  x264 output is deterministic for fixed settings, which the resumable pipeline relies on
  (re-running a shard must give byte-identical tars).
* Frame-rate conversion is nearest-frame resampling on the source timeline (no interpolation), so
  tracks computed on the resampled frames stay exact for those frames.
* Tensor convention for every stage: float32 [3, T, H, W] in [-1, 1]; uint8 arrays are [T, H, W, 3].
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from trackstream.data.framing import fit_frames


class VideoDecodeError(RuntimeError):
    """Raised when a video cannot be opened or decoded (corrupt, truncated, empty, unsupported)."""


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    height: int
    width: int


def encode_mp4(frames: np.ndarray, *, fps: float, crf: int = 18, preset: str = "medium") -> bytes:
    """Encode uint8 frames [T, H, W, 3] (RGB) to mp4 (H.264, yuv420p) bytes."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        # yuv420p subsamples chroma by 2 in both directions; x264 refuses odd sizes.
        raise ValueError(f"mp4/yuv420p needs even height and width, got {h}x{w}; crop or resize first")
    import av  # local import: PyAV is only needed when writing videos

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=_fps_fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # x264's macroblock-tree rate control makes the same frames encode differently from call to call
        # (measured on 64x64 streams: up to 35 grey levels apart after decoding), so a seeded video would not
        # reproduce; without it the bytes depend on the frames alone
        stream.options = {"crf": str(crf), "preset": preset, "x264-params": "mbtree=0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush delayed frames
            container.mux(packet)
    return buf.getvalue()


def write_mp4(path: str | os.PathLike, frames: np.ndarray, *, fps: float, crf: int = 18) -> None:
    """Write uint8 frames [T, H, W, 3] to an mp4 file."""
    with open(path, "wb") as f:
        f.write(encode_mp4(frames, fps=fps, crf=crf))


def _fps_fraction(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)


def _open_reader(source: str | os.PathLike | bytes):
    import decord

    try:
        if isinstance(source, (bytes, bytearray)):
            if len(source) == 0:
                raise VideoDecodeError("empty video bytes")
            return decord.VideoReader(io.BytesIO(source), num_threads=1)
        if os.path.getsize(source) == 0:
            raise VideoDecodeError("empty file")
        path = os.fspath(source)
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:  # a name that is not UTF-8 (decord takes UTF-8 paths): read the bytes
            with open(path, "rb") as f:
                return decord.VideoReader(io.BytesIO(f.read()), num_threads=1)
        return decord.VideoReader(path, num_threads=1)
    except VideoDecodeError:
        raise
    except Exception as e:  # decord raises DECORDError/RuntimeError with FFmpeg messages
        raise VideoDecodeError(f"cannot open video: {type(e).__name__}: {_short(e)}") from e


def probe_video(source: str | os.PathLike | bytes) -> VideoInfo:
    """Frame count, average fps and size of a video without decoding its frames."""
    reader = _open_reader(source)
    h, w = reader[0].shape[:2] if len(reader) else (0, 0)
    return VideoInfo(num_frames=len(reader), fps=float(reader.get_avg_fps()), height=h, width=w)


def resample_indices(num_src: int, src_fps: float, dst_fps: float, *, max_frames: int | None = None) -> np.ndarray:
    """Source frame indices that best match a dst_fps timeline (nearest frame in time).

    Output frame k sits at time k / dst_fps; it takes the source frame displayed at that time. The
    last usable output time is the last source frame's timestamp, so no frame is invented.
    """
    if not (src_fps > 0 and math.isfinite(src_fps)) or dst_fps <= 0:
        raise ValueError(f"fps must be positive and finite, got src_fps={src_fps}, dst_fps={dst_fps}")
    if num_src <= 0:
        return np.zeros(0, dtype=np.int64)
    duration = (num_src - 1) / src_fps
    count = int(math.floor(duration * dst_fps + 1e-6)) + 1
    if max_frames is not None:
        count = min(count, max_frames)
    idx = np.floor(np.arange(count) * src_fps / dst_fps + 0.5 + 1e-9).astype(np.int64)
    return np.clip(idx, 0, num_src - 1)


def decode_video(
    source: str | os.PathLike | bytes,
    *,
    fps: float | None = None,
    max_frames: int | None = None,
    start: int = 0,
) -> tuple[np.ndarray, VideoInfo]:
    """Decode to uint8 [T, H, W, 3]; with `fps`, resample to that frame rate first. `start`: the first
    frame (of the resampled timeline) to decode, so a long video can be read a window at a time.

    Raises VideoDecodeError for unreadable input, including truncated files whose frame index
    promises more frames than the bitstream holds.
    """
    reader = _open_reader(source)
    n, src_fps = len(reader), float(reader.get_avg_fps())
    if n == 0:
        raise VideoDecodeError("video has no frames")
    stop = None if max_frames is None else start + max_frames
    if fps is None:
        idx = np.arange(n if stop is None else min(n, stop))
    else:
        idx = resample_indices(n, src_fps, fps, max_frames=stop)
    idx = idx[start:]
    if not len(idx):
        raise VideoDecodeError(f"no frame from frame {start} on")
    try:
        frames = reader.get_batch(idx.tolist()).asnumpy()
    except Exception as e:
        raise VideoDecodeError(f"cannot decode frames: {type(e).__name__}: {_short(e)}") from e
    if frames.shape[0] != len(idx):
        raise VideoDecodeError(f"decoded {frames.shape[0]} frames, expected {len(idx)} (truncated?)")
    info = VideoInfo(num_frames=n, fps=src_fps, height=frames.shape[1], width=frames.shape[2])
    return frames, info


def resize_center_crop(frames: np.ndarray, *, height: int, width: int) -> np.ndarray:
    """Scale uint8 [T, H, W, 3] so it covers (height, width), then crop the centre: ``data.framing``'s
    "crop" rule, the one every command fits frames by."""
    return fit_frames(frames, height=height, width=width, mode="crop")


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 [3, T, H, W] in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # [3, T, H, W]
    return x.float().div_(127.5).sub_(1.0)


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """float [3, T, H, W] in [-1, 1] -> uint8 [T, H, W, 3] (rounded, clamped)."""
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"video must be [3, T, H, W], got {tuple(video.shape)}")
    x = ((video.detach().float().cpu() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous().numpy()


def _short(e: Exception, limit: int = 200) -> str:
    msg = " ".join(str(e).split())
    return msg[:limit]


def from_uint8(x) -> torch.Tensor:
    """uint8 pixels (numpy or tensor, any layout) -> float in [-1, 1], the same layout: the one conversion."""
    x = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    return x.float() / 127.5 - 1


def image_tensor(frame: np.ndarray) -> torch.Tensor:
    """One uint8 frame [H, W, 3] (RGB) -> [1, 3, H, W] float in [-1, 1] (a stream's first frame)."""
    return from_uint8(frame).permute(2, 0, 1)[None]


def video_tensor(frames) -> torch.Tensor:
    """uint8 video [T, H, W, 3] or videos [B, T, H, W, 3] (RGB) -> [B, 3, T, H, W] float in [-1, 1]."""
    x = from_uint8(frames)
    return (x[None] if x.ndim == 4 else x).permute(0, 4, 1, 2, 3)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """[3, T, H, W] in [-1, 1] -> [T, H, W, 3] uint8."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).cpu().numpy()
