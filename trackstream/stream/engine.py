"""The streaming engine: an unbounded video, chunk by chunk, tracks supplied live.

    engine = StreamingGenerator(network, codec, config=StreamConfig())      # c3s1w1, 3 steps
    state = engine.start(image, text_emb, text_len, track_ids=ids, seed=0)  # first frame -> sink
    for chunk in engine.stream(state, track_source):                        # generator
        show(chunk.frames)                                                  # [B, 3, T_chunk, H, W]

Per chunk i (MotionStream §3.2 / §4.4): read chunk i's tracks only (the pixel frames it covers;
nothing later is needed), build its conditioning, sample K steps from fresh noise through the
rolling KV cache (sink + window, RoPE by cache slot), re-run the clean result at t = 0 to write
its K/V (the cache rolls), decode its latents with the codec's functional streaming decoder and
hand the frames out immediately. With a given first chunk (``first_chunk_frames=1``) chunk 0 is the
first frame itself: its encoded latent is committed to the cache (it becomes the attention sink) and
decoded to the first output frame; with a sampled first chunk it is sampled like every other chunk,
the image entering through the conditioning channels (``stream.chunks``).

Memory is constant: the state is (cache of S + W chunks and their latents / conditioning, the K/V of
the W chunks evicted last, decoder state, counters, the noise generator's state); nothing grows with the
number of chunks (tests/test_stream_engine.py checks the bytes held after hundreds of frames). The
state is immutable (``StreamState``): ``step`` returns a new one, so a caller may keep, replay or branch a
stream (DragStream-style edits) or switch its prompt between chunks (``switch_prompt``, ``stream.recache``).
Legend as in ``stream.chunks``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Optional, Union

import torch

from trackstream.models.causal import ChunkKV, KVCache
from trackstream.models.precision import synchronize
from trackstream.models.stream_buffers import StepBuffers
from trackstream.models.streaming import StreamConfig
from trackstream.stream.chunk_io import ChunkOutput, TrackSource
from trackstream.stream.chunks import (
    VideoCondition,
    build_video_condition,
    chunk_condition,
    chunk_pixel_frames,
    commit_chunk,
    denoise_chunk,
    start_cache,
    track_features,
)
from trackstream.stream.recache import HeldChunk, recache, roll_held

__all__ = [
    "StreamState",
    "StreamingGenerator",
    "state_nbytes",
]


@dataclass(frozen=True, eq=False)
class StreamState:
    cond: VideoCondition
    cache: KVCache
    decode: Any  # the codec's decode state (functional)
    noise: torch.Tensor  # state of the noise generator (a tensor, so replaying a state replays its noise)
    chunk: int = 0  # next chunk to generate
    frames_out: int = 0  # pixel frames emitted so far
    nfe: int = 0  # network evaluations so far (re-cache passes of prompt switches included)
    # the commit inputs (clean latent, y) of every chunk the cache holds, in cache order: a prompt switch
    # re-commits them (``stream.recache``); bounded by the cache (S + W chunks)
    held: tuple[HeldChunk, ...] = ()
    # K/V of the (at most W) chunks evicted last: the window the held window chunks were committed against
    evicted: tuple[ChunkKV, ...] = ()


def _tensors(obj: Any, seen: set) -> Iterator[torch.Tensor]:
    if torch.is_tensor(obj):
        if id(obj) not in seen:
            seen.add(id(obj))
            yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o, seen)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o, seen)
    elif hasattr(obj, "__dataclass_fields__"):
        for name in obj.__dataclass_fields__:
            yield from _tensors(getattr(obj, name), seen)


def state_nbytes(state: StreamState) -> int:
    """Bytes of every tensor reachable from the state (cache, decoder state, condition)."""
    return sum(t.nbytes for t in _tensors(state, set()))


class StreamingGenerator:
    """Chunk-by-chunk generation with the causal student (a ``models.motion_wan.MotionWan``) and a
    codec with functional streaming decode (``models.codecs``)."""

    def __init__(
        self,
        network,
        codec,
        *,
        config: StreamConfig,
        device: Union[str, torch.device, None] = None,
        image_features_fn: Optional[Callable[[torch.Tensor], Optional[torch.Tensor]]] = None,
        fast: bool = True,
        compile: bool = False,
        overlap_decode: bool = False,
        timings: bool = False,
        recache_context: bool = True,
    ):
        """``fast``: the static-buffer step (``models.stream_buffers``; equal to the reference ``fast=False``
        within the attention kernel's rounding); ``compile``: that step through ``torch.compile`` (CUDA graphs
        on CUDA; needs ``fast``); ``overlap_decode``: ``stream`` samples chunk i + 1 before handing out chunk i,
        so on CUDA chunk i's decode (a second CUDA stream) overlaps chunk i + 1's denoising - the track
        source is then asked one chunk ahead; ``timings``: each chunk's synchronised breakdown
        (``ChunkOutput.timings``; the syncs cost time, so measure frames/s without it); ``recache_context``:
        keep the K/V of the W chunks evicted last: a prompt switch re-caches the window against exactly what
        it was committed against; False saves them and re-caches the window as if it followed the sink
        (inexact once the window has rolled, even for the same prompt; ``stream.recache``)."""
        self.network, self.codec, self.config = network.eval(), codec.eval(), config
        if compile and not fast:
            raise ValueError("compile=True compiles the static-buffer step: it needs fast=True")
        self.fast, self.compile = bool(fast), bool(compile)
        self.overlap_decode, self.timings = bool(overlap_decode), bool(timings)
        self.recache_context = bool(recache_context)
        # first frame -> CLIP tokens (Conditioner.image_features) for networks with the image branch
        self.image_features_fn = image_features_fn
        # The network's own device: inputs follow it (a separate default would send them elsewhere).
        own = next(network.parameters()).device
        if (
            device is not None
            and torch.device(device) != own
            and not (torch.device(device).type == own.type and torch.device(device).index is None)
        ):
            raise ValueError(f"device={device} but the network is on {own}: move it first (load_export(device=...))")
        self.device = own
        if own.type == "cuda":
            # cuDNN times its convolution algorithms once per shape: a stream decodes chunks of one shape for
            # its whole length, so the first chunk's search pays for every later one (the Wan 2.1 VAE's
            # 12-frame chunk at 832x480 decodes in 286 instead of 310 ms on an H100: docs/results.md)
            torch.backends.cudnn.benchmark = True
        self.causal = config.causal
        self.sigmas = config.sigmas()
        self._sigmas = self.sigmas.to(own)  # on the device once: no host copy inside a chunk
        # the full causal history (no window in chunks or frames) has no static shape: the reference step serves it
        self.fast = self.fast and self.causal.bounded
        if self.compile and not self.fast:
            raise ValueError(f"compile=True needs a finite window; {self.causal.name} keeps the whole history")
        self.buffers = StepBuffers(network.dit, self.causal, compiled=compile) if self.fast else None
        self._side = torch.cuda.Stream(own) if overlap_decode and own.type == "cuda" else None

    @torch.no_grad()
    def start(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        *,
        track_ids: Optional[torch.Tensor] = None,
        seed: int = 0,
        image_features: Optional[torch.Tensor] = None,
    ) -> StreamState:
        """First frame [B, 3, H, W] in [-1, 1] and the prompt's frozen-encoder output -> a fresh state.

        ``track_ids`` [B, N] (sampled once per video, ``models.tracks.sample_track_ids``) tag the
        tracks for the whole stream; None if this video never gets tracks. ``image_features``
        [B, 257, 1280]: the first frame's CLIP tokens, for networks with the I2V image branch.
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [B, 3, H, W] in [-1, 1], got {tuple(image.shape)}")
        if image_features is None and self.image_features_fn is not None:
            image_features = self.image_features_fn(image)
        if track_ids is not None:
            track_ids = track_ids.to(self.device)
        cond = build_video_condition(
            self.network,
            self.codec,
            image.to(self.device),
            text.to(self.device),
            text_lengths.to(self.device),
            track_ids=track_ids,
            image_features=None if image_features is None else image_features.to(self.device),
        )
        noise = torch.Generator(device=self.device).manual_seed(int(seed)).get_state()
        return StreamState(
            cond=cond,
            cache=start_cache(self.network, cond, self.causal),
            decode=self.codec.init_decode_state(),
            noise=noise,
        )

    def pixel_range(self, index: int) -> tuple[int, int]:
        return chunk_pixel_frames(self.causal, index)

    def condition(
        self, state: StreamState, tracks: Optional[torch.Tensor] = None, visibility: Optional[torch.Tensor] = None
    ) -> Optional[torch.Tensor]:
        """The DiT's ``y`` for chunk ``state.chunk`` from ITS tracks [B, T_chunk, N, 2] (+ visibility),
        or None for the empty motion condition."""
        i = state.chunk
        lo, hi = self.pixel_range(i)
        if tracks is not None:
            if tracks.ndim != 4 or tracks.shape[1] != hi - lo:
                raise ValueError(
                    f"chunk {i} covers pixel frames [{lo}, {hi}): tracks must be [B, {hi - lo}, N, 2], "
                    f"got {tuple(tracks.shape)}"
                )
            if visibility is None:
                visibility = torch.ones(tracks.shape[:3], dtype=torch.bool)
            tracks, visibility = tracks.to(self.device).float(), visibility.to(self.device).bool()
        net = self.network
        convention = net.track_encoder.convention if net.track_encoder is not None else "trackstream"
        motion = track_features(
            state.cond, tracks, visibility, embed_dim=net.track_embed_dim, splat=net.track_splat, convention=convention
        )
        return chunk_condition(self.network, state.cond, self.causal, i, motion)

    def noise_generator(self, state: StreamState) -> torch.Generator:
        """The stream's noise generator at ``state`` (replaying a state replays its noise)."""
        gen = torch.Generator(device=self.device)
        gen.set_state(state.noise)
        return gen

    def chunk_shape(self, state: StreamState) -> tuple[int, ...]:
        B, C, _, h, w = state.cond.image_latent.shape
        return (B, C, self.causal.chunk_len(state.chunk), h, w)

    @torch.no_grad()
    def step(
        self, state: StreamState, tracks: Optional[torch.Tensor] = None, visibility: Optional[torch.Tensor] = None
    ) -> tuple[ChunkOutput, StreamState]:
        """Generate chunk ``state.chunk`` given ITS tracks [B, T_chunk, N, 2] (+ visibility), or
        None for the empty motion condition. Returns the decoded chunk and the next state."""
        out, new = self._decode(*self._sample(state, tracks, visibility))
        return self._finish(out), new

    def _mark(self, marks: list) -> None:
        if self.timings:  # a phase boundary: synchronised, else the GPU work is only queued
            synchronize(self.device)
            marks.append(time.perf_counter())

    def _sample(self, state: StreamState, tracks, visibility):
        """Condition, denoise and commit chunk ``state.chunk`` (queued on the device, not synchronised)."""
        if self._side is None:  # overlapping: the previous chunk's decode may still run, by design
            synchronize(self.device)
        marks = [time.perf_counter()]
        y = self.condition(state, tracks, visibility)
        self._mark(marks)
        gen = self.noise_generator(state)
        if state.chunk == 0 and self.config.first_chunk_given:
            x0 = state.cond.image_latent  # the given first frame: clean, no sampling
        else:
            shape = self.chunk_shape(state)
            draw = lambda: torch.randn(shape, generator=gen, device=self.device)  # noqa: E731
            x0 = denoise_chunk(
                self.network, state.cache, draw(), y, self._sigmas, fresh_noise=draw, buffers=self.buffers
            )
        committed = self.commit(state, x0, y)
        self._mark(marks)
        return state, x0, committed, gen, marks

    @torch.no_grad()
    def finish(
        self, state: StreamState, x0: torch.Tensor, y: Optional[torch.Tensor], gen: torch.Generator, t0: float
    ) -> tuple[ChunkOutput, StreamState]:
        """Commit chunk ``state.chunk``'s clean latents ``x0`` sampled by the caller (the cache rolls), decode
        them and advance the state; ``gen``: the noise generator after the chunk's draws, ``t0``: when the
        chunk started (its conditioning and sampling are timed as ``dit``)."""
        marks = [t0, t0] if self.timings else [t0]
        committed = self.commit(state, x0, y)
        self._mark(marks)
        out, new = self._decode(state, x0, committed, gen, marks)
        return self._finish(out), new

    @torch.no_grad()
    def commit(self, state: StreamState, x0: torch.Tensor, y: Optional[torch.Tensor]) -> dict:
        """The clean pass of chunk ``state.chunk`` (latents ``x0``, conditioning ``y``) onto ``state``'s cache:
        the next state's ``cache``, ``held`` and ``evicted`` (for ``replace``; a re-commit with other ``y``,
        DragStream's re-tagging, goes through here so that a later prompt switch uses that ``y``)."""
        cache = commit_chunk(self.network, state.cache, x0, y, buffers=self.buffers)
        held, evicted = roll_held(
            state.cache,
            cache,
            state.held,
            state.evicted,
            HeldChunk(state.chunk, x0.detach(), y),
            keep_evicted=self.recache_context,
        )
        return {"cache": cache, "held": held, "evicted": evicted}

    @torch.no_grad()
    def switch_prompt(
        self, state: StreamState, text: torch.Tensor, text_lengths: torch.Tensor, *, sink: str = "recache"
    ) -> StreamState:
        """Switch the prompt at a chunk boundary (between ``step`` calls): a new state whose chunks from
        ``state.chunk`` on see the new prompt (frozen-encoder output [B, L, E] and lengths [B], as ``start``).
        The cached chunks' K/V were made under the old prompt, so each held chunk's commit pass is re-run
        under the new one, once (``stream.recache``; c3s1w1: 2 passes); nothing emitted changes, the noise
        continues. ``sink``: ``"recache"`` (the sink too) or ``"keep"`` (its old K/V; why: ``stream.recache``)."""
        if text.ndim != 3 or text.shape[0] != state.cond.image_latent.shape[0]:
            raise ValueError(
                f"text must be the frozen encoder's [B, L, E] for the stream's batch "
                f"{state.cond.image_latent.shape[0]}, got {tuple(text.shape)}"
            )
        cond = replace(
            state.cond, context=self.network.project_text(text.to(self.device), text_lengths.to(self.device))
        )
        fresh = start_cache(self.network, cond, self.causal)  # the new prompt's cross-attention K/V, no chunk
        cache, passes = recache(
            self.network, state.cache, fresh.context_kv, state.held, state.evicted, sink=sink, buffers=self.buffers
        )
        return replace(state, cond=cond, cache=cache, nfe=state.nfe + passes)

    def _decode(
        self, state: StreamState, x0: torch.Tensor, committed: dict, gen: torch.Generator, marks: list
    ) -> tuple[ChunkOutput, StreamState]:
        """Decode the committed chunk and advance the state (on the side stream when overlapping)."""
        i = state.chunk
        lo, hi = self.pixel_range(i)
        ready = None
        if self._side is not None:  # decode beside the next chunk's passes; only the host waits for it
            self._side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._side):
                frames, decode = self.codec.decode_chunk(x0, state.decode)
                frames = frames.float()
                ready = torch.cuda.Event()
                ready.record(self._side)
            x0.record_stream(self._side)
        else:
            frames, decode = self.codec.decode_chunk(x0, state.decode)
            frames = frames.float()
        self._mark(marks)
        done = None
        if self._side is None and self.overlap_decode:  # finished here; handed out one chunk later
            synchronize(self.device)
            done = time.perf_counter()
        nfe = self.config.nfe_per_chunk(i)
        new = replace(
            state,
            **committed,
            decode=decode,
            noise=gen.get_state(),
            chunk=i + 1,
            frames_out=state.frames_out + (hi - lo),
            nfe=state.nfe + nfe,
        )
        return ChunkOutput(
            index=i,
            frames=frames,
            latents=x0,
            pixel_range=(lo, hi),
            nfe=nfe,
            seconds=0.0,
            timings=marks,
            ready=ready,
            done=done,
        ), new

    def _finish(self, out: ChunkOutput) -> ChunkOutput:
        """Wait for the chunk's frames and stamp its wall time (and breakdown) since its start."""
        if out.ready is not None and not self.timings:
            out.ready.synchronize()  # this chunk's frames only: the next chunk's passes keep running
        else:
            synchronize(self.device)  # GPU work is queued: without this the time is of the launches only
        marks, out.ready = out.timings, None
        out.seconds = (out.done if out.done is not None else time.perf_counter()) - marks[0]
        assert out.frames.shape[2] == out.pixel_range[1] - out.pixel_range[0], (
            "codec frame count disagrees with the chunk's pixel span"
        )
        if self.timings:
            cond, dit, dec = (b - a for a, b in zip(marks, marks[1:]))
            out.timings = {
                "condition": cond,
                "dit": dit,
                "decode": dec,
                "host": max(out.seconds - cond - dit - dec, 0.0),
            }
        else:
            out.timings = None
        return out

    @torch.no_grad()  # as step: nothing here is trained (a codec loaded for fitting keeps requires_grad)
    def stream(
        self, state: StreamState, source: Optional[TrackSource], *, num_chunks: Optional[int] = None
    ) -> Iterator[ChunkOutput]:
        """Yield chunks as soon as each is decoded; ``source(i, (lo, hi))`` is asked for chunk i's
        tracks just before chunk i is generated (with ``overlap_decode``: before chunk i - 1 is handed
        out). Runs forever when ``num_chunks`` is None. The final state is the generator's return value
        (``StopIteration.value``). Both orders give the same chunks."""
        n, pending = 0, None
        while num_chunks is None or n < num_chunks:
            i = state.chunk
            got = source(i, self.pixel_range(i)) if source is not None else None
            tracks, vis = (None, None) if got is None else got
            out, state = self._decode(*self._sample(state, tracks, vis))
            n += 1
            if not self.overlap_decode:
                yield self._finish(out)
                continue
            if pending is not None:  # chunk i is queued behind chunk i - 1's decode: hand that one out now
                yield self._finish(pending)
            pending = out
        if pending is not None:
            yield self._finish(pending)
        return state
