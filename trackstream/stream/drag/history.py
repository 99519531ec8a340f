"""The history a drag needs: one record per generated chunk, and the exact replay of a recorded chunk's input
at step T' (where a later drag reads its reference features).

Legend as in ``stream.chunks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from trackstream.diffusion.schedule import add_noise
from trackstream.stream.chunks import denoise_chunk
from trackstream.stream.drag.optimize import DragConfig
from trackstream.stream.engine import StreamingGenerator, StreamState

__all__ = ["ChunkRecord", "input_at_step"]


@dataclass(frozen=True, eq=False)
class ChunkRecord:
    """One generated chunk: the states before and after it, its conditioning, its clean latents and
    (when the chunk was dragged) its optimised input at step T'."""

    before: StreamState
    after: StreamState
    y: Optional[torch.Tensor]
    latents: torch.Tensor
    z_tprime: Optional[tuple[int, torch.Tensor]] = None  # (sampler step, its input) as generated


def input_at_step(engine: StreamingGenerator, rec: ChunkRecord, cfg: DragConfig) -> torch.Tensor:
    """Input of the reference chunk at step T': stored if it was dragged, else replayed exactly
    (same noise draws); chunk 0 (the clean image latent) is noised to that level with a fixed seed."""
    sig = engine.sigmas
    if rec.z_tprime is not None and rec.z_tprime[0] == cfg.step_index:
        return rec.z_tprime[1]
    if rec.before.chunk == 0:
        gen = torch.Generator(device=engine.device).manual_seed(cfg.seed)
        noise = torch.randn(rec.latents.shape, generator=gen, device=engine.device)
        return add_noise(rec.latents, noise, sig[cfg.step_index].float().expand(1).to(noise.device))
    gen = engine.noise_generator(rec.before)
    shape = engine.chunk_shape(rec.before)
    draw = lambda: torch.randn(shape, generator=gen, device=engine.device)  # noqa: E731
    return denoise_chunk(
        engine.network,
        rec.before.cache,
        draw(),
        rec.y,
        sig,
        fresh_noise=draw,
        input_at=cfg.step_index,
        buffers=engine.buffers,
    )
