"""Flow-matching samplers with joint text-motion guidance (MotionStream eq. 2).

Guidance modes (w_t, w_m on Wan's convention: w = 1 is no guidance, v_u + w (v_c - v_u)):
  ``joint``   v_base + w_t (v(c_t,c_m) - v(0,c_m)) + w_m (v(c_t,c_m) - v(c_t,0)),
              v_base = a v(0,c_m) + (1 - a) v(c_t,0), a = w_t / (w_t + w_m)   (3 NFE per step)
  ``text``    v(0,c_m) + w_t (v(c_t,c_m) - v(0,c_m))                        (2 NFE, text CFG)
  ``motion``  v(c_t,0) + w_m (v(c_t,c_m) - v(c_t,0))                        (2 NFE, motion CFG)
  ``both``    v(0,0) + w_t (v(c_t,c_m) - v(0,0))                            (2 NFE, one-null CFG)
  ``none``    v(c_t,c_m)                                                    (1 NFE)
where 0 is the null text (the empty prompt's encoding) or the empty motion (no tracks). All
terms of one step run as ONE batched forward; without a motion condition the terms that differ only
in motion coincide and run once. Solvers: ``euler`` (x <- x + (s' - s) v) and
``heun`` (2nd order, two guided evaluations per step), on the shared step grid of
``diffusion.schedule.sampling_sigmas``. (Wan's official sampler is UniPC; not provided here.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from trackstream.diffusion.schedule import sampling_sigmas, sigma_to_t

__all__ = [
    "GuidanceConfig",
    "SamplerConfig",
    "Condition",
    "guided_velocity",
    "guidance_terms",
    "mix_text",
    "combine_guided",
    "sample",
    "nfe_per_step",
    "GUIDANCE_MODES",
]

GUIDANCE_MODES = ("joint", "text", "motion", "both", "none")
SOLVERS = ("euler", "heun")


@dataclass
class GuidanceConfig:
    mode: str = "joint"
    w_text: float = 3.0
    w_motion: float = 1.5

    def __post_init__(self) -> None:
        if self.mode not in GUIDANCE_MODES:
            raise ValueError(f"sampler.guidance.mode={self.mode!r}; choose one of {GUIDANCE_MODES}")
        if self.w_text < 0 or self.w_motion < 0:
            raise ValueError(f"guidance weights must be >= 0, got w_text={self.w_text}, w_motion={self.w_motion}")


@dataclass
class SamplerConfig:
    steps: int = 50
    solver: str = "euler"
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"sampler.steps={self.steps} must be >= 1")
        if self.solver not in SOLVERS:
            raise ValueError(f"sampler.solver={self.solver!r}; choose one of {SOLVERS}")

    @property
    def nfe(self) -> int:
        """Network evaluations per video: each guided step evaluates one term per guidance term (batched);
        heun evaluates twice per step but the last (``sample``)."""
        evaluations = self.steps if self.solver == "euler" else 2 * self.steps - 1
        return nfe_per_step(self.guidance.mode) * evaluations


@dataclass
class Condition:
    """Everything a guided forward needs; ``motion=None`` is the empty motion condition."""

    text: torch.Tensor  # [B, L, E] frozen-encoder output
    text_lengths: torch.Tensor  # [B]
    null_text: torch.Tensor  # [1, L0, E] encoding of the empty prompt
    null_text_lengths: torch.Tensor  # [1]
    image: torch.Tensor | None = None  # [B, C_img, F, h, w]
    motion: torch.Tensor | None = None  # [B, D, T, h, w]
    first_latent: torch.Tensor | None = None  # [B, 16, 1, h, w]: latent frame 0 held clean (t = 0)
    image_features: torch.Tensor | None = None  # [B, 257, 1280] CLIP tokens (flavors with the image branch)


# (text?, motion?) combinations each mode evaluates
_TERMS = {
    "joint": [(True, True), (False, True), (True, False)],
    "text": [(True, True), (False, True)],
    "motion": [(True, True), (True, False)],
    "both": [(True, True), (False, False)],
    "none": [(True, True)],
}


def nfe_per_step(mode: str) -> int:
    return len(_TERMS[mode])


def _pad_tokens(t: torch.Tensor, length: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, 0, 0, length - t.shape[1])) if t.shape[1] < length else t


def mix_text(
    text: torch.Tensor, lengths: torch.Tensor, null: torch.Tensor, null_lengths: torch.Tensor, drop: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the text of samples where ``drop`` [B] is True by the null text [1, L0, E]: the text dropout
    that trains the null-text terms guidance combines."""
    L = max(text.shape[1], null.shape[1])
    text, null = _pad_tokens(text, L), _pad_tokens(null, L).expand(text.shape[0], -1, -1)
    keep = ~drop.to(text.device)
    return torch.where(keep[:, None, None], text, null), torch.where(keep, lengths, null_lengths.expand_as(lengths))


def guidance_terms(mode: str, has_motion: bool) -> tuple[list[tuple[bool, bool]], list[tuple[bool, bool]]]:
    """The (text?, motion?) terms guidance ``mode`` combines, in ``combine_guided``'s order, and the distinct
    forwards they need: without a motion condition every term's motion is empty, so terms that differ only in
    motion are one forward (joint: 3 -> 2 NFE)."""
    wanted = [(t, m and has_motion) for t, m in _TERMS[mode]]
    return wanted, list(dict.fromkeys(wanted))


def combine_guided(v: list[torch.Tensor], guidance: GuidanceConfig) -> torch.Tensor:
    """The guided velocity from the velocities of ``guidance_terms``' wanted terms, in their order."""
    wt, wm = guidance.w_text, guidance.w_motion
    if guidance.mode == "none":
        return v[0]
    if guidance.mode == "text":
        return v[1] + wt * (v[0] - v[1])
    if guidance.mode == "motion":
        return v[1] + wm * (v[0] - v[1])
    if guidance.mode == "both":
        return v[1] + wt * (v[0] - v[1])
    if wt + wm == 0:
        return v[0]
    a = wt / (wt + wm)
    base = a * v[1] + (1 - a) * v[2]
    return base + wt * (v[0] - v[1]) + wm * (v[0] - v[2])


def guided_velocity(
    model: Callable[..., torch.Tensor], x: torch.Tensor, sigma: torch.Tensor, cond: Condition, guidance: GuidanceConfig
) -> torch.Tensor:
    """One guided velocity [B, ...] at noise level ``sigma`` [B] or per frame [B, F] (one batched forward)."""
    wanted, terms = guidance_terms(guidance.mode, cond.motion is not None)
    B = x.shape[0]
    L = max(cond.text.shape[1], cond.null_text.shape[1])
    texts, lens, motions = [], [], []
    for use_text, use_motion in terms:
        if use_text:
            texts.append(_pad_tokens(cond.text, L))
            lens.append(cond.text_lengths)
        else:
            texts.append(_pad_tokens(cond.null_text, L).expand(B, -1, -1))
            lens.append(cond.null_text_lengths.expand(B))
        if cond.motion is not None:
            motions.append(cond.motion if use_motion else torch.zeros_like(cond.motion))
    k = len(terms)
    out = model(
        x.repeat(k, *([1] * (x.ndim - 1))),
        sigma_to_t(sigma).repeat(k, *([1] * (sigma.ndim - 1))),
        text=torch.cat(texts),
        text_lengths=torch.cat(lens),
        image=None if cond.image is None else cond.image.repeat(k, *([1] * (cond.image.ndim - 1))),
        motion=torch.cat(motions) if motions else None,
        **(
            {}
            if cond.image_features is None
            else {"image_features": cond.image_features.repeat(k, *([1] * (cond.image_features.ndim - 1)))}
        ),
    ).float()
    distinct = out.chunk(k)
    return combine_guided([distinct[terms.index(key)] for key in wanted], guidance)


@torch.no_grad()
def sample(
    model: Callable[..., torch.Tensor],
    noise: torch.Tensor,
    cond: Condition,
    *,
    cfg: SamplerConfig,
    shift: float,
    sigmas: torch.Tensor | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Integrate from ``noise`` (sigma = 1) to a clean latent on the shared step grid.

    ``callback(i, sigma_i, x_i)`` sees every step's input (the ODE pairs record these).
    With ``cond.first_latent`` the latent frame 0 is held at that clean latent with timestep 0 at
    every step (the ``clean_first_frame`` training convention); only frames 1.. are integrated.
    """
    sig = (sigmas if sigmas is not None else sampling_sigmas(cfg.steps, shift=shift)).to(noise.device)
    x = noise.float()
    B, F = x.shape[0], x.shape[2]
    first = cond.first_latent
    inner = getattr(model, "module", model)
    conventions = getattr(inner, "conventions", None)  # a MotionWan has them; other velocity callables do not
    if first is None and conventions is not None and conventions.clean_first_frame:
        raise ValueError(
            "this network was trained with a clean latent frame 0 (network.json conventions.clean_first_frame): "
            "pass Condition(first_latent=<the first frame's latent [B, 16, 1, h, w]>), e.g. "
            "models.conditioner.Conditioner.first_latent(image)"
        )

    def level(s: torch.Tensor) -> torch.Tensor:  # [B] or [B, F] with frame 0 clean
        s = s.float().expand(B)
        if first is None:
            return s
        out = s[:, None].expand(B, F).clone()
        out[:, 0] = 0
        return out

    def pin(z: torch.Tensor) -> torch.Tensor:
        if first is None:
            return z
        return torch.cat([first.to(z.dtype), z[:, :, 1:]], dim=2)

    x = pin(x)
    if cfg.solver == "euler":
        for i in range(len(sig) - 1):
            if callback is not None:
                callback(i, sig[i], x)
            v = guided_velocity(model, x, level(sig[i]), cond, cfg.guidance)
            x = pin(x + (sig[i + 1] - sig[i]).float() * v)
        return x
    # heun: the trapezoidal rule on each interval (2 guided evaluations; Euler on the last one,
    # which ends at sigma = 0 where x0 = x - sigma v is already exact for the predicted v)
    for i in range(len(sig) - 1):
        if callback is not None:
            callback(i, sig[i], x)
        dt = (sig[i + 1] - sig[i]).float()
        v = guided_velocity(model, x, level(sig[i]), cond, cfg.guidance)
        x_euler = pin(x + dt * v)
        if sig[i + 1] > 0:
            v2 = guided_velocity(model, x_euler, level(sig[i + 1]), cond, cfg.guidance)
            x = pin(x + dt * 0.5 * (v + v2))
        else:
            x = x_euler
    return x
