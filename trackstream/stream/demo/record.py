"""A person's stream as data: what each chunk was made from, recorded as the demo makes it, replayed to the same
frames (``stream.demo.session.replay``, ``trackstream generate --session FILE``).

A session (``stream.demo.session.Session``) records every call that reaches the stream, in order: the start (the
first frame as streamed, the prompt, the seed), each chunk's tracks as the live points made them (``LiveTracks``'
replay of the person's gestures, camera moves included: the tracks, their visibility and the slots tagged
before it), whether the chunk held a drag's points or let them go, prompt changes, drags (the instruction with
its mask) and restarts. Timing does not enter: a replay is the same engine calls with the same inputs, so it
makes the same frames (on the same kind of device and dtype) wherever and whenever it runs.

The file (``SessionRecord.to_bytes``): an ``.npz`` with no pickle, ``events`` (UTF-8 JSON: a header, then one
entry per call, array fields named) and the arrays. ``GET /session/<token>`` answers the live session's, and the
page's "Save video" saves it beside the mp4.
"""

from __future__ import annotations

import io
import json
import os
from collections import deque
from pathlib import Path
from typing import Optional, Union

import numpy as np

__all__ = ["SessionRecord", "RecordedTracks", "session_tracks", "FORMAT"]

FORMAT = "trackstream-session/1"


class SessionRecord:
    """The calls a session made, in order (see the module docstring)."""

    def __init__(self, header: Optional[dict] = None):
        self.header = dict(header or {})
        self.events: list[dict] = []
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, kind: str, arrays: Optional[dict] = None, **fields) -> None:
        """One call: its ``fields`` (JSON values) and ``arrays`` (stored by name; None left out)."""
        event = {"kind": kind, **fields}
        for name, value in (arrays or {}).items():
            if value is None:
                continue
            key = f"{len(self.events)}_{name}"
            self.arrays[key] = np.asarray(value)
            event[name] = key
        self.events.append(event)

    def array(self, event: dict, name: str) -> Optional[np.ndarray]:
        return self.arrays[event[name]] if name in event else None

    def clear(self) -> None:
        self.events, self.arrays = [], {}

    def to_bytes(self) -> bytes:
        text = json.dumps({"format": FORMAT, **self.header, "events": self.events})
        buf = io.BytesIO()
        np.savez_compressed(buf, events=np.frombuffer(text.encode(), np.uint8), **self.arrays)
        return buf.getvalue()

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "SessionRecord":
        """A saved session; anything else is a one-line ValueError naming the file."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                doc = json.loads(bytes(f["events"]).decode())
                arrays = {k: f[k] for k in f.files if k != "events"}
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
            raise ValueError(
                f"--session {path}: not a saved demo session ({type(err).__name__}: {str(err)[:80]}); the page's "
                "Save video writes one (trackstream-session.npz)"
            ) from None
        if doc.get("format") != FORMAT:
            raise ValueError(f"--session {path}: format {doc.get('format')!r}, this version reads {FORMAT!r}")
        out = cls({k: v for k, v in doc.items() if k not in ("format", "events")})
        out.events, out.arrays = doc["events"], arrays
        return out


class RecordedTracks:
    """``LiveTracks`` in a replay: each chunk gets the tracks its recording says it got."""

    def __init__(self):
        self.queue: deque = deque()
        self.touched = False

    def push(self, tracks, vis, new) -> None:
        self.queue.append((tracks, vis, np.zeros(0, np.int64) if new is None else np.asarray(new, np.int64)))

    def for_chunk(self, num_frames: int, *, now=None, first: bool = False):
        tracks, vis, new = self.queue.popleft()
        assert tracks is None or tracks.shape[0] == num_frames, "the replay's chunks are the recording's"
        return tracks, vis, new

    def untag_all(self) -> None:
        """Nothing to do: which slots a chunk tags is part of its recording (``new``)."""

    def update(self, *_args, **_kw) -> None:
        raise AssertionError("a replay takes no live points")


def session_tracks(record: SessionRecord, out: Union[str, os.PathLike]) -> list[Path]:
    """The tracks the session's points made, as one track file of its frames (``.npy`` [T, S, 2] pixel (x, y) with
    ``<out>.visibility.npy`` [T, S]; ``.pt``: FastVideo's): each slot a track, invisible where it was let go, in a
    drag's chunks (those follow the drag) and after the last chunk made from points. ``generate`` reads it."""
    from trackstream.data.track_inputs import write_fastvideo_tracks

    h, spans = record.header, []
    for ev in record.events:
        if ev["kind"] == "start":
            spans = []
        tracks = record.array(ev, "tracks")
        if tracks is not None:
            spans.append((int(ev.get("frame", 0)), tracks, record.array(ev, "visibility")))
    if not spans:
        raise ValueError("the session made no chunk from points: it has no tracks to write")
    T, S = max(f + len(t) for f, t, _ in spans), int(h["max_points"])
    tracks, vis = np.zeros((T, S, 2), np.float32), np.zeros((T, S), bool)
    for f, t, v in spans:
        tracks[f : f + len(t), : t.shape[1]], vis[f : f + len(t), : t.shape[1]] = t, v
    out = Path(out)
    if out.suffix == ".pt":
        write_fastvideo_tracks(out, tracks, vis, height=int(h["height"]), width=int(h["width"]))
        return [out]
    np.save(out, tracks)
    side = out.with_name(out.name.removesuffix(".npy") + ".visibility.npy")
    np.save(side, vis)
    return [out, side]
