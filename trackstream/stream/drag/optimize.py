"""DragStream's latent optimisation of one chunk at one denoising step (the DragStream paper's SFSO and ADSR).

At step T' of a chunk's few-step sampling, the chunk's noisy latent z is optimised so that the
self-attention features of chosen DiT blocks, at the tokens where the drag puts the object, match
the reference features of the frame the drag starts from, warped there; the x0 prediction outside
the free area (editable ∪ the object's new places) is pinned to what it was before the drag.

    targets = build_targets(reference, instruction, frames, token=..., latent_grid=...)  # per segment
    z, log = optimise_latent(network, cache, z, sigma, y, targets, config)

* Features: the attention output before the output projection (``models.causal.FeatureRecorder``),
  the blocks' heads concatenated (C = blocks x dim) on each frame's token grid. The reference is the
  previous chunk's last latent frame at the same step, recorded once per frequency variant (SFSO:
  the window's K/V low-passed, cut-offs {none, .2, .4, .6}).
* Warp: the object's tokens forward-splatted by the trajectory (``adsr.splat_features``), any type.
* Coarse-to-fine: S segments, S from the largest step (one token of motion or 8 degrees each, the
  reference's 16 px / 8 deg at 16 px per token); segment s targets a fraction s / S of every step.
* Update: AdamW (lr 0.02, decay 0.01) on z with the gradient times the Gaussian map (SFSO spatial),
  clipped to norm 1; ADSR re-standardises z per (frame, channel) after every step and globally at the
  end. ``reset_optimizer=True`` re-creates the optimiser each iteration as the reference code does,
  which turns every update into a signed step of lr and defeats the Gaussian map (see the reference's
  note); the default keeps the optimiser's state, the paper's intent. Both are measured.
* Settings: the defaults differ from the public reference code's in four switches (optimiser reset,
  I = 4 vs 5, feature upsampling, the image chunk in x0's ADSR pool); ``DragConfig.preset("reference")``
  and ``DragConfig.preset("ours")`` name the two sets (``SETTINGS``).
Legend: B = 1 batch, C channels, F latent frames of the chunk, h/w token grid, H/W latent grid.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from trackstream.diffusion.schedule import sigma_to_t, x0_from_velocity
from trackstream.models.causal import FeatureRecorder, KVCache, stream_step
from trackstream.stream.drag.adsr import mask_tokens, restandardize, splat_features
from trackstream.stream.drag.instructions import DragInstruction, magnitude, partial_displace
from trackstream.stream.drag.sfso import CUTOFFS, context_filter, gaussian_map

__all__ = [
    "DragConfig",
    "SETTINGS",
    "FrameTarget",
    "default_layers",
    "resize_features",
    "chunk_features",
    "reference_features",
    "segment_count",
    "build_targets",
    "optimise_latent",
]


@dataclass(frozen=True)
class DragConfig:
    """The editor's switches; defaults are DragStream's choices (paper I = 4, code lr / decay / clip)."""

    iterations: int = 4  # I per coarse-to-fine segment (0: no optimisation); the paper's I = 4, the reference code's 5
    lr: float = 0.02
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    step_index: int = 1  # T': the sampler step whose input is optimised (0 = pure noise)
    layers: Optional[tuple[int, ...]] = None  # None: the middle blocks (default_layers)
    segment_tokens: float = 1.0  # coarse-to-fine: one segment per this many tokens of motion
    segment_degrees: float = 8.0  # ... or per this many degrees of rotation
    keep_weight: float = 1.0  # constancy outside the free area
    # "x0": the x0 prediction is kept (the reference code; every iteration runs the whole DiT);
    # "latent": z itself is kept, so an iteration runs only up to the last recorded block
    keep: str = "x0"
    adsr: bool = True  # re-standardise z (per frame/channel each step, global at the end) and x0
    neighbours: int = 2  # ADSR on x0: the last N chunks' clean latents
    sfso_frequency: bool = True  # reference variants with low-passed context
    switch_cutoff: bool = True  # draw a variant per iteration; False: always ``fixed_cutoff``
    fixed_cutoff: Optional[float] = 0.4
    sfso_spatial: bool = True  # Gaussian map on the gradient
    # True: AdamW re-created after every iteration (so every update is a first Adam step), as the reference
    # code does (it creates one before the segments and a new one after each iteration's re-standardisation)
    reset_optimizer: bool = False
    # True: the recorded features (current and reference) are resized bilinearly (align_corners) from the
    # token grid to the latent grid (x the DiT's patch) and warped / masked / lost there, as the reference
    # does (its feature_scaling_factor 2 at patch 2); False: everything on the token grid
    upsample_features: bool = False
    # ADSR on x0: True pools the stream's first (1-frame image) chunk among the neighbours' clean latents;
    # False leaves it out, as the reference leaves out its first chunk (no rectification without neighbours)
    adsr_pool_image: bool = True
    # where the reference features come from: "previous" = the last latent frame before the steered chunk
    # at the same step (DragStream's choice); "self" = the steered chunk's own first latent frame before
    # any optimisation at step T' (comparable context when the frame before is the first frame alone,
    # whose one-frame, cache-less pass differs from a chunk's); "auto" = self in that case, else previous
    reference: str = "previous"
    pin: bool = True  # condition steered chunks on static points outside the editable area (if the student has tracks)
    seed: int = 0  # the variant draws

    def __post_init__(self) -> None:
        for name in _BOOLS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"DragConfig.{name}={getattr(self, name)!r} must be a bool")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, (int, np.integer)):
            raise ValueError(f"DragConfig.iterations={self.iterations!r} must be an int")
        if self.iterations < 0:
            raise ValueError(f"DragConfig.iterations={self.iterations} must be >= 0")
        if self.step_index < 0:
            raise ValueError(f"DragConfig.step_index={self.step_index} must be >= 0 (a sampler step)")
        if self.reference not in ("auto", "previous", "self"):
            raise ValueError(f"DragConfig.reference={self.reference!r}; choose auto, previous or self")
        if self.keep not in ("x0", "latent"):
            raise ValueError(f"DragConfig.keep={self.keep!r}; choose x0 (the reference's) or latent (cheaper)")
        if not self.lr > 0 or not self.segment_tokens > 0 or not self.segment_degrees > 0:
            raise ValueError("DragConfig.lr, segment_tokens and segment_degrees must be > 0")
        if self.neighbours < 0:
            raise ValueError(f"DragConfig.neighbours={self.neighbours} must be >= 0")

    @classmethod
    def preset(cls, name: str, **changes) -> "DragConfig":
        """A named settings set (``SETTINGS``: "ours" = the defaults, "reference" = the public reference
        code's four choices), then ``changes`` on top."""
        if name not in SETTINGS:
            raise ValueError(f"DragConfig.preset: settings {name!r} unknown; choose one of {sorted(SETTINGS)}")
        return cls(**{**SETTINGS[name], **changes})

    def cutoffs(self) -> tuple[Optional[float], ...]:
        """The reference variants to record."""
        if not self.sfso_frequency:
            return (None,)
        return CUTOFFS if self.switch_cutoff else (self.fixed_cutoff,)


_BOOLS = (
    "adsr",
    "sfso_frequency",
    "switch_cutoff",
    "sfso_spatial",
    "reset_optimizer",
    "upsample_features",
    "adsr_pool_image",
    "pin",
)

# the four switches where our defaults and the public DragStream code (junbao-zhou/DragStream @4ef0f3b,
# pipeline/causal_inference.py and its stream-drag config) differ; every other field is the same in both
SETTINGS: dict[str, dict] = {
    "ours": {"reset_optimizer": False, "iterations": 4, "upsample_features": False, "adsr_pool_image": True},
    "reference": {"reset_optimizer": True, "iterations": 5, "upsample_features": True, "adsr_pool_image": False},
}


def resize_features(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Features [..., C, h, w] -> [..., C, *size], bilinear with align_corners (the reference's resize)."""
    lead = x.shape[:-3]
    y = F.interpolate(x.reshape(-1, *x.shape[-3:]), size=tuple(size), mode="bilinear", align_corners=True)
    return y.reshape(*lead, *y.shape[-3:])


def default_layers(num_layers: int) -> tuple[int, ...]:
    """DragStream's blocks 12-15 of 30, as fractions of depth ([0.4, 0.533) rounded outwards): (0, 1) for
    a 2-block DiT."""
    lo = int(0.4 * num_layers)
    return tuple(range(lo, max(lo + 1, math.ceil(num_layers * 16 / 30))))


def chunk_features(recorder: FeatureRecorder, layers, grid: tuple[int, int, int], variant=None) -> torch.Tensor:
    """The recorded blocks' attention outputs [B, L, N, D] each (or a recorded variant's) -> [B, F, C, h, w]
    (C = blocks x N x D)."""
    f, h, w = grid
    parts = [
        recorder.features[layer] if variant is None else recorder.variant_features[(variant, layer)] for layer in layers
    ]
    x = torch.cat([p.flatten(2) for p in parts], dim=-1)  # [B, L, C]
    B, _, C = x.shape
    return x.view(B, f, h, w, C).permute(0, 1, 4, 2, 3)


def _token_grid(network, z: torch.Tensor) -> tuple[int, int, int]:
    pt, ph, pw = network.dit.patch_size
    return z.shape[2] // pt, z.shape[3] // ph, z.shape[4] // pw


@torch.no_grad()
def reference_features(
    network,
    cache: KVCache,
    z: torch.Tensor,
    sigma: torch.Tensor,
    y: Optional[torch.Tensor],
    layers,
    cutoffs,
    *,
    frame: int = -1,
) -> dict:
    """{cut-off: [C, h, w]} features of latent frame ``frame`` (default the last) of chunk
    ``cache.next_chunk`` with input z at noise level ``sigma``. One pass: the unfiltered features (cut-off None) are the pass's own, each
    cut-off's are the same queries attending to the low-passed window, recorded beside it."""
    grid = _token_grid(network, z)
    t = sigma_to_t(sigma.float().reshape(1).to(z.device))
    variants = {c: context_filter(grid[1:], c) for c in cutoffs if c is not None}
    rec = FeatureRecorder(layers, variants=variants)
    stream_step(network.dit, cache, z, t, y=y, recorder=rec)
    return {c: chunk_features(rec, layers, grid, variant=c)[0, frame].float() for c in cutoffs}


@dataclass
class FrameTarget:
    """What one latent frame of the chunk should show after the drag (one coarse-to-fine segment)."""

    frame: int  # latent frame index in the chunk
    features: dict  # {cut-off: [C, h, w]} warped reference features (zeros off the target)
    mask: torch.Tensor  # [h, w] bool target tokens ([H, W] latent cells when the features are upsampled)
    gauss: torch.Tensor  # [H, W] float in [0, 1]: the gradient weight on the latent grid
    free: torch.Tensor  # [H, W] bool: may change (editable area or a target); elsewhere x0 is kept


def segment_count(instr: DragInstruction, token: int, cfg: DragConfig) -> int:
    """Coarse-to-fine segments: max over trajectories and steps of floor(motion / segment size), >= 1."""
    s = 1
    for traj, m in zip(instr.trajectories, instr.object_masks):
        pts = mask_tokens(m, token)
        for k in range(1, instr.steps + 1):
            move, angle = magnitude(traj, k, pts)
            s = max(s, math.floor(move / (cfg.segment_tokens * token)), math.floor(angle / cfg.segment_degrees))
    return s


def _cells(mask: np.ndarray, cell: int) -> np.ndarray:
    """Pixel mask [Hp, Wp] -> [Hp / cell, Wp / cell] bool: cells at least half covered."""
    m = np.asarray(mask, np.float64)
    H, W = m.shape
    return m.reshape(H // cell, cell, W // cell, cell).mean(axis=(1, 3)) >= 0.5


def build_targets(
    reference: dict,
    instr: DragInstruction,
    frames: list[tuple[int, int]],
    *,
    token: int,
    patch: tuple[int, int],
    segments: int,
    upsample: bool = False,
) -> list[list[FrameTarget]]:
    """Targets of every segment: ``frames`` lists (latent frame in the chunk, instruction step k) pairs;
    ``token``: pixels per token (codec factor x patch); ``patch``: the DiT's spatial patch (latent
    cells per token); ``upsample`` (``DragConfig.upsample_features``): the reference features resized to
    the latent grid first and the targets, masks and features, built there (latent cells as tokens).
    Returns [segment][frame target]."""
    ph, pw = patch
    any_ref = next(iter(reference.values()))
    h, w = any_ref.shape[-2:]
    dev = any_ref.device
    editable = torch.from_numpy(_cells(instr.editable, token // ph)).to(dev)  # latent grid [H, W]
    if upsample:
        if ph != pw:
            raise ValueError(f"feature upsampling needs a square patch, got {patch}")
        reference = {c: resize_features(r.float(), (h * ph, w * pw)) for c, r in reference.items()}
        token, h, w, ph, pw = token // ph, h * ph, w * pw, 1, 1  # latent cells are the tokens from here on
    out = []
    for s in range(1, segments + 1):
        seg = []
        for frame, k in frames:
            feats = {c: torch.zeros_like(r) for c, r in reference.items()}
            mask = torch.zeros(h, w, dtype=torch.bool, device=dev)
            token_masks = []
            for traj, m in zip(instr.trajectories, instr.object_masks):
                src = mask_tokens(m, token)
                dst = partial_displace(traj, src, k, s / segments)
                one = None
                for c, r in reference.items():
                    warped, one = splat_features(r, src, dst, token)
                    feats[c] = torch.where(one[None], warped, feats[c])  # a later trajectory wins a shared token
                mask |= one
                token_masks.append(one.cpu().numpy())
            gauss = gaussian_map(token_masks, (h, w))  # [h, w]; the map is scale-free (box-relative sigma)
            gauss = torch.from_numpy(gauss).float().to(dev).repeat_interleave(ph, 0).repeat_interleave(pw, 1)
            free = editable | mask.repeat_interleave(ph, 0).repeat_interleave(pw, 1)
            seg.append(FrameTarget(frame=frame, features=feats, mask=mask, gauss=gauss, free=free))
        out.append(seg)
    return out


@dataclass
class OptimLog:
    losses: list = field(default_factory=list)  # (feature, keep) per iteration
    cutoffs: list = field(default_factory=list)
    forwards: int = 0


def _frame_maps(targets: list[FrameTarget], num_frames: int, single: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """[F, H, W] Gaussian weights and free masks over the chunk: an edit's one target covers every frame
    (DragStream broadcasts its single map); otherwise frames without a target get weight 0, not free."""
    H, W = targets[0].gauss.shape
    dev = targets[0].gauss.device
    gauss = torch.zeros(num_frames, H, W, device=dev)
    free = torch.zeros(num_frames, H, W, dtype=torch.bool, device=dev)
    for t in targets:
        if single:
            gauss[:], free[:] = t.gauss, t.free
        else:
            gauss[t.frame], free[t.frame] = t.gauss, t.free
    return gauss, free


def optimise_latent(
    network,
    cache: KVCache,
    z: torch.Tensor,
    sigma: torch.Tensor,
    y: Optional[torch.Tensor],
    targets: list[list[FrameTarget]],
    cfg: DragConfig,
    *,
    layers,
    single_target: bool = False,
) -> tuple[torch.Tensor, OptimLog]:
    """Optimise the chunk's noisy latent z [1, C, F, H, W] at level ``sigma`` for ``targets``
    ([segment][frame]); the cache is read only. Returns the new z (detached) and the loss log."""
    if z.shape[0] != 1:
        raise ValueError(f"a drag edits one stream: batch must be 1, got {z.shape[0]}")
    log = OptimLog()
    if cfg.iterations == 0 or not targets:
        return z, log
    grid = _token_grid(network, z)
    t = sigma_to_t(sigma.float().reshape(1).to(z.device))
    sig = sigma.float().reshape(1).to(z.device)
    x0_orig = None  # the first iteration's x0 (z not yet changed): what is kept outside the free area
    # The optimised latent, its AdamW moments and the kept reference stay float32 whatever the DiT's dtype:
    # bf16 moments and lr-sized steps on a bf16 z would round most updates away (the DiT runs in its own
    # dtype; its inputs are cast at its patch embedding, so gradients reach the fp32 z through it).
    z_before = z.detach().float()
    param = z_before.clone().requires_grad_(True)
    new_opt = lambda: torch.optim.AdamW([param], lr=cfg.lr, weight_decay=cfg.weight_decay)  # noqa: E731
    opt = new_opt()
    rng = random.Random(cfg.seed)
    variants = list(targets[0][0].features)
    for seg in targets:
        gauss, free = _frame_maps(seg, z.shape[2], single_target)
        keep_mask = (~free).float()[None, None]  # [1, 1, F, H, W]
        weight = gauss.float()[None, None] if cfg.sfso_spatial else None
        n_tokens = max(1, sum(int(ft.mask.sum()) for ft in seg))
        for _ in range(cfg.iterations):
            c = rng.choice(variants)
            rec = FeatureRecorder(layers)
            pred = stream_step(
                network.dit, cache, param, t, y=y, recorder=rec, until=max(layers) if cfg.keep == "latent" else None
            ).pred
            feats = chunk_features(rec, layers, grid)[0]  # [F, C, h, w]
            if cfg.upsample_features:  # the targets were built on the latent grid (build_targets(upsample=True))
                feats = resize_features(feats.float(), tuple(z.shape[-2:]))  # [F, C, H, W]
            feat_loss = sum(((feats[ft.frame].float() - ft.features[c]).square().mean(0) * ft.mask).sum() for ft in seg)
            feat_loss = feat_loss / n_tokens
            if cfg.keep == "latent":
                keep = ((param - z_before) * keep_mask).square().mean()
            else:
                x0 = x0_from_velocity(param, pred.float(), sig)
                if x0_orig is None:
                    x0_orig = x0.detach()
                keep = ((x0 - x0_orig) * keep_mask).square().mean()
            loss = feat_loss + cfg.keep_weight * keep
            (grad,) = torch.autograd.grad(loss, param)
            if weight is not None:
                grad = grad * weight
            norm = grad.norm()
            if cfg.grad_clip and norm > cfg.grad_clip:
                grad = grad * (cfg.grad_clip / (norm + 1e-6))
            param.grad = grad
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                if cfg.adsr:
                    param.copy_(restandardize(param, z_before, dims=(0, 3, 4)))  # per (frame, channel)
            if cfg.reset_optimizer:
                opt = new_opt()
            log.losses.append((float(feat_loss.detach()), float(keep.detach())))
            log.cutoffs.append(c)
            log.forwards += 1
    out = param.detach()
    if cfg.adsr:
        out = restandardize(out, z_before, None)
    return out, log
