"""Wan's embeddings: the sinusoidal timestep features, the float32 time MLP and the CLIP image projection."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["sinusoidal_embedding", "FP32Sequential", "MLPProj"]


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[N] timesteps -> [N, dim] float32, cos first (official order), built in float64."""
    assert dim % 2 == 0
    half = dim // 2
    omega = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    args = t.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1).float()


class FP32Sequential(nn.Sequential):
    """A Sequential whose Linears run in float32 whatever their storage dtype (the official keeps the
    time embedding in fp32). A module call, so wrappers that gather parameters in forward hooks
    (FSDP) see it also on the streaming path; parameter names stay ``<i>.weight``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        for m in self:
            x = F.linear(x, m.weight.float(), m.bias.float()) if isinstance(m, nn.Linear) else m(x)
        return x


class MLPProj(nn.Module):
    """CLIP image tokens -> DiT width (official ``img_emb``); FLF2V adds a position table."""

    def __init__(self, in_dim: int, out_dim: int, flf_pos_tokens: int | None = None):
        super().__init__()
        self.proj = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, in_dim),
            nn.GELU(),
            nn.Linear(in_dim, out_dim),
            nn.LayerNorm(out_dim),
        )
        if flf_pos_tokens:
            self.emb_pos = nn.Parameter(torch.zeros(1, flf_pos_tokens, in_dim))

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "emb_pos"):
            if image_embeds.shape[1] != self.emb_pos.shape[1]:
                raise ValueError(
                    f"flf2v expects clip_fea with {self.emb_pos.shape[1]} tokens (first and last frame), "
                    f"got {image_embeds.shape[1]}"
                )
            image_embeds = image_embeds + self.emb_pos.to(image_embeds.dtype)
        return self.proj(image_embeds.to(self.proj[1].weight.dtype))
