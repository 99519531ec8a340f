"""GRPO pieces of the RL stage (train/rl/objective.py): the SDE step of the student's sampler, its Gaussian
log-probability, group-normalised advantages, the clipped surrogate and the KL on the step means.

The student's few-step sampler (``stream.chunks.denoise_chunk``) moves from level sigma to the next level
sigma' by predicting x0 and re-noising it with fresh noise drawn from the stream's seed:
    x' = (1 - sigma') x0 + sigma' eps,                       eps ~ N(0, I) from the seed.
Given the seed this is a deterministic map of the state (the engine's "ODE" steps: nothing for a policy
gradient to act on). The SDE step splits that re-noise into the seeded part and exploration noise z the
policy owns, keeping the total noise level at sigma' (the next input stays on the grid the student was
trained on):
    x' = (1 - sigma') x0 + sigma' (sqrt(1 - a^2) eps + a z) = mu + s z,   z ~ N(0, I),
    mu = (1 - sigma') x0_theta(x) + sigma' sqrt(1 - a^2) eps,   s = a sigma'.
At a -> 0 it is the engine's step; a is the noise level (Flow-GRPO's is 0.7, DanceGRPO's eta 0.3). Flow-GRPO's
SDE of an Euler flow sampler uses std a sqrt(sigma / (1 - sigma)) sqrt(sigma - sigma') and a drift correction
instead; that SDE has the Euler step as its a -> 0 limit, which is not this sampler's step.
The log-probability of the transition is the Gaussian log-density averaged (not summed) over the latent's
elements, as Flow-GRPO and DanceGRPO do, so the importance ratio exp(logp - logp_old) stays near 1 and
their clip range 1e-4 applies. Legend: R rollouts (B conditions x G), C channels, f chunk latents, h/w latent size.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "sde_mean",
    "sde_std",
    "gaussian_log_prob",
    "group_advantages",
    "clipped_surrogate",
    "mean_kl",
]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1))).to(like)


def sde_mean(x0: torch.Tensor, anchor: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """mu = (1 - sigma') x0 + anchor, anchor = sigma' sqrt(1 - a^2) eps (the seeded part): [R, C, f, h, w]."""
    return (1 - _per_sample(sigma_next, x0)) * x0 + anchor


def sde_std(sigma_next: torch.Tensor, noise_level: float) -> torch.Tensor:
    """s = a sigma' per rollout [R]."""
    return noise_level * sigma_next.float()


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, std^2 I) averaged over all but the batch dim -> [R] (float64). ``std`` [R]."""
    s = _per_sample(std, x).double()
    z = (x.double() - mean.double()) / s
    per = -0.5 * z.square() - torch.log(s) - _HALF_LOG_2PI
    return per.flatten(1).mean(dim=1)


def group_advantages(rewards: torch.Tensor, group_size: int, *, eps: float = 1e-4) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group of ``group_size`` consecutive rollouts (one condition):
    rewards [B * G] -> advantages [B * G]. Population std (ddof 0) as Flow-GRPO's per-prompt tracker; eps
    keeps a group whose rollouts all scored the same at 0 advantage instead of dividing by 0."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.double().view(-1, group_size)
    adv = (r - r.mean(dim=1, keepdim=True)) / (r.std(dim=1, unbiased=False, keepdim=True) + eps)
    return adv.view(-1).float()


def clipped_surrogate(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, *, clip_range: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's pessimistic objective as a loss: mean over entries of max(-A rho, -A clip(rho, 1 - eps, 1 + eps)),
    rho = exp(logp - logp_old). ``log_prob`` / ``old_log_prob`` [n, R] (n SDE steps per rollout, one per chunk),
    ``advantages`` [R] (already clipped to the advantage range). Outside the range, in the direction the
    advantage pushes, the clipped branch is constant: that entry gives no gradient (``clip_frac`` counts
    entries with |rho - 1| > eps)."""
    ratio = torch.exp(log_prob - old_log_prob.detach())  # [n, R]
    adv = advantages.to(ratio)[None].expand_as(ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        stats = {
            "ratio_mean": ratio.mean(),
            "ratio_min": ratio.min(),
            "ratio_max": ratio.max(),
            "clip_frac": ((ratio - 1).abs() > clip_range).double().mean(),
            # Flow-GRPO's approx_kl: 0.5 E[(logp - logp_old)^2] between the sampling and the current policy
            "approx_kl": 0.5 * (log_prob - old_log_prob).square().mean(),
        }
    return loss, stats


def mean_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, s^2) || N(ref_mean, s^2)) per element, averaged: ||mean - ref_mean||^2 / (2 s^2) -> [R].
    Both policies share s (it depends on the level only), so the KL is on the means, as Flow-GRPO's
    (which divides by its std without the sqrt(dt) factor; here s is the transition's own std)."""
    s = _per_sample(std, mean).double()
    return ((mean.double() - ref_mean.double()) / s).square().flatten(1).mean(dim=1) / 2
