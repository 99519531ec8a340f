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

import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from trackstream.data.placements import Placement, placement_from
from trackstream.data.synthetic import SyntheticWorld
from trackstream.data.video_io import image_tensor, to_uint8
from trackstream.models.tracks import sample_track_ids
from trackstream.stream.chunk_io import ChunkOutput
from trackstream.stream.demo.decode import ProtocolError
from trackstream.stream.demo.limits import Limits
from trackstream.stream.demo.live import LiveTracks, camera_move
from trackstream.stream.demo.protocol import Camera, Drag, Points, Prompt, Start
from trackstream.stream.demo.record import RecordedTracks, SessionRecord
from trackstream.stream.drag.editor import DragEditor, DragResult
from trackstream.stream.drag.geometry import resample_path
from trackstream.stream.drag.instructions import BLOCK_LENGTH, DragInstruction, Rotation2D, Translation, swept_box
from trackstream.stream.drag.optimize import DragConfig
from trackstream.stream.engine import StreamingGenerator
from trackstream.stream.trained_world import photo_notice, trained_world

__all__ = [
    "DemoModel",
    "Session",
    "replay",
    "world_for",
    "drag_instruction",
    "StartPoints",
    "start_points",
    "fit_spacing",
    "grid_hello",
]

DRAG_IDS = 256  # IDs reserved per session for drags (pins + an object's token centres)
GRID_SIDE = 8  # the Grid button's default spacing: the shorter side / 8 (the page's old 8x8 grid), within the range


SCENE_SEED = 5000  # the page's scene k: the world's clip of seed SCENE_SEED + k (scene_clip)


def world_for(network, height: int, width: int) -> SyntheticWorld:
    """The synthetic world ``network`` (a ``models.network.Network`` or its folder) was trained on, from its run's
    resolved config (``RUN/dmd/config.yaml`` for ``RUN/dmd/export/student``, or a shipped folder's), else the
    default world at the student's frame size."""
    from trackstream.models.network import Network

    network = Network.of(network, "--student")
    data = network.recorded("data")
    if network.config_path is not None and isinstance(data, dict):
        world = {k: tuple(v) if isinstance(v, list) else v for k, v in (data.get("world") or {}).items()}
        return SyntheticWorld(
            **world,
            height=data.get("height", height),
            width=data.get("width", width),
            fps=data.get("fps", 16),
            num_frames=2,
        )
    return SyntheticWorld(height=height, width=width, num_frames=2, caption_motion=False)


def scene_clip(network, k: int, *, scene_seed: int = SCENE_SEED) -> dict:
    """The page's scene ``k``: the clip of ``network``'s training world (``world_for``) of seed ``scene_seed + k``,
    as long as a clip it was trained on (its recorded ``num_frames``; the world's draws depend on the length, so
    this is the one length a scene has). Its frame 0 is what the page shows; ``trackstream inputs --scene k`` writes
    the clip's first frame, its exact tracks and its caption."""
    from trackstream.models.network import Network

    network = Network.of(network, "--student")
    conv = network.conventions
    world = world_for(network, conv.height or 64, conv.width or 64)
    frames = int(network.recorded("data.num_frames") or conv.num_frames or 25)
    return replace(world, num_frames=frames).generate(scene_seed + k)


@dataclass(frozen=True)
class StartPoints:
    """What a student's run config records of where its training tracks started (``data.placement``)."""

    recorded: str  # "placement": data.placement's mixture; "lattice": none recorded (the world's one grid); "unknown"
    placement: Optional[Placement] = None  # recorded == "placement": the mixture ({} in the config: its defaults)
    grid_size: Optional[int] = None  # recorded == "lattice": data.grid_size (its lattice), when the config has it


def start_points(network) -> StartPoints:
    """The start points the run config of ``network`` (a ``models.network.Network`` or its folder) records: its
    ``data.placement`` (``{}``: ``Placement()``), "lattice" when the config has a ``data`` node without one (a
    student trained before the mixture: on the world's one grid), "unknown" when there is no run config."""
    from trackstream.models.network import Network

    network = Network.of(network, "--student")
    data = network.recorded("data")
    if network.config_path is None or not isinstance(data, dict) or not data:
        return StartPoints("unknown")
    if data.get("placement") is not None:
        try:
            return StartPoints("placement", placement=placement_from(data["placement"]))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{network.config_path}: {e}") from None
    g = data.get("grid_size")
    return StartPoints("lattice", grid_size=g if isinstance(g, int) and g > 0 else None)


def fit_spacing(height: int, width: int, max_points: int) -> float:
    """The smallest grid spacing (frame pixels) whose grid holds at most ``max_points`` points at any offset
    (the page lays ``x = ox + i * s`` from ``ox`` in [-0.5, s - 0.5) while ``x < W - 0.5``: at most
    ``ceil(W / s)`` a row)."""

    def count(s: float) -> int:
        return math.ceil(width / s - 1e-9) * math.ceil(height / s - 1e-9)

    steps = sorted({width / a for a in range(1, width + 1)} | {height / b for b in range(1, height + 1)})
    return next((s for s in steps if count(s) <= max_points), float(max(height, width)))


def grid_hello(points: StartPoints, *, height: int, width: int, max_points: int) -> dict:
    """Hello's ``grid`` (protocol 2): the spacing the page's Grid button offers, in frame pixels.

    ``spacing``: the range the student was trained on (``data.placement.spacing`` x the shorter side), or None
    when its config records none. ``offer``: what the control offers: that range (``Placement()``'s when none is
    recorded), its low end raised to the smallest spacing whose grid fits ``max_points``. ``default``: the
    shorter side / 8 inside ``offer``. ``jitter``: a point's largest offset in spacings (the mixture's).
    ``note``: one line for a student whose config records no placement (trained on one lattice only), and
    ``lattice``: that lattice (the page's tooltip); else both None."""
    p = points.placement or Placement()
    short = min(height, width)
    lo, hi = p.spacing[0] * short, p.spacing[1] * short
    first = min(max(lo, fit_spacing(height, width, max_points)), hi)
    first = math.ceil(first * 1000) / 1000  # rounded up: the finest grid offered still fits max_points
    default = min(max(short / GRID_SIDE, first), hi)
    note = lattice = None
    if points.recorded == "lattice":
        note = "trained on one lattice of points only: grids elsewhere may break its picture"
        lattice, g = "its run config records no data.placement", points.grid_size
        if g:  # the lattice's cell centres (data.tracker_base.grid_queries): (k + 0.5) * W / g - 0.5
            sx, sy = width / g, height / g
            at = [f"{s / 2 - 0.5:g} + {s:g}k" for s in (sx, sy)]
            where = f"x, y = {at[0]} px" if sx == sy else f"x = {at[0]}, y = {at[1]} px"
            lattice = f"{g}x{g} points at {where}; {lattice}"
    return {
        "spacing": None if points.placement is None else [round(lo, 3), round(hi, 3)],
        "offer": [first, round(hi, 3)],
        "default": round(default, 3),
        "jitter": float(p.jitter),
        "note": note,
        "lattice": lattice,
    }


class DemoModel:
    """The student and everything a session needs from it, loaded once."""

    def __init__(
        self,
        student: str | Path,
        codec=None,
        *,
        num_scenes: int = 8,
        scene_seed: int = SCENE_SEED,
        device: str | None = "auto",
        dtype: str | None = "auto",
        compile: bool = False,
        offload_encoders: bool = False,
        depth_model: str | Path | None = None,
        decoder: str | Path | None = None,
        decoder_name: str | None = None,
    ):
        """``student``: a network folder (``models.network.Network.open``); ``codec``: a ``CodecRef`` of its
        latent space other than the one its folder records (``--codec``). ``device`` / ``dtype``: "auto" is
        CUDA + bf16 when a GPU is present, else CPU + fp32 (``models.precision``); ``compile``: the
        engine's compiled streaming step. ``depth_model``: a local transformers depth-estimation folder for
        camera moves (``models.depth``); without it the frame on screen is taken as a plane. ``decoder`` /
        ``decoder_name``: a trained tiny decoder that decodes the stream (``--decoder``)."""
        from trackstream.models.network import Network
        from trackstream.models.precision import dtype_name, resolve_precision

        network = self.network = Network.open(student, field="--student")
        codec = codec or network.codec_for(field="--codec")  # none recorded: refused before any loading
        dev, dt = resolve_precision(device, dtype)  # refuses cuda without a GPU, unknown dtypes (one line)
        self.device, self.dtype = str(dev), dtype_name(dt)
        net, codec_net, self.conditioner = network.for_inference(
            device=dev,
            dtype=dt,
            codec=codec,
            offload_encoders=offload_encoders,
            decoder=None if decoder is None else str(decoder),
            decoder_name=decoder_name,
        )
        # no device= here: the engine runs where for_inference put the network
        self.engine = StreamingGenerator(
            net,
            codec_net,
            config=net.conventions.stream_config(str(student)),
            image_features_fn=self.conditioner.image_features,
            compile=compile,
        )
        self.compile = bool(compile)
        self.height, self.width = int(net.conventions.height), int(net.conventions.width)
        self.world = world_for(network, self.height, self.width)
        self.fps = int(self.world.fps)
        self.num_scenes, self.scene_seed = num_scenes, scene_seed
        self.has_track_head = net.track_encoder is not None
        self.photo_notice = photo_notice(trained_world(network))  # shown on the page after an upload, or None
        self.start_points = start_points(network)  # data.placement: the grid spacings hello offers (grid_hello)
        self.lock = threading.Lock()  # one network pass at a time, whichever session asks
        self.depth_model = None
        if depth_model is not None:
            from trackstream.models.depth import DepthModel

            self.depth_model = DepthModel(depth_model, device=dev)
        self._scenes: dict[int, tuple[np.ndarray, str]] = {}
        self._text: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def scene(self, k: int) -> tuple[np.ndarray, str]:
        """Scene ``k``'s first frame (uint8 [H, W, 3]) and caption (``scene_clip``)."""
        if k not in self._scenes:
            clip = scene_clip(self.network, k, scene_seed=self.scene_seed)
            self._scenes[k] = (clip["frames"][0], clip["caption"])
        return self._scenes[k]

    def depth(self, frame: np.ndarray) -> np.ndarray:
        """Relative depth [H, W] of a uint8 frame: the depth model's, or a plane facing the camera."""
        if self.depth_model is None:
            return np.ones(frame.shape[:2])
        return self.depth_model(frame)

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
        self.model, self.limits = model, limits
        self.editor = DragEditor(model.engine, drag_config)
        self._seeded(seed)
        self.live = LiveTracks(limits.max_points, model.fps)
        # what reaches the stream, chunk by chunk: the session as data (stream.demo.record; replayed by generate)
        self.record = SessionRecord(
            {
                "student": str(model.network.folder),
                "height": model.height,
                "width": model.width,
                "fps": model.fps,
                "max_points": limits.max_points,
                "seed": self.seed,
            }
        )
        self.image: Optional[np.ndarray] = None
        self.prompt = ""
        self.last_tracks: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # the last chunk's, for retrack
        self.holding = False  # after a drag: its points are held until the person moves theirs
        self.last_frame: Optional[np.ndarray] = (
            None  # uint8 [H, W, 3]: the newest frame made (camera moves start there)
        )

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
            if msg.seed is not None:  # a program replaying a stream asks for its seed
                self._seeded(msg.seed)
        if self.image is None:
            raise ProtocolError("nothing to restart: start a stream first (a scene or an image)")
        image = image_tensor(self.image)
        text, lens = self.model.text(self.prompt)
        self.live.untag_all()
        self.holding = False
        tracks, vis, _ = self.live.for_chunk(1, first=True)
        if msg is not None:  # a new stream: its record starts here
            self.record.clear()
            self.record.header["seed"] = self.seed
            self.record.add("start", {"image": self.image, "tracks": tracks, "visibility": vis}, prompt=self.prompt,
                            seed=self.seed)  # fmt: skip
        else:
            self.record.add("restart", {"tracks": tracks, "visibility": vis})
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

    def _seeded(self, seed: int) -> None:
        """The stream's seed and what it draws: the points' track IDs (a pool of ``max_points``) and the drags'."""
        self.seed = seed
        ids = sample_track_ids(
            1,
            self.limits.max_points + DRAG_IDS,
            id_range=self.model.engine.network.track_id_range,
            generator=torch.Generator().manual_seed(seed),
        )
        self.pool, self.drag_ids = ids[:, : self.limits.max_points], ids[:, self.limits.max_points :]

    def points(self, msg: Points) -> None:
        if not self.model.has_track_head:
            raise ProtocolError("this student has no track head: points cannot steer it (use drag with method latent)")
        self.live.update(msg)

    def next_chunk(self) -> Emitted:
        if not self.started:
            raise ProtocolError("start a stream first")
        t0 = time.perf_counter()
        held, release = self.holding and not self.live.touched, self.holding and self.live.touched
        if self.holding and self.live.touched:  # back to the person's points: their IDs, tagged again
            self.holding = False
            self.editor.use_track_ids(self.pool)
            self.live.untag_all()
            self.last_tracks = None
        lo, hi = self.model.engine.pixel_range(self.chunk)
        if self.holding:
            self.record.add("chunk", held=True, release=False, frame=lo)
            kept = self.editor.held_tracks()
            out = self.editor.step(*(kept if kept is not None else ()))
            return self._emitted(out, time.perf_counter() - t0)
        tracks, vis, new = self.live.for_chunk(hi - lo)
        self.record.add(
            "chunk", {"tracks": tracks, "visibility": vis, "new": new}, held=held, release=release, frame=lo
        )
        if len(new):  # tagged where each first shows up in this chunk
            self._tag(new, tracks[vis.argmax(axis=0), np.arange(tracks.shape[1])])
        if tracks is None:
            out, self.last_tracks = self.editor.step(), None
        else:
            self.last_tracks = (torch.from_numpy(tracks)[None], torch.from_numpy(vis)[None])
            out = self.editor.step(*self.last_tracks)
        return self._emitted(out, time.perf_counter() - t0)

    def camera(self, msg: Camera) -> tuple[np.ndarray, np.ndarray]:
        """A camera move from the newest frame, scheduled on the live tracks; (tracks [T, N, 2], visibility)."""
        if not self.started:
            raise ProtocolError("start a stream first")
        if not self.model.has_track_head:
            raise ProtocolError("this student has no track head: a camera move cannot steer it")
        tracks, vis = camera_move(
            self.last_frame, msg, depth_fn=self.model.depth, fps=self.model.fps, slots=self.limits.max_points
        )
        self.live.schedule(tracks, vis)
        self.holding = False
        return tracks, vis

    def switch_prompt(self, msg: Prompt) -> int:
        """The next chunks under ``msg.prompt`` (the cache re-made under it); returns the re-cache passes."""
        if not self.started:
            raise ProtocolError("start a stream first (the prompt box sets the first prompt then)")
        text, lens = self.model.text(msg.prompt)
        passes = self.editor.switch_prompt(text, lens, sink=msg.sink)
        self.prompt = msg.prompt
        self.record.add("prompt", prompt=msg.prompt, sink=msg.sink)
        return passes

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
        self.record.add(
            "drag",
            {"mask": d.mask, "path": d.path, "center": d.center},
            mode=d.mode,
            drag_kind=d.kind,
            method=d.method,
            chunks=d.chunks,
            iterations=d.iterations,
            degrees=d.degrees,
        )
        self.holding, self.live.touched = True, False
        per = seconds / len(result.chunks)
        return [self._emitted(c, per, replaces=d.mode == "edit") for c in result.chunks], result

    def _emitted(self, out: ChunkOutput, seconds: float, *, replaces: bool = False) -> Emitted:
        frames = to_uint8(out.frames[0])
        self.last_frame = frames[-1]
        return Emitted(index=out.index, frames=frames, start=out.pixel_range[0], seconds=seconds, replaces=replaces)


def replay(model, record: SessionRecord) -> dict[int, np.ndarray]:
    """The frames (frame number -> uint8 [H, W, 3] RGB; an edit's replacing the ones it replaced) of ``record``
    streamed again by ``model`` (a ``stream.demo.session.DemoModel``), through the calls the session made."""
    h = record.header
    if (h.get("height"), h.get("width")) != (model.height, model.width):
        raise ValueError(
            f"the session streamed {h.get('width')}x{h.get('height')} frames, --student streams "
            f"{model.width}x{model.height}: replay it with the student it was made with ({h.get('student')})"
        )
    session = Session(model, Limits(max_points=int(h["max_points"])), seed=int(h["seed"]))
    live = session.live = RecordedTracks()
    frames: dict[int, np.ndarray] = {}

    def keep(em) -> None:
        for j, f in enumerate(em.frames):
            frames[em.start + j] = f

    for ev in record.events:
        tracks, vis, new = (record.array(ev, k) for k in ("tracks", "visibility", "new"))
        if ev["kind"] in ("start", "restart"):
            live.push(tracks, vis, None)
            msg = (
                Start(image=record.array(ev, "image"), prompt=ev["prompt"], seed=ev["seed"])
                if ev["kind"] == "start"
                else None
            )
            if msg is not None:
                frames.clear()
            keep(session.start(msg))
        elif ev["kind"] == "chunk":
            live.push(tracks, vis, new)
            session.holding, live.touched = ev["held"] or ev["release"], ev["release"]
            keep(session.next_chunk())
        elif ev["kind"] == "prompt":
            session.switch_prompt(Prompt(ev["prompt"], ev["sink"]))
        elif ev["kind"] == "drag":
            d = Drag(
                ev["mode"],
                ev["drag_kind"],
                ev["method"],
                record.array(ev, "mask").astype(bool),
                int(ev["chunks"]),
                int(ev["iterations"]),
                path=record.array(ev, "path"),
                center=record.array(ev, "center"),
                degrees=float(ev["degrees"]),
            )
            for em in session.drag(d)[0]:
                keep(em)
        else:
            raise ValueError(f"a session event of kind {ev['kind']!r}: this version does not know it")
    return frames
