"""Rollouts past the teacher's horizon, and the chunk arithmetic that says what a rollout trains.

A student streams with a rolling cache: once the stream is longer than the sink and the window, a chunk
attends to the sink and to a window that is no longer adjacent to it, at RoPE positions shifted from its
absolute ones (a *rolled* chunk, ``rolled_chunks``). A rollout as long as the teacher's horizon trains no
rolled chunk when the horizon is short (the tiny world's 25 frames = the first frame + 2 chunks of 3 under
c3s1w1), so a student trained that way meets rolled chunks first at inference, and drifts there.

``stage.rollout_horizons = N`` (DMD and RL) rolls the student out over N teacher horizons through its
rolling cache: ``1 + N (F_h - 1)`` latent frames for a horizon of ``F_h`` (the pairs' length, whose frame 0
is the first frame). The teacher still only scores what it was trained on: for DMD the rollout is cut into
N horizon-sized *windows* (``split_windows``):

* window 0 is the rollout's first ``F_h`` latents, the user's first frame included;
* window k >= 1 holds the next ``F_h - 1`` generated latents behind a first frame that is the rollout's
  last pixel frame before them, decoded from the committed latents and re-encoded as an image (the
  teacher's latent frame 0 is always a single encoded image, and its image channels, CLIP tokens and the
  tracks' first frame follow the same frame); the window's tracks are the stream's tracks from that frame;
* the DMD and critic losses see the N windows as N samples of a batch, each of the teacher's shape; the
  window's first latent is a constant (no gradient: only each window's new frames are trained).

N = 1 is the plain DMD exactly (``split_windows`` returns its inputs). The choice against the alternatives
(overlap frames, a longer teacher) is argued in docs/long-horizon.md.
Legend: B batch, C channels, F latent frames, T pixel frames, h/w latent size, D track-embed dim.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from trackstream.models.streaming import CausalConfig, first_chunk_given
from trackstream.models.tracks import TEMPORAL_FACTOR, latent_frames

__all__ = [
    "rolled_chunks",
    "rollout_latents",
    "rollout_frames",
    "check_horizons",
    "distinct_masks",
    "split_windows",
]


def rolled_chunks(cfg: CausalConfig, num_latents: int) -> list[int]:
    """The chunks of a ``num_latents`` stream that attend to the sink and to a window not adjacent to it
    (the cache has rolled: keys sit at RoPE positions other than their absolute ones)."""
    out = []
    for i in range(cfg.num_chunks(num_latents)):
        sink, window = cfg.cache_chunks(i)
        if cfg.window_frames is not None:  # a frame window has rolled once frames between sink and window went
            if sink and window and cfg.cache_start(i) < cfg.chunk_start(i):
                out.append(i)
        elif sink and window and window[0] > sink[-1] + 1:
            out.append(i)
    return out


def rollout_latents(horizon_latents: int, horizons: int, cfg: Optional[CausalConfig] = None) -> int:
    """Latent frames of a rollout over ``horizons`` teacher horizons of ``horizon_latents`` (frame 0 shared):
    ``1 + N (F_h - 1)``. With a sampled first chunk (``cfg`` given; the 1.3B's chunking, where chunk 0 is as
    long as the others) that rarely splits into whole chunks (41 latents for two 21-latent horizons in
    chunks of 3), so the rollout runs on to the next chunk boundary (42): the latents past the last window
    are rolled out and not scored."""
    n = 1 + horizons * (horizon_latents - 1)
    if horizons == 1 or cfg is None or first_chunk_given(cfg):
        return n
    return -(-n // cfg.chunk_frames) * cfg.chunk_frames


def rollout_frames(horizon_frames: int, horizons: int, cfg: Optional[CausalConfig] = None) -> int:
    """Pixel frames of that rollout: ``1 + N (T_h - 1)`` (49 for two 25-frame horizons; 165 for two 81-frame
    horizons with a sampled first chunk, whole chunks)."""
    f_h = latent_frames(horizon_frames)
    return 1 + TEMPORAL_FACTOR * (rollout_latents(f_h, horizons, cfg) - 1)


def check_horizons(
    cfg: CausalConfig, horizons: int, horizon_frames: int | None = None, *, field: str = "stage"
) -> None:
    """A rollout over ``horizons`` > 1 windows needs a horizon of ``horizon_frames`` (when given) that the
    recipe's chunking tiles: ``1 + 4k`` frames, with the k latents after frame 0 in whole chunks when the
    first chunk is given (the 5B, the tiny world), or all ``1 + k`` in whole chunks when it is sampled (the
    1.3B: 21 latents = 7 chunks of 3)."""
    if isinstance(horizons, bool) or not isinstance(horizons, int) or horizons < 1:
        raise ValueError(f"{field}.rollout_horizons={horizons!r} must be an int >= 1 (1: the teacher's horizon)")
    if horizons == 1 or horizon_frames is None:
        return
    f_h = latent_frames(horizon_frames)
    given = first_chunk_given(cfg)
    if (horizon_frames - 1) % TEMPORAL_FACTOR or (f_h - int(given)) % cfg.chunk_frames:
        which = "k latents" if given else "1 + k latents (the first chunk is sampled)"
        raise ValueError(
            f"data.num_frames={horizon_frames} (the teacher's horizon) must be 1 + 4k frames whose {which} "
            f"split into chunks of {cfg.chunk_frames}, the chunking the teacher's clips were made with"
        )


def distinct_masks(base: CausalConfig, sinks: list, windows: list, num_latents: int) -> dict[tuple, tuple]:
    """{(sink, window): the visible-chunk sets of every chunk} for ODE init's draws at ``num_latents``:
    draws with equal values train the same mask."""
    out = {}
    for s in sinks:
        for w in windows:
            c = dataclasses.replace(
                base, sink_chunks=int(s), window_chunks=None if w is None else int(w), window_frames=None
            )
            n = c.num_chunks(num_latents)
            out[(s, w)] = tuple(tuple(j for j in range(n) if c.visible(i, j)) for i in range(n))
    return out


@torch.no_grad()
def _window_frames(codec, committed: torch.Tensor, starts: list[int]) -> list[torch.Tensor]:
    """The pixel frame before each window start (latent index s: frame 4(s - 1)) [B, 3, H, W], decoded once."""
    video = codec.decode(committed[:, :, : max(starts)])  # [B, 3, 1 + 4(s_max - 1), H, W]
    return [video[:, :, TEMPORAL_FACTOR * (s - 1)].float() for s in starts]


def split_windows(
    x: torch.Tensor,
    committed: torch.Tensor,
    batch: dict,
    *,
    horizon_latents: int,
    conditioner,
) -> tuple[torch.Tensor, dict]:
    """Rollout x [B, C, 1 + N (F_h - 1) (+ r), h, w] (the loss's latents, with grad) and its committed latents
    -> windows [N B, C, F_h, h, w] and the batch of their conditions (``image_latent``, ``image``,
    ``image_features``, ``motion``, ``text_emb``, ``text_len``, ``gid``; window-major). N = 1: the inputs.
    The r < F_h - 1 latents a sampled-first-chunk rollout runs past its last window (``rollout_latents``)
    are dropped here: no window scores them."""
    F = x.shape[2]
    n, rest = divmod(F - 1, horizon_latents - 1)
    assert n >= 1, f"{F} latents are shorter than one window of {horizon_latents}"
    if n == 1 and rest == 0:
        return x, batch
    keep = F - rest  # [B, C, 1 + N (F_h - 1), h, w]
    x, committed = x[:, :, :keep], committed[:, :, :keep]
    T_h = 1 + TEMPORAL_FACTOR * (horizon_latents - 1)
    starts = [1 + k * (horizon_latents - 1) for k in range(1, n)]  # first generated latent of windows 1..
    firsts = _window_frames(conditioner.codec, committed.detach(), starts)
    xs, cond = [x[:, :, :horizon_latents]], {k: [] for k in ("image_latent", "image", "image_features", "motion")}
    cond["image_latent"].append(batch["image_latent"])
    cond["image"].append(None if batch.get("image") is None else batch["image"][:, :, :horizon_latents])
    cond["image_features"].append(batch.get("image_features"))
    cond["motion"].append(batch["motion"][:, :, :T_h])
    for s, frame in zip(starts, firsts):
        latent = conditioner.first_latent(frame)  # [B, C, 1, h, w]: the window's frame 0, a constant
        xs.append(torch.cat([latent.to(x.dtype), x[:, :, s : s + horizon_latents - 1]], dim=2))
        cond["image_latent"].append(latent)
        cond["image"].append(conditioner.image(frame, num_frames=T_h))
        cond["image_features"].append(conditioner.image_features(frame))
        lo = TEMPORAL_FACTOR * (s - 1)  # the window's first pixel frame in the stream
        cond["motion"].append(batch["motion"][:, :, lo : lo + T_h])
    out = dict(batch)
    for key, parts in cond.items():
        out[key] = None if parts[0] is None else torch.cat(parts)
    if out["image"] is None:
        out.pop("image")
    if out["image_features"] is None:
        out.pop("image_features")
    for key in ("text_emb", "text_len"):
        out[key] = torch.cat([batch[key]] * n)
    if "gid" in batch:  # per-window sample ids: window k of sample g draws as sample g * N + k
        out["gid"] = torch.cat([batch["gid"] * n + k for k in range(n)])
    return torch.cat(xs), out
