"""Teacher forcing: the causal student trained with the flow-matching loss on clean context.

One of the three ways to start the causal student before DMD (``stage=ode_init``, ``stage=teacher_forcing``,
``stage=consistency``). The student starts as a copy of the teacher and learns, on real clips, to denoise each
chunk given the clean chunks before it, through the rolling KV cache it streams with:

* per clip: the cache starts empty (text K/V once); for each chunk i in order,
  - a given chunk 0 (the clean first-frame latent) is committed to the cache, not predicted;
  - otherwise its clean latents x0_i are noised at the chunk's own sigma_i ~ shift(U(0, 1)) and the student
    predicts the velocity through the cache: loss w(sigma_i) || v - (eps - x0_i) ||^2 (the teacher's eq. A2);
  - then x0_i (the ground truth, not the student's sample: teacher forcing) is re-run at t = 0 and its K/V enter
    the cache, which rolls past the window as at inference (``stream.chunks.commit_chunk``);
* the sink / window configuration is drawn per batch from ``sink_choices`` x ``window_choices`` as in ODE init,
  so rolled caches (the sink beside a window that is not adjacent to it) are trained at the clip's length.

This is the mask-free form of LongLive 2.0's / WanTrack's teacher-forcing fine-tune, whose single forward lays
out [clean chunks | noisy chunks] with a mask letting noisy chunk i see clean chunks j < i: the same attention
(the block-causal mask equals the streamed cache, tests/test_causal.py), at the cost of one clean pass per chunk,
and no gradient into the clean context (``commit_chunk`` runs without it, the streaming memory rule).
The result is a many-step causal diffusion model: sampled with many steps it is the autoregressive teacher that
causal consistency distillation (``train.consistency.objective``) distils; sampled with the student's K steps it is a
start for DMD. Legend: B batch, C channels, F latent frames, h/w latent size, T pixel frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch

from trackstream.diffusion.samplers import mix_text
from trackstream.diffusion.schedule import (
    WEIGHTINGS,
    add_noise,
    loss_weight,
    sample_training_sigmas,
    sigma_to_t,
    velocity_target,
)
from trackstream.distill.masks import check_mask_choices, default_sinks, default_windows, sample_causal_config
from trackstream.models.causal import stream_step
from trackstream.models.streaming import CausalConfig
from trackstream.models.tracks import DEFAULT_ID_RANGE, sample_track_ids
from trackstream.stream.chunks import start_cache
from trackstream.train.clean_context import clean_context_chunks, clip_condition, encoded_clips
from trackstream.trainer.objective import Objective, generator_state, load_generator_state
from trackstream.trainer.parallel import unwrap

__all__ = [
    "TeacherForcingConfig",
    "TeacherForcingObjective",
]


@dataclass
class TeacherForcingConfig:
    name: str = "teacher_forcing"
    teacher: Optional[str] = None  # exported teacher folder: the student's starting weights, codec and encoders
    # the student's starting weights: null = the teacher; an exported folder or a Wan checkpoint / release folder
    # in the network of model.flavor (trainer.weights.load_student)
    student: Optional[str] = None
    teacher_flavor: Optional[str] = None  # the flavor stage.teacher's export must have: null = model.flavor's size
    INPUT_PATHS: ClassVar[tuple] = ("teacher", "student")
    # the student's chunking at inference (written to its export); training draws sink / window per batch
    causal: CausalConfig = field(default_factory=CausalConfig)
    sink_choices: list = field(default_factory=default_sinks)
    window_choices: list = field(default_factory=default_windows)  # a null entry: the full causal history
    weighting: str = "bell"  # diffusion.schedule.WEIGHTINGS, as the teacher's loss
    sigma_min: float = 0.0
    # text dropout (-> the empty prompt) and track dropout (-> the empty motion), independent as the teacher's:
    # they keep v(0, c_m) and v(c_t, 0), the guidance terms of the student sampled with many steps as the
    # autoregressive teacher of consistency distillation
    p_drop_text: float = 0.1
    p_drop_tracks: float = 0.1
    track_id_range: int = DEFAULT_ID_RANGE

    def __post_init__(self) -> None:
        if isinstance(self.causal, dict):
            self.causal = CausalConfig(**self.causal)
        check_mask_choices(self.causal, self.sink_choices, self.window_choices)
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"stage.weighting={self.weighting!r}; choose one of {WEIGHTINGS}")
        if not 0.0 <= self.sigma_min < 1.0:
            raise ValueError(f"stage.sigma_min={self.sigma_min} must be in [0, 1)")
        for name in ("p_drop_text", "p_drop_tracks"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"stage.{name}={getattr(self, name)} must be in [0, 1]")


class TeacherForcingObjective(Objective):
    networks = ("generator",)

    def __init__(
        self,
        network: torch.nn.Module,
        *,
        cfg: TeacherForcingConfig,
        shift: float,
        embed_dim: int,
        height: int,
        width: int,
        seed: int,
        device: torch.device,
        conditioner=None,
        null_text: Optional[torch.Tensor] = None,
        null_lengths: Optional[torch.Tensor] = None,
    ):
        """``conditioner``: the frozen encoders (``models.conditioner.Conditioner``) for batches that still hold
        raw videos and captions (``data.pool_size: null``: clips rendered as they come). ``null_text`` [1, L0, E]
        / ``null_lengths`` [1]: the empty prompt's encoding (text dropout)."""
        if cfg.p_drop_text > 0 and null_text is None:
            raise ValueError("stage.p_drop_text > 0 needs the empty prompt's encoding (null_text)")
        self.null_text = None if null_text is None else (null_text.to(device), null_lengths.to(device))
        self.network, self.cfg, self.shift, self.embed_dim = network, cfg, shift, embed_dim
        self.height, self.width, self.device, self.conditioner = height, width, device, conditioner
        self.gen = torch.Generator().manual_seed(seed)  # configurations, sigmas, track IDs, dropout
        self.noise_gen = torch.Generator(device=device).manual_seed(seed + 1)

    def prepare_batch(self, batch: dict) -> dict:
        return encoded_clips(batch, self.conditioner, self.device)

    def motion(self, batch: dict, track_ids: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """c_m [B, D, T, h, w] of the batch's tracks; samples where ``drop`` [B] get the empty motion."""
        from trackstream.models.conditioner import encode_motion

        vis = batch["visibility"] & ~drop.to(self.device)[:, None, None]
        return encode_motion(
            batch["tracks"],
            vis,
            track_ids,
            embed_dim=self.embed_dim,
            height=self.height,
            width=self.width,
            latent_height=batch["latents"].shape[3],
            splat=unwrap(self.network).track_splat,
            convention=unwrap(self.network).track_convention,
        )

    def loss(self, name: str, batch: dict, *, step: int):
        net, c, g = unwrap(self.network), self.cfg, self.gen
        x0 = batch["latents"].float()  # [B, C, F, h, w]
        B = x0.shape[0]
        causal = sample_causal_config(c.causal, c.sink_choices, c.window_choices, g)
        ids = sample_track_ids(B, batch["tracks"].shape[2], id_range=c.track_id_range, generator=g).to(self.device)
        drop_text = torch.rand(B, generator=g) < c.p_drop_text
        motion = self.motion(batch, ids, torch.rand(B, generator=g) < c.p_drop_tracks)
        if self.null_text is not None:
            text = mix_text(batch["text_emb"], batch["text_len"], *self.null_text, drop_text)
            batch = {**batch, "text_emb": text[0], "text_len": text[1]}
        cond = clip_condition(net, batch, ids, height=self.height, width=self.width)
        losses, mse = [], []
        for _, cache, y, x0_i in clean_context_chunks(net, start_cache(net, cond, causal), cond, causal, motion, x0):
            sigma = sample_training_sigmas(B, shift=self.shift, generator=g, sigma_min=c.sigma_min).to(self.device)
            noise = torch.randn(x0_i.shape, generator=self.noise_gen, device=self.device)
            x_t = add_noise(x0_i, noise, sigma)
            v = stream_step(net.dit, cache, x_t, sigma_to_t(sigma), y=y).pred
            err = (v.float() - velocity_target(x0_i, noise)).square().mean(dim=(1, 2, 3, 4))  # [B]
            losses.append((loss_weight(sigma, weighting=c.weighting, shift=self.shift) * err).mean())
            mse.append(err.mean().detach())
        assert losses, "the clip has no chunk to predict"
        loss = torch.stack(losses).mean()
        return loss, {
            "tf/mse": torch.stack(mse).mean(),
            "tf/sink": torch.tensor(float(causal.sink_chunks)),
            "tf/window": torch.tensor(float(causal.window_chunks or 0)),
        }

    def state_dict(self) -> dict:
        return {"gen": generator_state(self.gen), "noise_gen": generator_state(self.noise_gen)}

    def load_state_dict(self, state: dict) -> None:
        load_generator_state(self.gen, state["gen"])
        load_generator_state(self.noise_gen, state["noise_gen"])
