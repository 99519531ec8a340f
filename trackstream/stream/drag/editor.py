"""A draggable stream: the streaming engine plus the short history a drag needs.

    editor = DragEditor(engine, DragConfig())
    first = editor.start(image, text, lens, seed=0)           # chunk 0: the image itself
    out = editor.step()                                       # stream as usual (tracks optional)
    outs = editor.drag(instruction, method="latent")          # edit the last chunk / animate the next ones

Two ways to drag, and both together (``method``):

* ``latent``: DragStream. At step T' of each steered chunk the noisy latent is optimised so the
  features at the object's target tokens match the reference frame's, warped (``optimize``). Needs
  nothing from the student but its attention, so it works on any student, with or without tracks.
* ``tracks``: our student's own conditioning. The drag becomes point tracks: the object's token
  centres moved by the trajectory, plus MotionStream's static points (a grid outside the editable
  area, held still) so the rest stays put.
* ``both``: the tracks condition the chunk and the latent optimisation runs on top.

An edit re-generates the last chunk (its last latent frame shows the drag's one step); an animation
generates ``num_chunks`` new chunks, one step per latent frame. The reference is the last latent
frame before the steered chunk(s), at the same denoising step, recorded once per frequency variant;
within an animation it stays the pre-animation frame (steps are absolute from it). The cache is never
written by a drag's passes: states are immutable, so abandoning an edit leaves the stream as it was.
Legend as in ``stream.chunks``.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable, Optional

import numpy as np
import torch

from trackstream.stream.chunk_io import ChunkOutput
from trackstream.stream.chunks import denoise_chunk
from trackstream.stream.drag.adsr import rectify_x0
from trackstream.stream.drag.history import ChunkRecord, input_at_step
from trackstream.stream.drag.instructions import BLOCK_LENGTH, DragInstruction
from trackstream.stream.drag.optimize import (
    DragConfig,
    OptimLog,
    build_targets,
    default_layers,
    optimise_latent,
    reference_features,
    segment_count,
)
from trackstream.stream.drag.points import drag_tracks, track_ids_for
from trackstream.stream.engine import StreamingGenerator, StreamState

__all__ = ["DragEditor", "DragResult", "METHODS", "default_method"]

METHODS = ("latent", "tracks", "both")


def default_method(network) -> str:
    """The drag that works on ``network``: its own tracks when it is track-conditioned (a track head, model
    ``track_channels`` > 0), else DragStream's latent optimisation, the one that needs nothing from it. On the
    track-conditioned students the latent optimisation alone does not move the object and loses its look
    (docs/drag-instructions.md); it stays a choice (``method="latent"``)."""
    return "tracks" if network.track_encoder is not None else "latent"


@dataclass
class DragResult:
    chunks: list  # ChunkOutput per steered chunk
    logs: list  # OptimLog per chunk (empty logs for method="tracks")
    reference_chunk: int
    segments: int
    seconds: float  # wall time of the whole drag (reference passes included)
    reference: str = "previous"  # where the reference features came from (DragConfig.reference resolved)


class DragEditor:
    """``StreamingGenerator`` + the history of the last few chunks; ``drag`` edits or animates."""

    def __init__(self, engine: StreamingGenerator, config: DragConfig = DragConfig()):
        self.engine, self.config = engine, config
        dit = engine.network.dit
        self.layers = config.layers if config.layers is not None else default_layers(dit.num_layers)
        if any(not 0 <= layer < dit.num_layers for layer in self.layers):
            raise ValueError(f"DragConfig.layers={self.layers}: the DiT has blocks 0..{dit.num_layers - 1}")
        if config.step_index >= len(engine.sigmas) - 1:
            raise ValueError(
                f"DragConfig.step_index={config.step_index}: the sampler has steps 0..{len(engine.sigmas) - 2}"
            )
        self.history: deque[ChunkRecord] = deque(maxlen=max(2, config.neighbours + 1))
        self.state: Optional[StreamState] = None
        self._held: Optional[tuple[np.ndarray, np.ndarray]] = None  # the last drag's final points [N, 2], vis [N]

    # -- plain streaming ---------------------------------------------------------------------------

    def start(
        self,
        image,
        text,
        text_lengths,
        *,
        tracks: Optional[torch.Tensor] = None,
        visibility: Optional[torch.Tensor] = None,
        **kw,
    ) -> ChunkOutput:
        """Start a stream (``StreamingGenerator.start`` arguments) and emit chunk 0 (the image), with its
        one frame of tracks [B, 1, N, 2] if the stream has tracks from the start (e.g. pinned points)."""
        self.history.clear()
        self._held = None
        self.state = self.engine.start(image, text, text_lengths, **kw)
        return self.step(tracks, visibility)

    def step(self, tracks: Optional[torch.Tensor] = None, visibility: Optional[torch.Tensor] = None) -> ChunkOutput:
        before = self._need_state()
        y = self.engine.condition(before, tracks, visibility)
        z_tp = None
        if before.chunk == 0:
            out, self.state = self.engine.step(before, tracks, visibility)
        else:  # the engine's sampling, keeping the input of step T' (a later drag's reference needs it)
            out, _, z_tp = self._generate(before, y, None, self.config, single=False, rectify=False)
        self.history.append(ChunkRecord(before=before, after=self.state, y=y, latents=out.latents, z_tprime=z_tp))
        return out

    def held_tracks(self) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """After a drag that used tracks: its points held at their final places over the next chunk's
        pixel frames ([1, T, N, 2], [1, T, N]; N = the stream's track count), so what was dragged stays
        there; None otherwise."""
        if self._held is None:
            return None
        lo, hi = self.engine.pixel_range(self._need_state().chunk)
        pts, vis = self._held
        return (
            torch.from_numpy(np.repeat(pts[None], hi - lo, axis=0))[None],
            torch.from_numpy(np.repeat(vis[None], hi - lo, axis=0))[None],
        )

    def use_track_ids(self, ids: Optional[torch.Tensor]) -> None:
        """Tag the next chunks' tracks with ``ids`` [1, N] (a live session switching between its own points
        and a drag's). IDs already in the cache keep meaning the content they were committed on."""
        state = self._need_state()
        ids = None if ids is None else ids.to(self.engine.device)
        self.state = replace(state, cond=replace(state.cond, track_ids=ids))
        for n, rec in enumerate(self.history):  # a drag resumes from a recorded state: it must see them too
            self.history[n] = replace(
                rec,
                after=self.state
                if rec.after is state
                else replace(rec.after, cond=replace(rec.after.cond, track_ids=ids)),
            )

    def switch_prompt(self, text: torch.Tensor, text_lengths: torch.Tensor, *, sink: str = "recache") -> int:
        """The next chunks under a new prompt (``StreamingGenerator.switch_prompt``); the last record resumes
        from the switched state, so a drag made after the switch keeps it. Returns the re-cache passes."""
        state = self._need_state()
        self.state = self.engine.switch_prompt(state, text, text_lengths, sink=sink)
        if self.history:
            self.history[-1] = replace(self.history[-1], after=self.state)
        return self.state.nfe - state.nfe

    def retrack(self, tracks: torch.Tensor, visibility: torch.Tensor) -> None:
        """Re-run the last chunk's clean pass with other tracks over its pixel frames ([1, T, N, 2], [1, T, N]):
        points that appear mid-stream are tagged on the content under them (visible on the chunk's last frame)
        before any chunk moves them. The chunk's latents and frames are unchanged; so is everything before."""
        if not self.history:
            raise ValueError("nothing streamed yet: start the stream first")
        rec = self.history[-1]
        self.state = replace(self._need_state(), **self._commit_again(rec, tracks, visibility))
        self.history[-1] = replace(rec, after=self.state)  # y stays as generated (a drag's reference replays it)

    @property
    def token(self) -> int:
        """Pixels per DiT token (codec spatial factor x patch)."""
        cond = self._need_state().cond
        return cond.height // cond.image_latent.shape[-2] * self.engine.network.dit.patch_size[1]

    # -- dragging ----------------------------------------------------------------------------------

    @torch.no_grad()
    def drag(
        self,
        instr: DragInstruction,
        *,
        method: str = "latent",
        config: Optional[DragConfig] = None,
        on_chunk: Optional[Callable[[int, ChunkOutput, OptimLog], None]] = None,
    ) -> DragResult:
        """Apply ``instr`` to the stream: edit re-generates the last chunk, animate generates
        ``instr.num_chunks`` new ones. Returns the steered chunks; the stream continues after them.
        ``on_chunk(n, output, log)``: called as each steered chunk is done (a command's progress)."""
        cfg = config or self.config
        has_head = self._check_drag(instr, method)
        t0 = time.perf_counter()
        ref, plan = self._steer_plan(instr)
        first = ref.before.chunk + 1
        self.state = ref.after  # an edit drops the last chunk: the stream resumes right after the reference
        use_latent = method in ("latent", "both") and cfg.iterations > 0
        source = cfg.reference if cfg.reference != "auto" else ("self" if ref.before.chunk == 0 else "previous")
        reference, segments = {"features": None}, 1
        if use_latent:
            if source == "previous":
                reference["features"] = self._reference(ref, cfg)
            segments = segment_count(instr, self.token, cfg)
        tracks = vis = None
        if method in ("tracks", "both") or (cfg.pin and has_head):
            tracks, vis = self._tracks(instr, ref, objects=method != "latent")
            self.state = self._recommit(ref, tracks, vis)
        chunks, logs = [], []
        for n, frames in enumerate(plan):
            before = self._need_state()
            assert before.chunk == first + n
            chunk_tracks = self._chunk_tracks(tracks, vis, before.chunk, ref) if tracks is not None else (None, None)
            y = self.engine.condition(before, *chunk_tracks)
            make_targets = None
            if use_latent:
                make_targets = self._target_maker(instr, cfg, reference, segments, before, y, frames)
            out, log, z_tp = self._generate(
                before, y, make_targets, cfg, single=instr.mode == "edit", rectify=use_latent and cfg.adsr
            )
            self.history.append(ChunkRecord(before=before, after=self.state, y=y, latents=out.latents, z_tprime=z_tp))
            chunks.append(out)
            logs.append(log)
            if on_chunk is not None:
                on_chunk(n, out, log)
        self._held = None if tracks is None else (tracks[-1], vis[-1])
        return DragResult(
            chunks=chunks,
            logs=logs,
            reference_chunk=ref.before.chunk,
            segments=segments,
            seconds=time.perf_counter() - t0,
            reference=source,
        )

    def _check_drag(self, instr: DragInstruction, method: str) -> bool:
        """Refuse a drag the stream cannot take before anything changes; returns whether the student has a
        track head."""
        if method not in METHODS:
            raise ValueError(f"method={method!r}; choose one of {METHODS}")
        cond = self._need_state().cond
        if tuple(np.asarray(instr.editable).shape) != (cond.height, cond.width):
            raise ValueError(
                f"the instruction's masks are {np.asarray(instr.editable).shape}; the stream is "
                f"{cond.height}x{cond.width}: draw them on the stream's frames"
            )
        has_head = self.engine.network.track_encoder is not None
        if method in ("tracks", "both") and not has_head:
            raise ValueError(
                f"method={method!r} needs a student with a track head (model.track_channels > 0); use method='latent'"
            )
        return has_head

    def _steer_plan(self, instr: DragInstruction) -> tuple[ChunkRecord, list]:
        """The reference record and, per steered chunk, its (latent frame, step) pairs. An edit drops the
        chunk it replaces from the history (its one refusal comes first, so a refused drag changes nothing)."""
        if instr.mode == "edit":
            if len(self.history) < 2:
                raise ValueError(
                    "an edit re-generates the last chunk and needs the one before it: stream at least "
                    "one chunk after the first frame first"
                )
            self.history.pop()  # the chunk being replaced
            return self.history[-1], [[(BLOCK_LENGTH - 1, 1)]]  # the last latent frame shows the one step
        plan = [[(f, BLOCK_LENGTH * c + f + 1) for f in range(BLOCK_LENGTH)] for c in range(instr.num_chunks)]
        return self.history[-1], plan

    def _target_maker(self, instr: DragInstruction, cfg: DragConfig, reference: dict, segments: int, before, y, frames):
        """One steered chunk's ``make_targets``: its input at T' -> the latent optimisation's targets.
        ``reference["features"]`` is shared by the drag's chunks; a "self" reference leaves it None until the
        first steered chunk fills it from its own first frame, undragged."""

        def make_targets(x):
            if reference["features"] is None:
                reference["features"] = reference_features(
                    self.engine.network,
                    before.cache,
                    x,
                    self.engine.sigmas[cfg.step_index],
                    y,
                    self.layers,
                    cfg.cutoffs(),
                    frame=0,
                )
            return build_targets(
                reference["features"],
                instr,
                frames,
                token=self.token,
                patch=tuple(self.engine.network.dit.patch_size[1:]),
                segments=segments,
                upsample=cfg.upsample_features,
            )

        return make_targets

    # -- internals ---------------------------------------------------------------------------------

    def _need_state(self) -> StreamState:
        if self.state is None:
            raise ValueError("the stream has not started: call start(image, text, text_lengths) first")
        return self.state

    def _reference(self, rec: ChunkRecord, cfg: DragConfig) -> dict:
        z = input_at_step(self.engine, rec, cfg)
        return reference_features(
            self.engine.network,
            rec.before.cache,
            z,
            self.engine.sigmas[cfg.step_index],
            rec.y,
            self.layers,
            cfg.cutoffs(),
        )

    def _tracks(self, instr: DragInstruction, ref: ChunkRecord, *, objects: bool) -> tuple[np.ndarray, np.ndarray]:
        """Tracks from the reference frame to the end of the steered chunks (``drag_tracks``), tagged with
        ``track_ids_for``'s IDs (the stream's own first: the pins a stream started with keep theirs)."""
        cond = self._need_state().cond
        p_ref = self.engine.pixel_range(ref.before.chunk)[1] - 1
        frames = self.engine.pixel_range(ref.before.chunk + instr.num_chunks)[1] - p_ref
        tracks, vis = drag_tracks(
            instr,
            token=self.token,
            height=cond.height,
            width=cond.width,
            num_frames=frames,
            objects=objects,
            seed=self.config.seed,
        )
        ids = track_ids_for(
            cond.track_ids,
            tracks.shape[1],
            seed=self.config.seed,
            device=self.engine.device,
            id_range=self.engine.network.track_id_range,
        )
        self.state = replace(self.state, cond=replace(cond, track_ids=ids))
        return tracks, vis

    def _recommit(self, ref: ChunkRecord, tracks: np.ndarray, vis: np.ndarray) -> StreamState:
        """Re-run the reference chunk's clean pass with the drag's points tagged on its last frame (where
        the user grabbed them) and visible nowhere else: a track ID means "this content", so an ID must
        appear in the cache before the chunks that move it. The chunk's latents and frames are unchanged."""
        lo, hi = self.engine.pixel_range(ref.before.chunk)
        t_ref = np.repeat(tracks[:1], hi - lo, axis=0)  # [T_ref, N, 2]
        v_ref = np.zeros_like(vis[:1].repeat(hi - lo, axis=0))
        v_ref[-1] = vis[0]
        committed = self._commit_again(ref, torch.from_numpy(t_ref)[None], torch.from_numpy(v_ref)[None])
        return replace(ref.after, cond=self._need_state().cond, **committed)

    def _commit_again(self, rec: ChunkRecord, tracks: torch.Tensor, visibility: torch.Tensor) -> dict:
        """The cache (and the inputs a prompt switch re-commits) after ``rec``'s chunk re-committed (same clean
        latents) with other tracks over its pixel frames [1, T, N, 2] / [1, T, N], tagged with the stream's
        current track IDs: ``StreamingGenerator.commit``'s fields."""
        y = self.engine.condition(replace(rec.before, cond=self._need_state().cond), tracks, visibility)
        return self.engine.commit(rec.before, rec.latents, y)

    def _chunk_tracks(self, tracks: np.ndarray, vis: np.ndarray, chunk: int, ref: ChunkRecord):
        """This chunk's slice [1, T_chunk, N, 2] of the drag's tracks (frame 0 = the reference frame)."""
        p_ref = self.engine.pixel_range(ref.before.chunk)[1] - 1
        lo, hi = self.engine.pixel_range(chunk)
        sl = slice(lo - p_ref, hi - p_ref)
        return torch.from_numpy(tracks[sl])[None], torch.from_numpy(vis[sl])[None]

    def _generate(self, before: StreamState, y, make_targets, cfg: DragConfig, *, single: bool, rectify: bool):
        """The engine's K-step sampling of one chunk with the optimisation at step T' (``make_targets``:
        the chunk's input there -> targets, or None) and ADSR on x0; without targets and rectification
        it is exactly ``StreamingGenerator.step``."""
        t0 = time.perf_counter()
        eng = self.engine
        gen = eng.noise_generator(before)
        shape = eng.chunk_shape(before)
        draw = lambda: torch.randn(shape, generator=gen, device=eng.device)  # noqa: E731
        # ADSR on x0: the last N chunks' clean latents; without adsr_pool_image the first chunk (the image,
        # one frame) is left out of that window, as the reference leaves out its first chunk
        window = list(self.history)[-cfg.neighbours :] if rectify and cfg.neighbours else []
        neighbours = [r.latents for r in window if cfg.adsr_pool_image or r.before.chunk != 0]
        log, z_tp = OptimLog(), None

        def on_input(k: int, x: torch.Tensor) -> torch.Tensor:  # step T': optimise the chunk's latent there
            nonlocal log, z_tp
            if k != cfg.step_index:
                return x
            targets = make_targets(x) if make_targets is not None else None
            if targets:
                with torch.enable_grad():
                    x, log = optimise_latent(
                        eng.network,
                        before.cache,
                        x,
                        eng.sigmas[k],
                        y,
                        targets,
                        cfg,
                        layers=self.layers,
                        single_target=single,
                    )
            z_tp = (k, x)
            return x

        on_x0 = (lambda k, x0: rectify_x0(x0, neighbours)) if neighbours else None  # ADSR on every step's x0
        x0 = denoise_chunk(
            eng.network,
            before.cache,
            draw(),
            y,
            eng.sigmas,
            fresh_noise=draw,
            buffers=eng.buffers,
            on_input=on_input,
            on_x0=on_x0,
        )
        out, self.state = eng.finish(before, x0, y, gen, t0)
        return out, log, z_tp
