"""How a causal student streams, one type from the config to the export to the engine.

``StreamConfig`` is the chunking (``CausalConfig``: C latents per chunk, S sink / W window chunks,
the kind of chunk 0), the K denoising steps per chunk and the schedule shift. The distillation
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
from trackstream.models.causal import CausalConfig
from trackstream.models.channel_layouts import IMAGE_IN_LATENT  # layouts whose image is latent frame 0

__all__ = ["StreamConfig", "first_chunk_given", "check_first_chunk"]


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
