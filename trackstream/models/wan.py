"""Wan 2.1 diffusion transformer, written from the published architecture.

One class serves every use in TrackStream: the bidirectional teacher, the causal student
(through pluggable self-attention, see ``SelfAttentionFn``) and the critic. Parameter names
are exactly the official ``WanModel`` names, so official checkpoints load without renaming
(diffusers-format checkpoints go through ``models.wan_io``).

Numerics follow the official code: the time embedding, every modulation, the non-affine
LayerNorms, the head and the residual stream run in float32 whatever the parameter dtype;
linear layers run in the parameter dtype (bf16 under mixed precision). RoPE angles are built
in float64 from positions on the fly (no 1024-entry table), so any frame index is valid.

Legend: B batch, C channels, F latent frames, H/W latent height/width, L tokens,
N heads, D head dim, S tokens per latent frame (after patchify).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from trackstream.models.attention import FullRoPEAttention, SelfAttentionFn, UlyssesRoPEAttention
from trackstream.models.fp8 import FP8, quantize_linears
from trackstream.models.precision import working_dtype
from trackstream.models.rope import grid_positions, rope_cos_sin
from trackstream.models.sequence_parallel import SequenceShard
from trackstream.models.wan_embeddings import FP32Sequential, MLPProj, sinusoidal_embedding
from trackstream.models.wan_layers import RMSNorm, WanBlock, WanHead

# The helpers of models.rope / models.attention / models.wan_embeddings stay importable from here,
# where their callers have always found them.
__all__ = [
    "WanModel",
    "CLIP_DIM",
    "CLIP_TOKENS",
    "MODEL_TYPES",
]


# ti2v (Wan 2.2 TI2V-5B) has t2v's parameters; its image conditioning is the clean first latent
# frame at timestep 0, i.e. the per-frame timesteps t [B, F] this model already takes.
MODEL_TYPES = ("t2v", "i2v", "flf2v", "ti2v")
# Number of CLIP image tokens per image (ViT-H/14 at 224: 256 patches + CLS).
CLIP_TOKENS = 257
CLIP_DIM = 1280


class WanModel(nn.Module):
    """Wan 2.1 DiT (and the dense Wan 2.2 TI2V-5B, the same blocks at 48 latent channels).
    Constructor arguments are the official ``config.json`` keys."""

    def __init__(
        self,
        model_type: str = "t2v",
        patch_size: Sequence[int] = (1, 2, 2),
        text_len: int = 512,
        in_dim: int = 16,
        dim: int = 2048,
        ffn_dim: int = 8192,
        freq_dim: int = 256,
        text_dim: int = 4096,
        out_dim: int = 16,
        num_heads: int = 16,
        num_layers: int = 32,
        window_size: Sequence[int] = (-1, -1),
        qk_norm: bool = True,
        cross_attn_norm: bool = True,
        eps: float = 1e-6,
    ):
        super().__init__()
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type={model_type!r}; expected one of {MODEL_TYPES}")
        if tuple(window_size) != (-1, -1):
            raise ValueError(
                f"window_size={tuple(window_size)}: only global attention (-1, -1) is supported; "
                "local/causal attention is selected at call time through the causal mode"
            )
        if dim % num_heads or (dim // num_heads) % 2:
            raise ValueError(f"dim={dim} / num_heads={num_heads} must give an even integer head_dim")
        self.model_type = model_type
        self.patch_size = tuple(int(p) for p in patch_size)
        self.text_len, self.in_dim, self.dim, self.ffn_dim = text_len, in_dim, dim, ffn_dim
        self.freq_dim, self.text_dim, self.out_dim = freq_dim, text_dim, out_dim
        self.num_heads, self.num_layers, self.eps = num_heads, num_layers, eps
        self.qk_norm, self.cross_attn_norm = qk_norm, cross_attn_norm
        self.window_size = tuple(window_size)
        self.gradient_checkpointing = False
        # Set by the trainer under parallel.sequence_parallel > 1 (``models.sequence_parallel``): the
        # default forward then runs this rank's slice of the tokens with Ulysses attention.
        self.sequence_shard: SequenceShard | None = None

        image = model_type in ("i2v", "flf2v")
        self.patch_embedding = nn.Conv3d(in_dim, dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = FP32Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = FP32Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(
            WanBlock(dim, ffn_dim, num_heads, qk_norm, cross_attn_norm, eps, image) for _ in range(num_layers)
        )
        self.head = WanHead(dim, out_dim, self.patch_size, eps)
        if image:
            self.img_emb = MLPProj(CLIP_DIM, dim, flf_pos_tokens=2 * CLIP_TOKENS if model_type == "flf2v" else None)
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    # -- config / init -------------------------------------------------------------------

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def config(self) -> dict:
        """Official config.json fields (plus the ones the official ignores for config)."""
        return dict(
            model_type=self.model_type,
            patch_size=list(self.patch_size),
            text_len=self.text_len,
            in_dim=self.in_dim,
            dim=self.dim,
            ffn_dim=self.ffn_dim,
            freq_dim=self.freq_dim,
            text_dim=self.text_dim,
            out_dim=self.out_dim,
            num_heads=self.num_heads,
            num_layers=self.num_layers,
            window_size=list(self.window_size),
            qk_norm=self.qk_norm,
            cross_attn_norm=self.cross_attn_norm,
            eps=self.eps,
        )

    @torch.no_grad()
    def init_weights(self) -> None:
        """Official initialisation: xavier linears, N(0, .02) embeddings, zero output head.

        Norm scales (1), norm biases and the FLF2V position table (0) are reset too, so a model
        built on ``meta`` and materialised with ``to_empty`` holds no uninitialised memory.
        """
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:  # LoRA's A / B (models.lora) have none; PEFT re-draws them after this
                    nn.init.zeros_(m.bias)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
            elif isinstance(m, nn.LayerNorm):
                m.reset_parameters()
        if hasattr(self, "img_emb") and hasattr(self.img_emb, "emb_pos"):
            nn.init.zeros_(self.img_emb.emb_pos)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        nn.init.zeros_(self.patch_embedding.bias)
        for seq in (self.text_embedding, self.time_embedding):
            for m in seq:
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(self.head.head.weight)
        nn.init.zeros_(self.head.head.bias)
        for blk in self.blocks:
            blk.modulation.copy_(torch.randn_like(blk.modulation) / self.dim**0.5)
        self.head.modulation.copy_(torch.randn_like(self.head.modulation) / self.dim**0.5)

    def cast_for_inference(self, dtype: torch.dtype) -> "WanModel":
        """Cast matmul weights to ``dtype`` but keep fp32 what the official keeps fp32.

        ``torch.float8_e4m3fn`` (the precision "fp8"): the blocks' linears become ``models.fp8.FP8Linear``
        (quantised once, here, from the weights as they are) and every other matmul weight is bf16."""
        if dtype == FP8:
            dtype = working_dtype(dtype)
            quantize_linears(self.blocks, dtype)
        keep = ("time_embedding", "time_projection", "modulation", "norm")
        for name, p in self.named_parameters():
            if p.dtype != FP8 and not any(k in name for k in keep):
                p.data = p.data.to(dtype)
        return self

    # -- pieces of the forward (public so the causal/streaming paths can reuse them) -----

    def patchify(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """x [B, C, F, H, W] (+ y on channels) -> tokens [B, L, dim] float32 and grid (F', H', W')."""
        if y is not None:
            if y.shape[0] != x.shape[0] or y.shape[2:] != x.shape[2:]:
                raise ValueError(f"y {tuple(y.shape)} must match x {tuple(x.shape)} except on channels")
            x = torch.cat([x, y.to(x.dtype)], dim=1)
        if x.shape[1] != self.in_dim:
            raise ValueError(
                f"x (+ y) has {x.shape[1]} channels but the model's in_dim is {self.in_dim}; "
                "pass the conditioning channels as y (e.g. 20 for official I2V)"
            )
        pt, ph, pw = self.patch_size
        if x.shape[2] % pt or x.shape[3] % ph or x.shape[4] % pw:
            raise ValueError(f"latent size {tuple(x.shape[2:])} must be divisible by patch_size {self.patch_size}")
        h = self.patch_embedding(x.to(self.patch_embedding.weight.dtype))  # [B, dim, F', H', W']
        grid = tuple(h.shape[2:])
        return h.flatten(2).transpose(1, 2).float(), grid  # [B, L, dim], f-major then h then w

    def time_embed(self, t: torch.Tensor, batch: int, frames: int):
        """t [B] or [B, F] -> e [B, F', dim], e0 [B, F', 6, dim] (float32).

        A [B] timestep is expanded to every latent frame first, so a constant [B, F] gives
        bit-identical results (both take the same path).
        """
        t = torch.as_tensor(t, device=self.head.modulation.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.ndim == 1:
            if t.shape[0] != batch:
                raise ValueError(f"t has shape {tuple(t.shape)}; expected [{batch}] or [{batch}, {frames}]")
            t = t[:, None].expand(batch, frames)
        if t.shape != (batch, frames):
            raise ValueError(f"t has shape {tuple(t.shape)}; expected [{batch}] or [{batch}, {frames}]")
        t = t[:, :: self.patch_size[0]]  # one timestep per token frame
        nf = t.shape[1]
        sin = sinusoidal_embedding(t.reshape(-1), self.freq_dim)  # [B*F', freq_dim]
        e = self.time_embedding(sin)  # [B*F', dim] float32
        e0 = self.time_projection(e)  # [B*F', 6 * dim]
        return e.view(batch, nf, self.dim), e0.view(batch, nf, 6, self.dim)

    def embed_context(
        self, context: torch.Tensor, clip_fea: torch.Tensor | None = None, context_lens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, int]:
        """Text [B, L<=text_len, text_dim] (+ CLIP [B, 257, 1280]) -> [B, n_img + text_len, dim].

        Text rows beyond each sample's length must be zero (Wan semantics): pass
        ``context_lens`` to have them zeroed here. The text is zero-padded to ``text_len``
        before the embedding and attended without a mask, exactly as the official model.
        """
        if context.ndim != 3 or context.shape[-1] != self.text_dim:
            raise ValueError(f"context must be [B, L, {self.text_dim}], got {tuple(context.shape)}")
        B, L, _ = context.shape
        if L > self.text_len:
            raise ValueError(f"context has {L} tokens; the model's text_len is {self.text_len} (truncate the text)")
        if context_lens is not None:
            keep = torch.arange(L, device=context.device)[None, :] < context_lens.to(context.device)[:, None]
            context = context * keep[..., None].to(context.dtype)
        context = F.pad(context, (0, 0, 0, self.text_len - L))
        ctx = self.text_embedding(context.to(self.text_embedding[0].weight.dtype))
        if hasattr(self, "img_emb"):
            if clip_fea is None:
                raise ValueError(
                    f"model_type={self.model_type!r} needs clip_fea [B, {CLIP_TOKENS}, {CLIP_DIM}] "
                    "(pass zeros if the checkpoint was trained without a CLIP image, as Fun-Control)"
                )
            img = self.img_emb(clip_fea)
            return torch.cat([img.to(ctx.dtype), ctx], dim=1), img.shape[1]
        if clip_fea is not None:
            raise ValueError("clip_fea was given but this is a t2v model (no img_emb)")
        return ctx, 0

    def context_kv(self, ctx: torch.Tensor, num_image_tokens: int) -> list[tuple[torch.Tensor, ...]]:
        """Per-block cross-attention K/V of the embedded context (computed once per prompt)."""
        return [blk.cross_attn.context_kv(ctx, num_image_tokens) for blk in self.blocks]

    def run_blocks(self, x, e0, context_kv, attention: SelfAttentionFn, tokens_per_frame: int, last: int | None = None):
        """The blocks in order (``last``: stop after that block, for passes that only need features)."""
        for i, blk in enumerate(self.blocks if last is None else self.blocks[: last + 1]):
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(
                    blk, x, e0, context_kv[i], i, attention, tokens_per_frame, use_reentrant=False
                )
            else:
                x = blk(x, e0, context_kv[i], i, attention, tokens_per_frame)
        return x

    def unpatchify(self, out: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, L, prod(patch)*out_dim] -> [B, out_dim, F, H, W]; each token is (pt, ph, pw, c), c fastest."""
        B = out.shape[0]
        f, h, w = grid
        pt, ph, pw = self.patch_size
        out = out.view(B, f, h, w, pt, ph, pw, self.out_dim)
        out = out.permute(0, 7, 1, 4, 2, 5, 3, 6)  # [B, c, F', pt, H', ph, W', pw]
        return out.reshape(B, self.out_dim, f * pt, h * ph, w * pw)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        clip_fea: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        *,
        context_lens: torch.Tensor | None = None,
        attention: SelfAttentionFn | None = None,
        frame_offset: int = 0,
    ) -> torch.Tensor:
        """Velocity prediction.

        x: [B, C_noise, F, H, W] noisy latent; t: [B] or [B, F] timesteps on Wan's 0..1000
        scale; context: [B, L<=text_len, text_dim]; clip_fea: [B, 257, 1280] (i2v);
        y: [B, C_cond, F, H, W] conditioning concatenated after x on channels.
        ``attention`` replaces full self-attention (causal modes); ``frame_offset`` shifts
        the RoPE frame index of the default attention. Returns [B, out_dim, F, H, W] float32.
        With ``sequence_shard`` set, the blocks run this rank's token slice (Ulysses attention) and
        the output is gathered: every rank of the group returns the whole prediction.
        """
        B, _, nframes = x.shape[:3]
        tokens, grid = self.patchify(x, y)
        e, e0 = self.time_embed(t, B, nframes)
        ctx, n_img = self.embed_context(context, clip_fea, context_lens)
        shard = self.sequence_shard
        tokens_per_frame = grid[1] * grid[2]
        if attention is None and shard is not None:  # this rank's slice, every frame's run ``rank`` of S/K tokens
            shard.check(self.num_heads, grid)
            pos = shard.split(grid_positions(grid, frame_offset, device=tokens.device)[None], grid)[0]  # [L/K, 3]
            tokens, tokens_per_frame = shard.split(tokens, grid), tokens_per_frame // shard.size  # [B, L/K, dim]
            attention = UlyssesRoPEAttention(*rope_cos_sin(pos, self.head_dim), shard.group)
        elif attention is None:
            pos = grid_positions(grid, frame_offset, device=tokens.device)
            attention = FullRoPEAttention(*rope_cos_sin(pos, self.head_dim))
        elif shard is not None:  # a custom attention that knows its slice (the causal student's block mask)
            if not hasattr(attention, "for_shard"):
                raise ValueError(
                    f"parallel.sequence_parallel > 1: this self-attention ({type(attention).__name__}, e.g. the "
                    "correspondence probe) is not sequence-parallel; set parallel.sequence_parallel=1"
                )
            shard.check(self.num_heads, grid)
            attention = attention.for_shard(shard, grid)
            tokens, tokens_per_frame = shard.split(tokens, grid), tokens_per_frame // shard.size
        tokens = self.run_blocks(tokens, e0, self.context_kv(ctx, n_img), attention, tokens_per_frame)
        out = self.head(tokens, e, tokens_per_frame)  # [B, L or L/K, prod(patch) * out_dim]
        if shard is not None:
            out = shard.gather(out, grid)  # [B, L, ...] on every rank of the group
        return self.unpatchify(out, grid)
