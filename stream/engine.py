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

Memory is constant: the state is (cache of S + W chunks, decoder state, counters, the noise
generator's state); nothing grows with the number of chunks (tests/test_stream_engine.py checks the
bytes held after hundreds of frames). The state is immutable (``StreamState``): ``step``
returns a new one, so a caller may keep, replay or branch a stream (DragStream-style edits).
Legend as in ``stream.chunks``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import torch

from models.causal import KVCache
from models.precision import synchronize
from stream.chunks import (
    StreamConfig,
    VideoCondition,
    build_video_condition,
    chunk_condition,
    chunk_pixel_frames,
    commit_chunk,
    denoise_chunk,
    start_cache,
    track_features,
)

__all__ = ["StreamState", "ChunkOutput", "StreamingGenerator", "TrackSource", "tracks_from_array", "state_nbytes",
           "collect"]

# A track source is called with (chunk index, [start, stop) pixel frames) when that chunk is
# about to be generated and returns (tracks [B, T, N, 2], visibility [B, T, N]) for exactly those
# frames, or None for "no tracks" (the empty motion condition) - e.g. a user who let go.
TrackSource = Callable[[int, tuple[int, int]], Optional[tuple[torch.Tensor, torch.Tensor]]]


@dataclass(frozen=True, eq=False)
class StreamState:
    cond: VideoCondition
    cache: KVCache
    decode: Any  # the codec's decode state (functional)
    noise: torch.Tensor  # state of the noise generator (a tensor, so replaying a state replays its noise)
    chunk: int = 0  # next chunk to generate
    frames_out: int = 0  # pixel frames emitted so far
    nfe: int = 0  # network evaluations so far


@dataclass
class ChunkOutput:
    index: int
    frames: torch.Tensor  # [B, 3, T_chunk, H, W] in [-1, 1]
    latents: torch.Tensor  # [B, C, f, h, w]
    pixel_range: tuple[int, int]  # [start, stop) pixel frames of the whole video
    nfe: int  # network evaluations spent on this chunk
    seconds: float  # wall time of this chunk (DiT + decode), measured in ``step``


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

    def __init__(self, network, codec, *, config: StreamConfig, device: Union[str, torch.device, None] = None,
                 image_features_fn: Optional[Callable[[torch.Tensor], Optional[torch.Tensor]]] = None,
                 compile: bool = False):
        self.network, self.codec, self.config = network.eval(), codec.eval(), config
        if compile:  # the whole-step compile needs the static-buffer step first: refuse rather than pretend
            raise ValueError("compile=True: the compiled streaming step (static cache buffers + CUDA graphs) is not "
                             "built yet; run without --compile")
        self.compile = False
        # first frame -> CLIP tokens (Conditioner.image_features) for networks with the image branch
        self.image_features_fn = image_features_fn
        # The network's own device: inputs follow it (a separate default would send them elsewhere).
        own = next(network.parameters()).device
        if device is not None and torch.device(device) != own and not (
                torch.device(device).type == own.type and torch.device(device).index is None):
            raise ValueError(f"device={device} but the network is on {own}: move it first (load_export(device=...))")
        self.device = own
        self.causal = config.causal
        self.sigmas = config.sigmas()

    @torch.no_grad()
    def start(self, image: torch.Tensor, text: torch.Tensor, text_lengths: torch.Tensor, *,
              track_ids: Optional[torch.Tensor] = None, seed: int = 0,
              image_features: Optional[torch.Tensor] = None) -> StreamState:
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
        cond = build_video_condition(self.network, self.codec, image.to(self.device), text.to(self.device),
                                     text_lengths.to(self.device), track_ids=track_ids,
                                     image_features=None if image_features is None else image_features.to(self.device))
        noise = torch.Generator(device=self.device).manual_seed(int(seed)).get_state()
        return StreamState(cond=cond, cache=start_cache(self.network, cond, self.causal),
                           decode=self.codec.init_decode_state(), noise=noise)

    def pixel_range(self, index: int) -> tuple[int, int]:
        return chunk_pixel_frames(self.causal, index)

    def condition(self, state: StreamState, tracks: Optional[torch.Tensor] = None,
                  visibility: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """The DiT's ``y`` for chunk ``state.chunk`` from ITS tracks [B, T_chunk, N, 2] (+ visibility),
        or None for the empty motion condition."""
        i = state.chunk
        lo, hi = self.pixel_range(i)
        if tracks is not None:
            if tracks.ndim != 4 or tracks.shape[1] != hi - lo:
                raise ValueError(f"chunk {i} covers pixel frames [{lo}, {hi}): tracks must be [B, {hi - lo}, N, 2], "
                                 f"got {tuple(tracks.shape)}")
            if visibility is None:
                visibility = torch.ones(tracks.shape[:3], dtype=torch.bool)
            tracks, visibility = tracks.to(self.device).float(), visibility.to(self.device).bool()
        motion = track_features(state.cond, tracks, visibility, embed_dim=self.network.track_embed_dim)
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
    def step(self, state: StreamState, tracks: Optional[torch.Tensor] = None,
             visibility: Optional[torch.Tensor] = None) -> tuple[ChunkOutput, StreamState]:
        """Generate chunk ``state.chunk`` given ITS tracks [B, T_chunk, N, 2] (+ visibility), or
        None for the empty motion condition. Returns the decoded chunk and the next state."""
        synchronize(self.device)
        t0 = time.perf_counter()
        y = self.condition(state, tracks, visibility)
        gen = self.noise_generator(state)
        if state.chunk == 0 and self.config.first_chunk_given:
            x0 = state.cond.image_latent  # the given first frame: clean, no sampling
        else:
            shape = self.chunk_shape(state)
            draw = lambda: torch.randn(shape, generator=gen, device=self.device)  # noqa: E731
            x0 = denoise_chunk(self.network, state.cache, draw(), y, self.sigmas, fresh_noise=draw)
        return self.finish(state, x0, y, gen, t0)

    @torch.no_grad()
    def finish(self, state: StreamState, x0: torch.Tensor, y: Optional[torch.Tensor], gen: torch.Generator,
               t0: float) -> tuple[ChunkOutput, StreamState]:
        """Commit chunk ``state.chunk``'s clean latents ``x0`` (the cache rolls), decode them and advance
        the state; ``gen``: the noise generator after the chunk's draws, ``t0``: when the chunk started."""
        i = state.chunk
        lo, hi = self.pixel_range(i)
        cache = commit_chunk(self.network, state.cache, x0, y)
        frames, decode = self.codec.decode_chunk(x0, state.decode)
        nfe = self.config.nfe_per_chunk(i)
        synchronize(self.device)  # GPU work is queued: without this the time is of the launches only
        out = ChunkOutput(index=i, frames=frames.float(), latents=x0, pixel_range=(lo, hi), nfe=nfe,
                          seconds=time.perf_counter() - t0)
        assert frames.shape[2] == hi - lo, "codec frame count disagrees with the chunk's pixel span"
        new = replace(state, cache=cache, decode=decode, noise=gen.get_state(), chunk=i + 1,
                      frames_out=state.frames_out + (hi - lo), nfe=state.nfe + nfe)
        return out, new

    def stream(self, state: StreamState, source: Optional[TrackSource], *,
               num_chunks: Optional[int] = None) -> Iterator[ChunkOutput]:
        """Yield chunks as soon as each is decoded; ``source(i, (lo, hi))`` is asked for chunk i's
        tracks just before chunk i is generated. Runs forever when ``num_chunks`` is None. The final
        state is the generator's return value (``StopIteration.value``)."""
        n = 0
        while num_chunks is None or n < num_chunks:
            i = state.chunk
            got = source(i, self.pixel_range(i)) if source is not None else None
            tracks, vis = (None, None) if got is None else got
            out, state = self.step(state, tracks, vis)
            n += 1
            yield out
        return state


def tracks_from_array(tracks: torch.Tensor, visibility: torch.Tensor, *, hold_last: bool = False) -> TrackSource:
    """A ``TrackSource`` over pre-recorded tracks [B, T, N, 2] / visibility [B, T, N] (offline
    motion transfer, tests, the held-out evaluation). Past the end: None (no tracks), or the last
    frame held still with ``hold_last``."""
    T = tracks.shape[1]

    def source(index: int, span: tuple[int, int]):
        lo, hi = span
        if lo >= T and not hold_last:
            return None
        idx = torch.arange(lo, hi).clamp(max=T - 1)
        return tracks.index_select(1, idx), visibility.index_select(1, idx)

    return source


def collect(chunks: Iterable[ChunkOutput]) -> tuple[torch.Tensor, torch.Tensor, list[ChunkOutput]]:
    """Concatenate streamed chunks -> (frames [B, 3, T, H, W], latents [B, C, F, h, w], outputs)."""
    outs = list(chunks)
    return torch.cat([o.frames for o in outs], 2), torch.cat([o.latents for o in outs], 2), outs
