"""One person's live stream: the student, their points as live tracks, their drags.

``DemoModel`` is loaded once per server (student export, codec, text encoder, the synthetic world
the scenes come from) and shared: its ``lock`` serialises the network's passes, so sessions take
turns chunk by chunk (on a 2-core CPU running them side by side only thrashes). ``Session`` is the
synchronous core of one connection (the server runs it in a worker thread):

* ``start``: a first frame (a scene or an upload) -> chunk 0 (the frame itself), with the points
  placed so far tagged on it (their track IDs enter the attention sink);
* ``points``: where each live point is now; ``next_chunk`` turns the motion since the last chunk into
  this chunk's tracks (each point moves linearly from where it was at the end of the last chunk to
  where it is now; pinned points stay). A point that appears mid-stream is first tagged on the content
  under it by re-committing the last chunk (``DragEditor.retrack``): a track ID means "this content";
* ``drag``: a DragStream instruction (``stream.drag``); the drag's points are held afterwards until
  the person touches their points again.

Track IDs: one pool per session (``Limits.max_points`` slots, one ID each for the whole stream) and a
disjoint set for drags, so a drag's pins never reuse an ID the person's points stand for.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from data.synthetic import SyntheticWorld
from data.video_io import to_uint8
from models.tracks import sample_track_ids
from stream.demo.protocol import Drag, Limits, Points, ProtocolError, Start
from stream.drag.editor import DragEditor, DragResult
from stream.drag.instructions import BLOCK_LENGTH, DragInstruction, Rotation2D, Translation, resample_path
from stream.drag.optimize import DragConfig
from stream.engine import ChunkOutput, StreamingGenerator

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
            return SyntheticWorld(**world, height=data.get("height", height), width=data.get("width", width),
                                  fps=data.get("fps", 16), num_frames=2)
    return SyntheticWorld(height=height, width=width, num_frames=2, caption_motion=False)


class DemoModel:
    """The student and everything a session needs from it, loaded once."""

    def __init__(self, student: str | Path, codec: str | Path, *, codec_name: str = "tiny-ae",
                 num_scenes: int = 8, scene_seed: int = 5000, device: str = "cpu"):
        from models.conditioner import load_export
        from stream.chunks import StreamConfig

        student = Path(student)
        if not (student / "network.json").is_file():
            raise ValueError(f"--student {student}: not a student export (no network.json); run `make run` first "
                             "or pass assets/tiny-student/student")
        if not Path(codec).is_file():
            raise ValueError(f"--codec {codec}: no such file (the student's codec checkpoint)")
        net, codec_net, self.conditioner = load_export(student, codec_name=codec_name, codec=str(codec), device=device)
        if net.conventions.streaming is None:
            raise ValueError(f"--student {student}: network.json records no streaming configuration (a teacher?)")
        self.engine = StreamingGenerator(net, codec_net, config=StreamConfig.of(net.conventions.streaming),
                                         device=device, image_features_fn=self.conditioner.image_features)
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
    """The person's points: slot -> (where it is now, where it was at the end of the last chunk)."""

    def __init__(self, slots: int):
        self.now = np.zeros((slots, 2), np.float32)
        self.last = np.zeros((slots, 2), np.float32)
        self.active = np.zeros(slots, bool)
        self.pinned = np.zeros(slots, bool)
        self.tagged = np.zeros(slots, bool)  # its ID has been committed on content
        self.touched = False  # moved since the last drag
        self._lock = threading.Lock()  # updates arrive on the event loop while a chunk is computed

    def update(self, pts: Points) -> None:
        with self._lock:
            active = np.zeros_like(self.active)
            active[pts.ids] = True
            appeared = active & ~self.active
            self.now[pts.ids] = pts.xy
            self.last[appeared] = self.now[appeared]  # a new point starts where it was dropped
            self.tagged &= active  # a point let go must be tagged again if it comes back
            self.active, self.pinned[pts.ids] = active, pts.pinned
            self.touched = True

    def untag_all(self) -> None:
        with self._lock:
            self.tagged[:] = False

    def for_chunk(self, num_frames: int, *, first: bool = False) -> tuple[Optional[np.ndarray], Optional[np.ndarray], np.ndarray]:
        """(tracks [T, S, 2], visibility [T, S], slots to tag first) for the next chunk of ``num_frames``
        pixel frames, and the positions now become the chunk's end; (None, None, []) without points."""
        with self._lock:
            if not self.active.any():
                return None, None, np.zeros(0, np.int64)
            new = np.flatnonzero(self.active & ~self.tagged) if not first else np.zeros(0, np.int64)
            goal = np.where(self.pinned[:, None], self.last, self.now)
            u = (np.arange(1, num_frames + 1, dtype=np.float32) / num_frames)[:, None, None]  # [T, 1, 1]
            tracks = self.last[None] + u * (goal - self.last)[None]  # [T, S, 2]
            vis = np.repeat(self.active[None], num_frames, axis=0)
            self.last = goal.astype(np.float32)
            self.tagged |= self.active
            return tracks.astype(np.float32), vis, new

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return self.last.copy(), self.active.copy()


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
        arms = []
        for k in range(1, steps + 1):  # clockwise on screen for positive degrees (x right, y down)
            a = np.radians(d.degrees * k / steps)
            v = start - centre
            arms.append(centre + [np.cos(a) * v[0] - np.sin(a) * v[1], np.sin(a) * v[0] + np.cos(a) * v[1]])
        traj = Rotation2D(center=centre, start=start, arms=np.asarray(arms))
    swept = np.concatenate([pts] + [traj.displace(pts, k) for k in range(1, steps + 1)])
    x0, y0 = np.floor(swept.min(axis=0) - token + 1e-6).astype(int)  # 1e-6: the resampled path's float error
    x1, y1 = np.ceil(swept.max(axis=0) + token - 1e-6).astype(int)
    editable = np.zeros((height, width), bool)
    editable[max(y0, 0):min(y1, height - 1) + 1, max(x0, 0):min(x1, width - 1) + 1] = True
    return DragInstruction(mode=d.mode, trajectories=[traj], object_masks=[np.asarray(d.mask, bool)],
                           editable=editable | d.mask, num_chunks=d.chunks if d.mode == "animate" else 1, prompt=prompt)


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
        self.pool, self.drag_ids = ids[:, :limits.max_points], ids[:, limits.max_points:]
        self.live = LiveTracks(limits.max_points)
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
        image = torch.from_numpy(self.image).permute(2, 0, 1)[None].float() / 127.5 - 1
        text, lens = self.model.text(self.prompt)
        self.live.untag_all()
        self.holding = False
        tracks, vis, _ = self.live.for_chunk(1, first=True)
        kw = {} if tracks is None else {"tracks": torch.from_numpy(tracks)[None], "visibility": torch.from_numpy(vis)[None]}
        t0 = time.perf_counter()
        out = self.editor.start(image, text, lens, track_ids=self.pool if self.model.has_track_head else None,
                                seed=self.seed, **kw)
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
        if len(new):
            self._tag(new, tracks[0])
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
        instr = drag_instruction(d, height=self.model.height, width=self.model.width, token=self.editor.token,
                                 prompt=self.prompt)
        t0 = time.perf_counter()
        if self.model.has_track_head:
            self.editor.use_track_ids(self.drag_ids)
        try:
            result = self.editor.drag(instr, method=d.method, config=replace(self.editor.config, iterations=d.iterations))
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
        return Emitted(index=out.index, frames=to_uint8(out.frames[0]), start=out.pixel_range[0], seconds=seconds,
                       replaces=replaces)
