"""Optional auxiliary loss for small-compute teachers: supervise one attention head with the tracks.

Motion control in MotionStream's design rests on one mechanism: a token of frame f carries the
sinusoidal IDs of the tracks now inside it, and attention matches them with the same IDs in the
first frame, whose content it copies. A large pretrained DiT discovers this from the flow loss
alone; a tiny DiT trained from scratch for a few CPU minutes does not (its one-step predictions
for frames >= 1 stay the dataset mean: tests on the synthetic world). The tracks give the exact
answer, so this module turns them into a target for ONE head of ONE layer:

  target[b, (f, p), q] = fraction of the visible tracks in token p of latent frame f that started
                         (pixel frame 0) in token q of latent frame 0,
  loss = cross-entropy(softmax over ALL keys of that head's RoPE'd logits, target),

averaged over query tokens that hold at least one such track. The softmax runs over all keys, as
the attention's own does: normalising over frame-0 keys only taught the head which frame-0 token
to prefer but let it keep most of its weight on other frames, so nothing was copied (one-step
predictions of frames >= 1 stayed the dataset mean). The attention itself is computed
exactly as usual (``models.wan.FullRoPEAttention`` semantics through the DiT's
``attention=`` extension point), so the network, its checkpoints and inference are unchanged;
only training gets the extra signal. It is OFF by default (``stage.correspondence_weight: 0``);
``experiment=tiny_teacher`` switches it on. Not part of MotionStream.

Legend: B batch, T pixel frames, N tracks, F latent frames, S tokens per latent frame,
L = F * S tokens, D head dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trackstream.models.attention import sdpa
from trackstream.models.rope import apply_rope, grid_positions, rope_cos_sin

__all__ = ["CorrespondenceProbe", "correspondence_targets", "correspondence_loss", "CORRESPONDENCE_SOURCES"]

CORRESPONDENCE_SOURCES = ("first", "previous")


class CorrespondenceProbe:
    """A ``SelfAttentionFn``: full bidirectional RoPE attention that also keeps, for ``layer``,
    the logits of ``head``'s queries in latent frames >= 1 over all keys (frame 0's come first)."""

    def __init__(self, grid: tuple[int, int, int], head_dim: int, *, layer: int, head: int, device):
        pos = grid_positions(grid, 0, device=device)
        self.cos, self.sin = rope_cos_sin(pos, head_dim)
        self.layer, self.head, self.tokens_per_frame = layer, head, grid[1] * grid[2]
        self.logits: torch.Tensor | None = None  # [B, L - S, L]

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = apply_rope(q, self.cos, self.sin).to(v.dtype)  # [B, L, N, D]
        k = apply_rope(k, self.cos, self.sin).to(v.dtype)
        if layer == self.layer:
            S = self.tokens_per_frame
            qh, kh = q[:, S:, self.head].float(), k[:, :, self.head].float()  # [B, L-S, D], [B, L, D]
            self.logits = qh @ kh.transpose(1, 2) / math.sqrt(q.shape[-1])
        return sdpa(q, k, v)


def correspondence_targets(
    tracks: torch.Tensor,
    visibility: torch.Tensor,
    *,
    grid: tuple[int, int, int],
    token_px: tuple[int, int],
    temporal_factor: int = 4,
    source: str = "first",
) -> torch.Tensor:
    """Tracks [B, T, N, 2] (pixels) + visibility [B, T, N] -> target [B, (F-1)*S, S] (rows sum to 1
    where a track is present, 0 elsewhere). ``token_px``: pixels per token (8 x patch) as (h, w).
    ``source``: where each track's content is taken from: ``first``, its token in latent frame 0 (pixel
    frame 0); ``previous``, its token in the previous latent frame (that frame's last pixel frame), so the
    head learns to carry content from frame to frame (``correspondence_loss`` reads the same key frame)."""
    if source not in CORRESPONDENCE_SOURCES:
        raise ValueError(f"stage.correspondence_source={source!r}; choose one of {CORRESPONDENCE_SOURCES}")
    B, T, N, _ = tracks.shape
    nf, gh, gw = grid
    S = gh * gw
    th, tw = token_px
    col = torch.div(tracks[..., 0], tw, rounding_mode="floor").long()  # [B, T, N]
    row = torch.div(tracks[..., 1], th, rounding_mode="floor").long()
    inside = (col >= 0) & (col < gw) & (row >= 0) & (row < gh) & visibility.bool()
    token = row.clamp(0, gh - 1) * gw + col.clamp(0, gw - 1)  # [B, T, N]
    t = torch.arange(1, T, device=tracks.device)
    latent = 1 + torch.div(t - 1, temporal_factor, rounding_mode="floor")  # latent frame of pixel frame t
    # the pixel frame each pixel frame t takes its content from: 0, or the previous latent frame's last
    ref = torch.zeros_like(t) if source == "first" else temporal_factor * (latent - 1)  # [T-1]
    ref_ok, ref_tok = inside[:, ref], token[:, ref]  # [B, T-1, N]
    keep = (latent < nf)[None, :, None] & inside[:, 1:] & ref_ok  # [B, T-1, N]
    b_idx, t_idx, n_idx = keep.nonzero(as_tuple=True)
    rows = (latent[t_idx] - 1) * S + token[:, 1:][b_idx, t_idx, n_idx]
    cols = ref_tok[b_idx, t_idx, n_idx]
    counts = torch.zeros(B, (nf - 1) * S, S, device=tracks.device)
    counts.index_put_((b_idx, rows, cols), torch.ones_like(rows, dtype=counts.dtype), accumulate=True)
    return counts / counts.sum(-1, keepdim=True).clamp_min(1.0)


def correspondence_loss(logits: torch.Tensor, target: torch.Tensor, *, source: str = "first") -> torch.Tensor:
    """Cross-entropy of the probed head (logits [B, L-S, L] over all keys) against the track
    correspondences (target [B, L-S, S] over the source frame's keys: frame 0's, or for ``previous`` the
    keys of the frame before each query's; rows with a target count)."""
    has = (target.sum(-1) > 0).float()  # [B, L-S]
    S = target.shape[-1]
    logp = F.log_softmax(logits, dim=-1)  # [B, (F-1) S, F S], keys in frame order
    if source == "first":
        logp = logp[..., :S]  # frame-0 keys come first
    else:  # query frame f (f = 1..F-1) reads the keys of frame f - 1: block (f - 1, f - 1) of [F-1, S, F, S]
        B, rows, L = logp.shape
        nf = L // S
        blocks = logp.view(B, nf - 1, S, nf, S)
        f = torch.arange(nf - 1, device=logp.device)
        logp = blocks[:, f, :, f].permute(1, 0, 2, 3).reshape(B, rows, S)  # [B, (F-1) S, S]
    ce = -(target * logp).sum(-1)
    return (ce * has).sum() / has.sum().clamp_min(1.0)  # no host sync: 0 when nothing is tracked
