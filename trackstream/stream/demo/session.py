"""One person's live stream: the student, their points as live tracks, their drags.

``DemoModel`` is loaded once per server (student export, codec, text encoder, the synthetic world
the scenes come from) and shared: its ``lock`` serialises the network's passes, so sessions take
turns chunk by chunk (on a 2-core CPU running them side by side only thrashes). ``Session`` is the
synchronous core of one connection (the server runs it in a worker thread):

* ``start``: a first frame (a scene or an upload) -> chunk 0 (the frame itself), with the points
  placed so far tagged on it (their track IDs enter the attention sink);
* ``points``: where each live point is now; ``next_chunk`` replays the points' timeline into this
  chunk's tracks at the speed they were moved (``LiveTracks``; pinned points stay). A point that
  appears mid-stream is first tagged on the content
  under it by re-committing the last chunk (``DragEditor.retrack``): a track ID means "this content";
* ``drag``: a DragStream instruction (``stream.drag``); the drag's points are held afterwards until
  the person touches their points again.

Track IDs: one pool per session (``Limits.max_points`` slots, one ID each for the whole stream) and a
disjoint set for drags, so a drag's pins never reuse an ID the person's points stand for.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from trackstream.data.synthetic import SyntheticWorld
from trackstream.data.video_io import image_tensor, to_uint8
from trackstream.models.tracks import sample_track_ids
from trackstream.stream.demo.protocol import Drag, Limits, Points, ProtocolError, Start
from trackstream.stream.drag.editor import DragEditor, DragResult
from trackstream.stream.drag.instructions import (
    BLOCK_LENGTH,
    DragInstruction,
    Rotation2D,
    Translation,
    resample_path,
    swept_box,
)
from trackstream.stream.drag.optimize import DragConfig
from trackstream.stream.engine import ChunkOutput, StreamingGenerator

__all__ = ["DemoModel", "Session", "LiveTracks", "world_for", "drag_instruction"]

DRAG_IDS = 256  # IDs reserved per session for drags (pins + an object's token centres)


def world_for(student: Path, height: int, width: int) -> SyntheticWorld:
    """The synthetic world the student was trained on, from the run's resolved ``config.yaml`` next to
    the export (``RUN/dmd/config.yaml`` for ``RUN/dmd/export/student``, or a shipped folder's), else the
    default world at the student's frame size."""
    from omegaconf import OmegaConf

    for cfg_path in (student.parent / "config.yaml", student.parent.parent / "config.yaml"):
        if cfg_path.is_file():
            data = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=True).get("data", {})
            world = {k: tuple(v) if isinstance(v, list) else v for k, v in (data.get("world") or {}).items()}
            return SyntheticWorld(
                **world,
                height=data.get("height", height),
                width=data.get("width", width),
                fps=data.get("fps", 16),
                num_frames=2,
            )
    return SyntheticWorld(height=height, width=width, num_frames=2, caption_motion=False)


class DemoModel:
    """The student and everything a session needs from it, loaded once."""

    def __init__(
        self,
        student: str | Path,
        codec: str | Path,
        *,
        codec_name: str = "tiny-ae",
        num_scenes: int = 8,
        scene_seed: int = 5000,
        device: str | None = "auto",
        dtype: str | None = "auto",
        compile: bool = False,
        offload_encoders: bool = False,
    ):
        """``codec``: the codec's weights as ``--codec`` takes them (a file, a Wan release folder or a
        TrackStream release folder: ``models.codecs.codec_checkpoint``). ``device`` / ``dtype``: "auto" is
        CUDA + bf16 when a GPU is present, else CPU + fp32 (``models.precision``); ``compile``: the
        engine's compiled streaming step."""
        from trackstream.models.codecs import codec_checkpoint
        from trackstream.models.conditioner import load_export
        from trackstream.models.precision import dtype_name, resolve_precision

        student = Path(student)
        if not (student / "network.json").is_file():
            raise ValueError(
                f"--student {student}: not a student export (no network.json); run `make run` first "
                "or pass assets/tiny-student/student"
            )
        codec = codec_checkpoint(codec_name, codec, field="--codec")  # a file or a release folder, named or refused
        dev, dt = resolve_precision(device, dtype)  # refuses cuda without a GPU, unknown dtypes (one line)
        self.device, self.dtype = str(dev), dtype_name(dt)
        net, codec_net, self.conditioner = load_export(
            student, codec_name=codec_name, codec=str(codec), device=dev, dtype=dt, offload_encoders=offload_encoders
        )
        # no device= here: the engine runs where load_export put the network
        self.engine = StreamingGenerator(
            net,
            codec_net,
            config=net.conventions.stream_config(str(student)),
            image_features_fn=self.conditioner.image_features,
            compile=compile,
        )
        self.compile = bool(compile)
        self.height, self.width = int(net.conventions.height), int(net.conventions.width)
        self.world = world_for(student, self.height, self.width)
        self.fps = int(self.world.fps)
        self.num_scenes, self.scene_seed = num_scenes, scene_seed
        self.has_track_head = net.track_encoder is not None
        self.lock = threading.Lock()  # one network pass at a time, whichever session asks
        self._scenes: dict[int, tuple[np.ndarray, str]] = {}
        self._text: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def scene(self, k: int) -> tuple[np.ndarray, str]:
        """Scene ``k``'s first frame (uint8 [H, W, 3]) and caption."""
        if k not in self._scenes:
            clip = self.world.generate(self.scene_seed + k)
            self._scenes[k] = (clip["frames"][0], clip["caption"])
        return self._scenes[k]

    def text(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        if prompt not in self._text:
            with torch.no_grad():
                self._text[prompt] = self.conditioner.text_encoder.encode([prompt])
        return self._text[prompt]

    @property
    def chunk_frames(self) -> int:
        """Pixel frames per chunk after the first."""
        lo, hi = self.engine.pixel_range(1)
        return hi - lo


class LiveTracks:
    """The person's points as a timeline, replayed into the video at the speed they were moved.

    Every ``update`` is a sample (time, positions, which slots are active / pinned). A chunk of T
    pixel frames advances a replay clock by T / fps and reads the positions at each frame's time
    (linear between samples), so a drag of 36 px made in 1.5 s moves 36 px over 1.5 s of video, wherever
    the chunk boundaries fall. The clock never passes the present (the positions hold until the next
    sample) and never lags it by more than ``max_lag`` seconds (older samples are skipped), so the
    video answers a gesture within one chunk plus the generation's lead. A pinned point holds the
    place where it was pinned.
    """

    GAP = 0.1  # seconds without a sample: the points were still (the page sends every 50 ms while moving)

    def __init__(self, slots: int, fps: float, *, max_lag: float = 2.0, max_samples: int = 256):
        self.slots, self.fps, self.max_lag = slots, float(fps), max_lag
        self.samples: deque = deque(maxlen=max_samples)  # (t, xy [S, 2], active [S], pinned [S])
        self.clock: Optional[float] = None
        self.tagged = np.zeros(slots, bool)  # its ID has been committed on content
        self.touched = False  # moved since the last drag
        self._lock = threading.Lock()  # updates arrive on the event loop while a chunk is computed

    def update(self, pts: Points, now: Optional[float] = None) -> None:
        now = time.perf_counter() if now is None else now
        with self._lock:
            xy = np.zeros((self.slots, 2), np.float32)
            active, pinned = np.zeros(self.slots, bool), np.zeros(self.slots, bool)
            xy[pts.ids], active[pts.ids], pinned[pts.ids] = pts.xy, True, pts.pinned
            if self.samples:  # a pinned point stays where it was pinned
                t0, xy0, act0, pin0 = self.samples[-1]
                if now - t0 > self.GAP:  # still until just before this move (the page sends while moving)
                    self.samples.append((now - self.GAP / 2, xy0, act0, pin0))
                hold = pinned & pin0 & act0
                xy[hold] = xy0[hold]
                self.tagged &= active  # a point let go must be tagged again if it comes back
            else:
                self.tagged[:] = False
            self.samples.append((now, xy, active, pinned))
            self.touched = True

    def untag_all(self) -> None:
        with self._lock:
            self.tagged[:] = False

    def _at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Positions [S, 2] and activity [S] at time ``t`` (linear between samples; a slot is active
        from the sample it appears in)."""
        times = [s[0] for s in self.samples]
        k = int(np.searchsorted(times, t, side="right"))  # samples[k - 1].t <= t < samples[k].t
        if k == 0:
            return self.samples[0][1], self.samples[0][2]
        t0, xy0, act0 = self.samples[k - 1][:3]
        if k == len(self.samples):
            return xy0, act0
        t1, xy1, act1 = self.samples[k][:3]
        u = (t - t0) / max(t1 - t0, 1e-9)
        both = act0 & act1
        return np.where(both[:, None], xy0 + u * (xy1 - xy0), xy0), act0

    def for_chunk(
        self, num_frames: int, *, now: Optional[float] = None, first: bool = False
    ) -> tuple[Optional[np.ndarray], Optional[np.ndarray], np.ndarray]:
        """(tracks [T, S, 2], visibility [T, S], slots to tag before this chunk) for the next chunk of
        ``num_frames`` pixel frames; (None, None, []) while there are no points."""
        now = time.perf_counter() if now is None else now
        with self._lock:
            if not self.samples or not self.samples[-1][2].any():
                self.clock = now
                return None, None, np.zeros(0, np.int64)
            if self.clock is None or self.clock < now - self.max_lag:
                self.clock = max(self.samples[0][0], now - self.max_lag) if self.clock is not None else now
            xy_c, act_c = self._at(self.clock)
            for t, xy, act, _ in self.samples:  # skip time in which nothing moved: replay from the motion
                if t > self.clock:
                    if not (np.array_equal(xy, xy_c) and np.array_equal(act, act_c)):
                        break
                    self.clock = min(t, now)
            times = [min(self.clock + (j + 1) / self.fps, now) for j in range(num_frames)]
            frames = [self._at(t) for t in times]
            self.clock = times[-1]
            while len(self.samples) > 1 and self.samples[1][0] <= self.clock:  # consumed: keep one before it
                self.samples.popleft()
            tracks = np.stack([f[0] for f in frames]).astype(np.float32)  # [T, S, 2]
            vis = np.stack([f[1] for f in frames])  # [T, S]
            seen = vis.any(axis=0)
            new = np.flatnonzero(seen & ~self.tagged) if not first else np.zeros(0, np.int64)
            self.tagged |= seen
            return tracks, vis, new


def drag_instruction(d: Drag, *, height: int, width: int, token: int, prompt: str) -> DragInstruction:
    """A demo drag -> a ``DragInstruction``: the path resampled to one point per steered latent frame
    (DragStream's GUI), or a rotation about ``center`` in equal steps; the editable area is the box the
    object sweeps, grown by one token."""
    steps = 1 if d.mode == "edit" else BLOCK_LENGTH * d.chunks
    ys, xs = np.nonzero(d.mask)
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    if d.kind == "translate":
        traj = Translation(points=resample_path(d.path, steps + 1), control_points=np.asarray(d.path, np.float64))
    else:
        centre = np.asarray(d.center, np.float64)
        start = pts.mean(axis=0)
        if np.linalg.norm(start - centre) < 1:  # grabbed at the centre: the arm points right
            start = centre + np.array([max(2.0, (xs.max() - xs.min()) / 2), 0.0])
        traj = Rotation2D.about(centre, start, d.degrees, steps)
    editable = swept_box(traj, pts, height=height, width=width, margin=token)
    return DragInstruction(
        mode=d.mode,
        trajectories=[traj],
        object_masks=[np.asarray(d.mask, bool)],
        editable=editable | d.mask,
        num_chunks=d.chunks if d.mode == "animate" else 1,
        prompt=prompt,
    )


@dataclass
class Emitted:
    """Frames to send (uint8 [T, H, W, 3]) from chunk ``index``, starting at pixel frame ``start``."""

    index: int
    frames: np.ndarray
    start: int
    seconds: float
    replaces: bool = False  # an edit: these frame numbers were sent before


class Session:
    """The synchronous core of one connection (see the module's docstring)."""

    def __init__(self, model: DemoModel, limits: Limits, *, seed: int = 0, drag_config: DragConfig = DragConfig()):
        self.model, self.limits, self.seed = model, limits, seed
        self.editor = DragEditor(model.engine, drag_config)
        ids = sample_track_ids(1, limits.max_points + DRAG_IDS, generator=torch.Generator().manual_seed(seed))
        self.pool, self.drag_ids = ids[:, : limits.max_points], ids[:, limits.max_points :]
        self.live = LiveTracks(limits.max_points, model.fps)
        self.image: Optional[np.ndarray] = None
        self.prompt = ""
        self.last_tracks: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # the last chunk's, for retrack
        self.holding = False  # after a drag: its points are held until the person moves theirs

    @property
    def started(self) -> bool:
        return self.editor.state is not None

    @property
    def chunk(self) -> int:
        return self.editor.state.chunk if self.started else 0

    def start(self, msg: Optional[Start] = None) -> Emitted:
        """A new stream (``msg`` None: the same first frame again, i.e. restart)."""
        if msg is not None:
            if msg.scene is not None:
                self.image, caption = self.model.scene(msg.scene)
            else:
                self.image, caption = msg.image, ""
            self.prompt = msg.prompt if msg.prompt is not None else caption
        if self.image is None:
            raise ProtocolError("nothing to restart: start a stream first (a scene or an image)")
        image = image_tensor(self.image)
        text, lens = self.model.text(self.prompt)
        self.live.untag_all()
        self.holding = False
        tracks, vis, _ = self.live.for_chunk(1, first=True)
        kw = (
            {}
            if tracks is None
            else {"tracks": torch.from_numpy(tracks)[None], "visibility": torch.from_numpy(vis)[None]}
        )
        t0 = time.perf_counter()
        out = self.editor.start(
            image, text, lens, track_ids=self.pool if self.model.has_track_head else None, seed=self.seed, **kw
        )
        self.last_tracks = (kw["tracks"], kw["visibility"]) if kw else None
        return self._emitted(out, time.perf_counter() - t0)

    def points(self, msg: Points) -> None:
        if not self.model.has_track_head:
            raise ProtocolError("this student has no track head: points cannot steer it (use drag with method latent)")
        self.live.update(msg)

    def next_chunk(self) -> Emitted:
        if not self.started:
            raise ProtocolError("start a stream first")
        t0 = time.perf_counter()
        if self.holding and self.live.touched:  # back to the person's points: their IDs, tagged again
            self.holding = False
            self.editor.use_track_ids(self.pool)
            self.live.untag_all()
            self.last_tracks = None
        if self.holding:
            held = self.editor.held_tracks()
            out = self.editor.step(*(held if held is not None else ()))
            return self._emitted(out, time.perf_counter() - t0)
        lo, hi = self.model.engine.pixel_range(self.chunk)
        tracks, vis, new = self.live.for_chunk(hi - lo)
        if len(new):  # tagged where each first shows up in this chunk
            self._tag(new, tracks[vis.argmax(axis=0), np.arange(tracks.shape[1])])
        if tracks is None:
            out, self.last_tracks = self.editor.step(), None
        else:
            self.last_tracks = (torch.from_numpy(tracks)[None], torch.from_numpy(vis)[None])
            out = self.editor.step(*self.last_tracks)
        return self._emitted(out, time.perf_counter() - t0)

    def _tag(self, slots: np.ndarray, where: np.ndarray) -> None:
        """Re-commit the last chunk with ``slots`` visible on its last frame at ``where`` [S, 2]."""
        rec = self.editor.history[-1]
        lo, hi = self.model.engine.pixel_range(rec.before.chunk)
        S = self.limits.max_points
        if self.last_tracks is not None and self.last_tracks[0].shape[1] == hi - lo:
            tracks, vis = self.last_tracks[0][0].clone(), self.last_tracks[1][0].clone()
        else:
            tracks, vis = torch.zeros(hi - lo, S, 2), torch.zeros(hi - lo, S, dtype=torch.bool)
        tracks[:, slots] = torch.from_numpy(where[slots]).float()
        vis[:, slots] = False
        vis[-1, slots] = True
        self.editor.retrack(tracks[None], vis[None])

    def drag(self, d: Drag) -> tuple[list[Emitted], DragResult]:
        if not self.started:
            raise ProtocolError("start a stream first")
        instr = drag_instruction(
            d, height=self.model.height, width=self.model.width, token=self.editor.token, prompt=self.prompt
        )
        t0 = time.perf_counter()
        if self.model.has_track_head:
            self.editor.use_track_ids(self.drag_ids)
        try:
            result = self.editor.drag(
                instr, method=d.method, config=replace(self.editor.config, iterations=d.iterations)
            )
        except ValueError:
            if self.model.has_track_head:
                self.editor.use_track_ids(self.pool)
            raise
        seconds = time.perf_counter() - t0
        self.holding, self.live.touched = True, False
        per = seconds / len(result.chunks)
        return [self._emitted(c, per, replaces=d.mode == "edit") for c in result.chunks], result

    @staticmethod
    def _emitted(out: ChunkOutput, seconds: float, *, replaces: bool = False) -> Emitted:
        return Emitted(
            index=out.index,
            frames=to_uint8(out.frames[0]),
            start=out.pixel_range[0],
            seconds=seconds,
            replaces=replaces,
        )
