"""The one flow-matching timestep schedule shared by every stage (teacher, ODE pairs, ODE init,
DMD, streaming inference). Pure functions of their arguments: no state, no config objects.

Conventions (Wan 2.1 / rectified flow, MotionStream eq. A1):
  x_sigma = (1 - sigma) * x0 + sigma * eps,   sigma in [0, 1],   model time t = 1000 * sigma,
  velocity v = eps - x0 (what the DiT predicts), so x0 = x - sigma * v and eps = x + (1 - sigma) * v.

Timestep shift (MotionStream appendix A, Wan's ``shift``): sigma' = k s / (1 + (k - 1) s). It moves
probability mass (training) and steps (sampling) towards high noise, which matters more as the
token count grows; k = 1 is no shift. Training draws s ~ U(0, 1) and shifts it; sampling shifts a
uniform grid, so both see the same warp and ODE pairs / the student's step list are points of
the same grid (Self-Forcing's users hit the mismatch: its student steps 937.5 / 625 are not points of
the shift-5, 50-step teacher grid).

Loss weighting w(sigma) (eq. A2 leaves it unspecified): ``"bell"`` is the Gaussian bump over the
model time used by Wan-family trainers (DiffSynth's FlowMatchScheduler training weights):
exp(-2 ((t - 500) / 1000)^2), offset so its minimum over [0, 1000] is 0, then normalised to mean
1 under the shifted training distribution, so the loss scale (and thus the learning rate) does
not depend on the weighting or the shift. ``"uniform"`` is w = 1.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "NUM_TRAIN_TIMESTEPS",
    "WEIGHTINGS",
    "shift_sigma",
    "unshift_sigma",
    "sample_training_sigmas",
    "loss_weight",
    "sampling_sigmas",
    "sigma_to_t",
    "add_noise",
    "velocity_target",
    "x0_from_velocity",
]

NUM_TRAIN_TIMESTEPS = 1000
WEIGHTINGS = ("uniform", "bell")


def _check_shift(shift: float) -> None:
    if not shift > 0:
        raise ValueError(f"schedule shift={shift} must be > 0 (1 = no shift; Wan uses 3-6)")


def shift_sigma(s: torch.Tensor | float, shift: float) -> torch.Tensor:
    """sigma' = k s / (1 + (k - 1) s): monotone on [0, 1], fixes 0 and 1."""
    _check_shift(shift)
    s = torch.as_tensor(s, dtype=torch.float64 if not torch.is_tensor(s) else None)
    return shift * s / (1 + (shift - 1) * s)


def unshift_sigma(sigma: torch.Tensor | float, shift: float) -> torch.Tensor:
    """Inverse of :func:`shift_sigma`: s = sigma / (k - (k - 1) sigma)."""
    _check_shift(shift)
    sigma = torch.as_tensor(sigma, dtype=torch.float64 if not torch.is_tensor(sigma) else None)
    return sigma / (shift - (shift - 1) * sigma)


def sample_training_sigmas(
    batch: int,
    *,
    shift: float,
    generator: torch.Generator | None = None,
    sigma_min: float = 0.0,
    sigma_max: float = 1.0,
    num_frames: int | None = None,
) -> torch.Tensor:
    """Shifted-uniform training noise levels: [B] (or [B, F] for per-frame noise, diffusion forcing).

    Drawn on the CPU from ``generator`` (device-independent), in float32, clamped to
    [sigma_min, sigma_max]. sigma_min > 0 avoids the degenerate pure-data end.
    """
    if not 0.0 <= sigma_min < sigma_max <= 1.0:
        raise ValueError(f"need 0 <= sigma_min < sigma_max <= 1, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    shape = (batch,) if num_frames is None else (batch, num_frames)
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return shift_sigma(u, shift).clamp(sigma_min, sigma_max).float()


def _bell(sigma: torch.Tensor) -> torch.Tensor:
    # Gaussian bump over model time, minimum (at sigma = 0 and 1) subtracted.
    return torch.exp(-2.0 * (sigma - 0.5) ** 2) - math.exp(-0.5)


def _bell_normaliser(shift: float) -> float:
    # E[bell(shift(u))] for u ~ U(0, 1), by the midpoint rule on a fine grid (exact to ~1e-9).
    n = 100_000
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return float(_bell(shift_sigma(u, shift)).mean())


def loss_weight(sigma: torch.Tensor, *, weighting: str, shift: float) -> torch.Tensor:
    """Per-sample loss weight w(sigma), same shape as sigma, mean 1 under the training distribution."""
    if weighting == "uniform":
        return torch.ones_like(sigma)
    if weighting == "bell":
        return (_bell(sigma.double()) / _bell_normaliser(shift)).to(sigma.dtype)
    raise ValueError(f"weighting={weighting!r}; choose one of {WEIGHTINGS}")


def sampling_sigmas(num_steps: int, *, shift: float, sigma_max: float = 1.0) -> torch.Tensor:
    """Descending grid [num_steps + 1] float64: shift(linspace(sigma_max, 0, N + 1)), ending at 0.

    Entry i is the noise level of step i's input; the last entry (0) is the clean output.
    ``sigma_max`` < 1 reproduces Wan's 0.999 start if wanted. A few-step student uses the same
    function, so its steps lie on the teacher's warped grid.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be >= 1")
    if not 0.0 < sigma_max <= 1.0:
        raise ValueError(f"sigma_max={sigma_max} must be in (0, 1]")
    s = torch.linspace(sigma_max, 0.0, num_steps + 1, dtype=torch.float64)
    return shift_sigma(s, shift)


def sigma_to_t(sigma: torch.Tensor) -> torch.Tensor:
    """Model time on Wan's 0..1000 scale (continuous; the DiT embeds it sinusoidally)."""
    return sigma * NUM_TRAIN_TIMESTEPS


def _expand(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, 1, 1, 1]; [B, F] -> [B, 1, F, 1, 1] for x [B, C, F, H, W]."""
    sigma = sigma.to(device=x.device, dtype=torch.float32)
    if sigma.ndim == 1:
        return sigma.view(-1, *([1] * (x.ndim - 1)))
    assert sigma.ndim == 2 and x.ndim == 5, "per-frame sigma needs [B, F] with x [B, C, F, H, W]"
    return sigma[:, None, :, None, None]


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_sigma = (1 - sigma) x0 + sigma eps (eq. A1)."""
    s = _expand(sigma, x0)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """d x_sigma / d sigma = eps - x0 (eq. A2's regression target)."""
    return noise - x0


def x0_from_velocity(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Clean estimate from a velocity prediction: x0 = x - sigma v."""
    return x - _expand(sigma, x) * v


def first_frame_sigmas(sigma: torch.Tensor, num_frames: int) -> torch.Tensor:
    """[B] -> [B, F]: frame 0 clean (sigma 0), the other latent frames at sigma."""
    out = sigma[:, None].expand(-1, num_frames).clone()
    out[:, 0] = 0
    return out
