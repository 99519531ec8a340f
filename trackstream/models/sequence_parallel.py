"""Ulysses sequence parallelism for the Wan DiT's bidirectional self-attention.

The K ranks of a sequence group hold the same sample and each runs the blocks on 1/K of its tokens.
Everything in a Wan block is per token (modulation, cross-attention to the text, FFN) except
self-attention, which needs every token: before it an all-to-all turns q, k, v [B, L/K, N, D] (all
heads of a slice) into [B, L, N/K, D] (a K-th of the heads over the whole sequence), attention runs
there, and a second all-to-all brings the output back to [B, L/K, N, D] (DeepSpeed-Ulysses). RoPE
rotates q and k of the slice at the GLOBAL positions of its tokens before the first all-to-all.

Layout (``SequenceShard``): each latent frame's S = H'*W' tokens are cut into K contiguous runs of S/K
and rank k holds run k of every frame. A slice is then whole frames of S/K tokens, so the per-frame
modulation (e0 [B, F, 6, dim]) and the head apply to it unchanged; the all-to-all gathers the sequence
in rank-major order, a permutation of the grid order that full (unmasked) attention does not see,
since RoPE travels with each token. Hence the requirements: num_heads and S divisible by K.

Masked and cached attention (the causal student: its block-causal training mask, the rolling KV cache
of the DMD rollout; ``models.causal_sp``) see the sequence in that rank-major order: the mask is taken
in the permuted order (``SequenceShard.order``) and the cache keeps each chunk's K/V as the all-to-all
delivers them, [B, L, N/K, D] in that order, roped at the permuted positions: each rank caches its K-th
of the heads. Not here: heads not divisible by K (that needs ring attention: refused).

Gradients: every all-to-all is its own adjoint, so its backward is the same exchange of the gradient.
The output is all-gathered (``gather``) so each rank of the group computes the whole loss, as one
process would; the gather's backward sums the K ranks' (identical) output gradients before taking
the local slice, i.e. the group trains the sum of its K identical losses. Each rank's parameter
gradient is then K times its slice's share, and the mean over all data x K ranks that DDP / FSDP take
equals the mean over the data ranks of the whole-sequence gradient: the one-process result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["SequenceShard", "all_to_all", "seq_to_heads", "heads_to_seq", "ulysses"]


class _AllToAll(torch.autograd.Function):
    """Equal chunks of dim 0: chunk j of rank i goes to rank j as its chunk i. Self-adjoint."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        x = x.contiguous()
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _AllToAll.apply(grad, ctx.group), None


class _Gather(torch.autograd.Function):
    """x [...] on each rank -> [K, ...] on every rank; backward: sum over the group, keep own slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group, ctx.rank = group, dist.get_rank(group)  # the rank within the group
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x, group=group)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()  # reduced in place: not the caller's buffer
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.rank], None


def all_to_all(x: torch.Tensor, group) -> torch.Tensor:
    """Autograd-correct ``all_to_all_single`` over equal chunks of dim 0 (size K)."""
    return _AllToAll.apply(x, group)


def seq_to_heads(x: torch.Tensor, group) -> torch.Tensor:
    """[B, L/K, N, D] (a slice, all heads) -> [B, L, N/K, D] (the sequence in rank-major order, heads
    of this rank's group k*N/K ... (k+1)*N/K - 1)."""
    K = dist.get_world_size(group)
    B, Ls, N, D = x.shape
    assert N % K == 0, (N, K)
    send = x.view(B, Ls, K, N // K, D).permute(2, 0, 1, 3, 4)  # [K dest, B, L/K, N/K, D]
    recv = all_to_all(send, group)  # [K source slice, B, L/K, N/K, D]
    return recv.permute(1, 0, 2, 3, 4).reshape(B, K * Ls, N // K, D)


def heads_to_seq(x: torch.Tensor, group) -> torch.Tensor:
    """Inverse of :func:`seq_to_heads`: [B, L, N/K, D] -> [B, L/K, N, D]."""
    K = dist.get_world_size(group)
    B, L, Nk, D = x.shape
    send = x.view(B, K, L // K, Nk, D).permute(1, 0, 2, 3, 4)  # [K dest slice, B, L/K, N/K, D]
    recv = all_to_all(send, group)  # [K source head group, B, L/K, N/K, D]
    return recv.permute(1, 2, 0, 3, 4).reshape(B, L // K, K * Nk, D)


def ulysses(attend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group) -> torch.Tensor:
    """``attend(q, k, v)`` over the whole sequence on N/K heads; q, k, v and the result [B, L/K, N, D]."""
    out = attend(seq_to_heads(q, group), seq_to_heads(k, group), seq_to_heads(v, group))
    return heads_to_seq(out, group)


@dataclass
class SequenceShard:
    """This rank's place in its sequence group (``group``: the K = ``size`` ranks sharing one sample;
    ``rank``: which slice this one holds). Built by :meth:`of` from a process group."""

    group: object  # torch.distributed ProcessGroup (None: layout only, no communication)
    size: int
    rank: int

    @classmethod
    def of(cls, group) -> "SequenceShard":
        return cls(group, dist.get_world_size(group), dist.get_rank(group))

    def check(self, num_heads: int, grid: tuple[int, int, int]) -> None:
        K = self.size
        if num_heads % K:
            raise ValueError(
                f"parallel.sequence_parallel={K} must divide the model's num_heads={num_heads} "
                "(Ulysses splits heads; ring attention is not implemented): choose a divisor of num_heads"
            )
        if (grid[1] * grid[2]) % K:
            raise ValueError(
                f"parallel.sequence_parallel={K} must divide the tokens per latent frame "
                f"({grid[1]}x{grid[2]} after patchify): change the resolution or the option"
            )

    def split(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, F*S, C] in grid order -> this rank's [B, F*S/K, C]: run ``rank`` of every frame's S tokens."""
        K, f = self.size, grid[0]
        B, L, C = x.shape
        return x.view(B, f, K, L // (f * K), C)[:, :, self.rank].reshape(B, L // K, C)

    def order(self, grid: tuple[int, int, int], device=None) -> torch.Tensor:
        """[L] grid indices in the order the all-to-all lays out the whole sequence: rank 0's slice, then
        rank 1's, ... (the index of each token in grid order)."""
        L = grid[0] * grid[1] * grid[2]
        idx = torch.arange(L, device=device).view(1, L, 1)
        return torch.cat([SequenceShard(None, self.size, r).split(idx, grid) for r in range(self.size)], 1).view(L)

    def gather(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """Every rank's [B, F*S/K, C] -> [B, F*S, C] in grid order, on every rank (autograd: see module doc)."""
        K, f = self.size, grid[0]
        B, Ls, C = x.shape
        parts = _Gather.apply(x, self.group)  # [K, B, F*S/K, C]
        return parts.view(K, B, f, Ls // f, C).permute(1, 2, 0, 3, 4).reshape(B, K * Ls, C)
