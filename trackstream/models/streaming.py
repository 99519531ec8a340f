"""How a causal student streams, one type from the config to the export to the engine (the attention that
realises it, the block mask and the rolling cache, is ``models.causal`` / ``models.block_causal``).

``CausalConfig`` is the chunking (C latents per chunk, S sink / W window chunks, the kind of chunk 0, the
RoPE policy) and its arithmetic (which chunks a chunk sees, where its frames sit in the cache);
``StreamConfig`` is that chunking, the K denoising steps per chunk and the schedule shift. The distillation
stages build it from ``stage.causal``, ``schedule.student_steps`` and ``schedule.shift``; the
export writes it to ``network.json`` (``conventions.causal``, a flat JSON object: the chunking
fields plus ``steps`` and ``shift``); the streaming engine, the evaluation, DragStream and the demo
read it back from the export (``Conventions.stream_config``).

Chunk layout, two kinds (``first_chunk_given``):
* given first chunk (``first_chunk_frames=1``): chunk 0 is the first latent frame alone, the encoded
  first frame, clean and given, so the attention sink is exactly the user's image; chunks i >= 1
  have ``chunk_frames`` latents = 4 * chunk_frames pixel frames each. Latent frames = 1 + k*C.
  Needed where the image IS latent frame 0 (Wan 2.2 ``ti2v``).
* sampled first chunk (``first_chunk_frames`` null or = C): chunk 0 is C latents sampled from noise
  like every other chunk; the image enters only through the conditioning channels (``wan_i2v``,
  ``fun_control``). Latent frames = k*C: Wan's 81 frames = 21 latents = 7 chunks of 3, the layout
  Self-Forcing and MotionStream stream the 1.3B with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import torch

from trackstream.diffusion.schedule import sampling_sigmas
from trackstream.models.channel_layouts import IMAGE_IN_LATENT  # layouts whose image is latent frame 0

__all__ = ["ROPE_POLICIES", "CausalConfig", "StreamConfig", "first_chunk_given", "check_first_chunk"]


ROPE_POLICIES = ("relativistic", "absolute")


@dataclass  # not frozen: a Hydra schema node (stage.causal) must stay writable
class CausalConfig:
    """Chunked causal attention: chunk size C frames, S sink chunks, W window chunks (None: all).

    The defaults are MotionStream's c3s1w1 with chunk 0 = the first frame's latent alone, the one
    definition every stage (``stage.causal``, Hydra node ``causal/c3s1w1``) and the engine start from."""

    chunk_frames: int = 3
    sink_chunks: int = 1
    window_chunks: Optional[int] = 1
    # 1: chunk 0 is the given first-frame latent alone; None (or chunk_frames): chunk 0 is sampled like the others
    first_chunk_frames: Optional[int] = 1
    # a window counted in latent frames instead of chunks: the newest window_frames non-sink frames before the
    # current chunk stay visible (the oldest chunk partly evicted); needs window_chunks=None. FastVideo's
    # local_attn_size L (sink and current block included) is window_frames = L - sink frames - chunk_frames.
    window_frames: Optional[int] = None
    # with first_chunk_frames=1: chunk 0 (one latent) is sampled from noise like the others, the image entering
    # through the conditioning channels only (FastVideo's blocks [1] + [C] x k) instead of being given
    first_chunk_sampled: bool = False
    # RoPE of the cached keys: "relativistic" ropes every key by its slot in the cache layout
    # [sink][window][current] from 0 (keys cached un-roped; positions stay bounded); "absolute" by its
    # latent frame index in the video (FastVideo's rope_cache_policy, both values)
    rope: str = "relativistic"

    def __post_init__(self):
        def check(name, value, lo, allow_none):
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                none = " or None" if allow_none else ""
                raise ValueError(f"CausalConfig.{name}={value!r}: expected an int >= {lo}{none}")

        check("chunk_frames", self.chunk_frames, 1, False)
        check("sink_chunks", self.sink_chunks, 0, False)
        check("window_chunks", self.window_chunks, 0, True)
        check("first_chunk_frames", self.first_chunk_frames, 1, True)
        if self.first_chunk_frames not in (None, 1, self.chunk_frames):
            raise ValueError(
                f"CausalConfig.first_chunk_frames={self.first_chunk_frames}: use 1 (chunk 0 = the given first-frame latent) or "
                f"null (chunk 0 sampled like the others, {self.chunk_frames} latents, the image in the channels)"
            )
        check("window_frames", self.window_frames, 0, True)
        if self.window_frames is not None and self.window_chunks is not None:
            raise ValueError(
                f"CausalConfig.window_frames={self.window_frames} with window_chunks={self.window_chunks}: a window is "
                "counted in chunks or in frames; set window_chunks=null"
            )
        if not isinstance(self.first_chunk_sampled, bool):
            raise ValueError(f"CausalConfig.first_chunk_sampled={self.first_chunk_sampled!r}: expected true or false")
        if self.first_chunk_sampled and self.first_chunk_frames != 1:
            raise ValueError(
                f"CausalConfig.first_chunk_sampled=true with first_chunk_frames={self.first_chunk_frames}: a sampled "
                "chunk 0 of chunk_frames latents is first_chunk_frames=null; sampled alone it is first_chunk_frames=1"
            )
        if self.rope not in ROPE_POLICIES:
            raise ValueError(f"CausalConfig.rope={self.rope!r}; choose one of {ROPE_POLICIES}")

    @property
    def name(self) -> str:
        """Short tag, e.g. ``c3s1w1``, ``c3s1wfull``, ``c3s1w1f1`` (first chunk of 1 frame)."""
        f = "" if self.first_chunk_frames in (None, self.chunk_frames) else f"f{self.first_chunk_frames}"
        f += "s" if self.first_chunk_sampled else ""
        return f"c{self.chunk_frames}s{self.sink_chunks}w{self.window_tag}{f}" + self.rope_tag

    @property
    def window_tag(self) -> str:
        """``1`` (chunks), ``full`` or ``2fr`` (frames) in names."""
        if self.window_frames is not None:
            return f"{self.window_frames}fr"
        return "full" if self.window_chunks is None else str(self.window_chunks)

    @property
    def rope_tag(self) -> str:
        return "" if self.rope == "relativistic" else f"-{self.rope}"

    def to_dict(self) -> dict:
        """The fields, those added after version 1 of network.json only when set (older exports stay byte-equal)."""
        d = dataclasses.asdict(self)
        for name, default in LATER_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d

    def chunk_len(self, i: int) -> int:
        return self.first_chunk_frames if (i == 0 and self.first_chunk_frames) else self.chunk_frames

    def chunk_start(self, i: int) -> int:
        """Absolute first frame of chunk i."""
        return 0 if i == 0 else self.chunk_len(0) + (i - 1) * self.chunk_frames

    def num_chunks(self, num_frames: int) -> int:
        first = self.chunk_len(0)
        if num_frames < first or (num_frames - first) % self.chunk_frames:
            raise ValueError(
                f"{num_frames} latent frames do not split into chunks of {self.name}: use "
                f"{first} + k*{self.chunk_frames} frames"
            )
        return 1 + (num_frames - first) // self.chunk_frames

    @property
    def bounded(self) -> bool:
        """Whether the cache stops growing (a window in chunks or in frames), i.e. static step buffers fit."""
        return self.window_chunks is not None or self.window_frames is not None

    def visible(self, i, j):
        """Whether query chunk i attends to key chunk j, to any of its frames (ints or broadcastable int
        tensors); with ``window_frames`` the oldest visible chunk may be seen in part (``frame_visible``)."""
        ok = j <= i
        if self.window_frames is not None:
            j_end = self._start(j) + self.chunk_len(1) + (j == 0) * (self.chunk_len(0) - self.chunk_len(1))
            return ok & ((j < self.sink_chunks) | (j == i) | (j_end > self._start(i) - self.window_frames))
        if self.window_chunks is None:
            return ok
        return ok & ((j < self.sink_chunks) | (j >= i - self.window_chunks))

    def frame_visible(self, i, j, frame):
        """Whether query chunk i attends to key frame ``frame`` (absolute latent index) of key chunk j: the
        chunk rule, and with ``window_frames`` only the newest window_frames non-sink frames before chunk i
        (ints or broadcastable int tensors)."""
        if self.window_frames is None:
            return self.visible(i, j)
        return (j <= i) & ((j < self.sink_chunks) | (j == i) | (frame >= self._start(i) - self.window_frames))

    def _start(self, i):
        """``chunk_start`` for an int or an int tensor (no branch on the value)."""
        return (i > 0) * (self.chunk_len(0) + (i - 1) * self.chunk_frames)

    def sink_frames(self, i: int) -> int:
        """Frames of the sink chunks held when chunk i is generated."""
        return sum(self.chunk_len(j) for j in range(min(self.sink_chunks, i)))

    def cache_chunks(self, i: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(sink ids, window ids) held by the cache when chunk i is generated (with ``window_frames`` the
        first window chunk may be held in part: ``window_span``)."""
        sink = tuple(range(min(self.sink_chunks, i)))
        if self.window_frames is not None:
            lo = self.chunk_start(i) - self.window_frames  # first visible non-sink frame
            return sink, tuple(j for j in range(self.sink_chunks, i) if self.chunk_start(j) + self.chunk_len(j) > lo)
        lo = self.sink_chunks if self.window_chunks is None else max(self.sink_chunks, i - self.window_chunks)
        return sink, tuple(range(lo, i))

    def window_span(self, i: int) -> int:
        """Non-sink frames the cache holds when chunk i is generated."""
        nonsink = self.chunk_start(i) - self.sink_frames(i)
        if self.window_frames is not None:
            return min(self.window_frames, nonsink)
        return sum(self.chunk_len(j) for j in self.cache_chunks(i)[1])

    def cache_start(self, i: int) -> int:
        """RoPE frame position of chunk i's first frame in its own cache layout (bounded): sink frames +
        the window's frames (all of each window chunk, or with ``window_frames`` at most that many)."""
        if self.window_frames is not None:
            return self.sink_frames(i) + self.window_span(i)
        sink, window = self.cache_chunks(i)
        return sum(self.chunk_len(j) for j in sink + window)

    def rope_start(self, i: int) -> int:
        """Frame position of chunk i's first frame for RoPE: its cache slot (relativistic) or its frame in
        the video (absolute)."""
        return self.chunk_start(i) if self.rope == "absolute" else self.cache_start(i)


LATER_FIELDS = {"window_frames": None, "first_chunk_sampled": False, "rope": "relativistic"}


def first_chunk_given(cfg: CausalConfig) -> bool:
    """Whether chunk 0 is the first frame's clean latent alone (given, never sampled, 1 NFE: its commit)."""
    return cfg.first_chunk_frames == 1 and not cfg.first_chunk_sampled


def check_first_chunk(cfg: CausalConfig, *, layout: Optional[str] = None, field: str = "causal") -> None:
    """The sampled chunk 0 needs the image in the conditioning channels: a layout whose image is latent
    frame 0 (``ti2v``) streams with the given first chunk. (The value itself is checked by CausalConfig.)"""
    if layout in IMAGE_IN_LATENT and not first_chunk_given(cfg):
        raise ValueError(
            f"{field}.first_chunk_frames={cfg.first_chunk_frames} with layout {layout!r}: the image is latent "
            f"frame 0 of x, clean at t = 0, so chunk 0 must be that frame alone: set {field}.first_chunk_frames=1"
        )


@dataclass(frozen=True)
class StreamConfig:
    """Chunked causal sampling: the chunking (``causal``, c3s1w1 with chunk 0 = the image latent by
    default) and K denoising steps per chunk on the shared step grid with schedule shift ``shift``."""

    causal: CausalConfig = field(default_factory=CausalConfig)
    steps: int = 3  # K: denoising steps per chunk (MotionStream: 3)
    shift: float = 5.0  # the shared schedule shift (cfg.schedule.shift)
    # the K noise levels themselves, descending in (0, 1], when they are not points of the shared grid
    # (FastVideo's students: their scheduler's timesteps at 1000, 750, 500, 250 under shift 6); None: the grid's
    sigma_list: Optional[tuple[float, ...]] = None

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"StreamConfig.steps={self.steps!r} must be an int >= 1")
        if not self.shift > 0:
            raise ValueError(f"StreamConfig.shift={self.shift} must be > 0")
        if self.sigma_list is not None:
            levels = tuple(float(s) for s in self.sigma_list)
            object.__setattr__(self, "sigma_list", levels)
            if len(levels) != self.steps:
                raise ValueError(
                    f"StreamConfig.sigma_list has {len(levels)} levels for steps={self.steps}: give one a step"
                )
            if not all(0 < s <= 1 for s in levels) or any(a <= b for a, b in zip(levels, levels[1:])):
                raise ValueError(f"StreamConfig.sigma_list={list(levels)} must descend strictly within (0, 1]")

    def replace(self, **changes) -> "StreamConfig":
        """A copy with chunking fields (e.g. ``sink_chunks=0``) or ``steps`` / ``shift`` replaced;
        a change given as None keeps the current value (command-line options left unset)."""
        steps, shift = changes.pop("steps", None), changes.pop("shift", None)
        causal = {k: v for k, v in changes.items() if v is not None}
        steps = self.steps if steps is None else steps
        shift = self.shift if shift is None else shift
        # explicit levels hold for their own step count and shift only: other steps take the shared grid
        keep = self.sigma_list is not None and steps == self.steps and shift == self.shift
        return StreamConfig(
            causal=dataclasses.replace(self.causal, **causal) if causal else self.causal,
            steps=steps,
            shift=shift,
            sigma_list=self.sigma_list if keep else None,
        )

    # ------------------------------------------------------------------ network.json ("causal")
    def to_dict(self) -> dict:
        out = {**self.causal.to_dict(), "steps": self.steps, "shift": self.shift}
        if self.sigma_list is not None:
            out["sigma_list"] = list(self.sigma_list)
        return out

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "conventions.causal") -> "StreamConfig":
        d = dict(d)
        try:
            steps, shift = int(d.pop("steps")), float(d.pop("shift"))
            levels = d.pop("sigma_list", None)
            causal = CausalConfig(**d)
        except (KeyError, TypeError) as e:
            raise ValueError(
                f"{source}: expected the chunking fields {[f.name for f in dataclasses.fields(CausalConfig)]} "
                f"plus steps and shift ({e}); re-export the student with the ODE-init or DMD stage"
            ) from None
        return cls(causal=causal, steps=steps, shift=shift, sigma_list=None if levels is None else tuple(levels))

    # ------------------------------------------------------------------ derived
    @property
    def chunk_frames(self) -> int:
        return self.causal.chunk_frames

    @property
    def first_chunk_given(self) -> bool:
        return first_chunk_given(self.causal)

    @property
    def name(self) -> str:  # e.g. c3s1w1k3 (given first chunk), c3s1w1k3f3 (sampled first chunk of 3)
        c = self.causal
        tail = "" if self.first_chunk_given else f"f{c.chunk_len(0)}"
        return f"c{c.chunk_frames}s{c.sink_chunks}w{c.window_tag}k{self.steps}{tail}{c.rope_tag}"

    def sigmas(self) -> torch.Tensor:
        """[K + 1] descending noise levels ending at 0: ``sigma_list`` when given, else points of the teacher's
        grid (diffusion.schedule)."""
        if self.sigma_list is not None:
            return torch.tensor([*self.sigma_list, 0.0], dtype=torch.float64)
        return sampling_sigmas(self.steps, shift=self.shift)

    def nfe_per_chunk(self, index: int) -> int:
        """Network evaluations of chunk ``index``: K noisy passes + the clean re-run (a given chunk 0: re-run only)."""
        return 1 if index == 0 and self.first_chunk_given else self.steps + 1
