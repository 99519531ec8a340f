"""Self-Forcing DMD with joint text-motion guidance (MotionStream §3.2, eq. 3-4; appendix D).

Networks: the causal student (``generator``, trainable, EMA kept by the loop), the critic /
fake score (``critic``, bidirectional, trainable, initialised from the teacher) and the frozen
bidirectional teacher (real score). Per loop step ``updates(step)`` returns ``["critic"]``, and
``["critic", "generator"]`` every ``update_ratio``-th step (5:1, critic first): the phase is a
pure function of the step, so an exact resume continues it (tests/test_distill_dmd.py).

Rollout (``rollout``, the SAME per-chunk functions as the streaming engine, ``stream.chunks``),
Self-Forcing's by default (``stage.rollout: self_forcing``, described here; ``self_rollout``: AR-Drag's,
see ``DMDConfig.rollout``):
with a given first chunk the first-frame latent is committed as chunk 0 (the sink), with a sampled
one chunk 0 is sampled like the rest (``stream.chunks``); every other chunk starts from fresh
noise and is denoised through the rolling KV cache (sink + window as at inference, RoPE by cache
slot) on the K-step list; one exit step k ~ U{0..K-1} is drawn per rollout and shared by all
chunks (Self-Forcing ``same_step_across_blocks``): steps before k run under no_grad, step k with
grad, and its x0 is the chunk's output; the clean re-run at t = 0 writes the chunk's K/V
(no_grad; the cache detaches), so gradients flow through the exit step of each chunk only.

Generator loss (DMD, Self-Forcing ``compute_distribution_matching_loss``): sigma ~ shift(U) per
sample clamped to [sigma_min, sigma_max]; x_t = (1 - sigma) x + sigma eps;
  real x0 = teacher with joint guidance (eq. 4 = eq. 2 on the teacher: 3 NFE),
  fake x0 = critic, conditional, no guidance;
  g = (fake - real) / mean_{C,F,h,w} |x - real|  (per sample, DMD eq. 8), nan_to_num;
  loss = 0.5 * || x - stopgrad(x - g) ||^2 (mean, float64) on the generated frames, whose
  gradient w.r.t. x is g / numel: the generator moves its samples along real - fake.
Critic loss: a fresh no-grad rollout, sigma and eps as above, flow matching
  || v_critic(x_t) - (eps - x) ||^2 (no weighting), i.e. the score of the generator's outputs.
A teacher trained with latent frame 0 given clean (network.json ``conventions.clean_first_frame``)
is called as it was trained: frame 0 of x_t stays the clean first-frame latent at t = 0 (per-frame
sigma), for the real score, the fake score and the critic loss (which then skips frame 0).
Legend: B batch, K student steps, F latent frames, T pixel frames, h/w latent size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch

from trackstream.data.batching import derive_seed
from trackstream.diffusion.samplers import Condition, GuidanceConfig, guided_velocity
from trackstream.diffusion.schedule import (
    add_noise,
    first_frame_sigmas,
    sample_training_sigmas,
    sigma_to_t,
    x0_from_velocity,
)
from trackstream.distill.horizons import check_horizons, split_windows
from trackstream.models.streaming import CausalConfig, first_chunk_given
from trackstream.models.tracks import latent_frames, sample_track_ids
from trackstream.stream.chunks import (
    VideoCondition,
    chunk_condition,
    chunk_pixel_frames,
    commit_chunk,
    denoise_chunk,
    start_cache,
)
from trackstream.trainer.ema import EMAConfig
from trackstream.trainer.objective import Objective, generator_state, load_generator_state
from trackstream.trainer.optim import OptimConfig

__all__ = ["DMDConfig", "DMDObjective", "dmd_gradient", "ROLLOUTS"]
ROLLOUTS = ("self_forcing", "self_rollout")


def _optim(lr: float) -> OptimConfig:
    # Self-Forcing / MotionStream: AdamW betas (0, 0.999), weight decay 0.01, clip 10.
    return OptimConfig(lr=lr, betas=[0.0, 0.999], weight_decay=0.01, clip_grad_norm=10.0)


@dataclass
class DMDConfig:
    name: str = "dmd"
    teacher: Optional[str] = None  # exported teacher folder: real score (frozen) and critic init
    student: Optional[str] = (
        None  # generator init: an export folder, or a checkpoint (PATH::entry; trainer.weights.load_student)
    )
    # the critic's starting weights: null = the teacher; "student" = the generator's (stage.student: the
    # student's size, as under a 14B teacher); or an exported folder / Wan checkpoint in the student's network
    critic: Optional[str] = None
    # the flavor stage.teacher's export must have (checked; memory plans read it): null = model.flavor's size
    teacher_flavor: Optional[str] = None
    # ODE pair folder: conditions (first frame, tracks, text) only; null: the first stage.pool_size training clips'
    # conditions, rendered (or read from the shards) and encoded by the teacher's conditioner (a student started
    # without ODE pairs)
    pairs: Optional[str] = None
    pool_size: Optional[int] = None  # without stage.pairs: how many training clips' conditions (null: data.pool_size)
    # the rollout's chunking = the inference configuration (models.streaming.CausalConfig, Hydra node causal/c3s1w1)
    causal: CausalConfig = field(default_factory=CausalConfig)
    update_ratio: int = 5  # critic updates per generator update
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)  # real score: eq. 4, w_t 3.0, w_m 1.5
    sigma_min: float = 0.02  # DMD / critic noise levels: shifted-uniform, clamped (Self-Forcing [20, 980])
    sigma_max: float = 0.98
    generator_optim: OptimConfig = field(default_factory=lambda: _optim(2e-6))
    critic_optim: OptimConfig = field(default_factory=lambda: _optim(4e-7))
    generator_ema: EMAConfig = field(default_factory=lambda: EMAConfig(decay=0.99, start_step=0))
    # self_forcing: a chunk's exit-step x0 is its output AND enters the cache (Self-Forcing);
    # self_rollout: the chunk is sampled on through every step (no grad) and the clean latent enters the
    # cache, so training transitions equal the engine's (AR-Drag); the loss stays on the exit-step x0
    rollout: str = "self_forcing"
    # the rollout spans this many teacher horizons through the rolling cache; the teacher and the critic score
    # it in horizon-sized windows (distill.horizons); 1: the teacher's horizon, the plain DMD
    rollout_horizons: int = 1
    # generator updates between snapshots of the generator (<run_dir>/snapshots, train.snapshots); null: none
    snapshot_every: Optional[int] = None
    # fields naming files that must exist before the run directory is made (train.app.check_inputs)
    INPUT_PATHS: ClassVar[tuple] = ("teacher", "student", "pairs")  # and stage.critic when a path (build_dmd)

    def __post_init__(self) -> None:
        for name, cls in (
            ("causal", CausalConfig),
            ("guidance", GuidanceConfig),
            ("generator_optim", OptimConfig),
            ("critic_optim", OptimConfig),
            ("generator_ema", EMAConfig),
        ):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls(**getattr(self, name)))
        if self.snapshot_every is not None and self.snapshot_every < 1:
            raise ValueError(
                f"stage.snapshot_every={self.snapshot_every} must be >= 1 (generator updates between "
                "snapshots) or null (no snapshots)"
            )
        if self.pool_size is not None and self.pool_size < 1:
            raise ValueError(f"stage.pool_size={self.pool_size} must be >= 1 (or null for data.pool_size)")
        if self.update_ratio < 1:
            raise ValueError(
                f"stage.update_ratio={self.update_ratio} must be >= 1 (critic updates per generator update)"
            )
        if not 0.0 <= self.sigma_min < self.sigma_max <= 1.0:
            raise ValueError(f"stage.sigma_min={self.sigma_min} / sigma_max={self.sigma_max}: need 0 <= min < max <= 1")
        if self.rollout not in ROLLOUTS:
            raise ValueError(f"stage.rollout={self.rollout!r}; expected one of {ROLLOUTS}")
        check_horizons(self.causal, self.rollout_horizons)


def dmd_gradient(x: torch.Tensor, real_x0: torch.Tensor, fake_x0: torch.Tensor) -> torch.Tensor:
    """(fake - real) / mean |x - real| per sample (DMD eq. 8), non-finite entries zeroed: [B, ...]."""
    dims = tuple(range(1, x.ndim))
    norm = (x - real_x0).abs().mean(dim=dims, keepdim=True)
    return torch.nan_to_num((fake_x0 - real_x0) / norm)


class DMDObjective(Objective):
    networks = ("critic", "generator")
    primary = "generator"
    headline = "dmd/real_fake_gap"  # the generator's distribution-matching gap, not its surrogate loss

    def __init__(
        self,
        generator: torch.nn.Module,
        critic: torch.nn.Module,
        teacher: torch.nn.Module,
        *,
        cfg: DMDConfig,
        sigmas: torch.Tensor,
        shift: float,
        null_text: torch.Tensor,
        null_text_lengths: torch.Tensor,
        embed_dim: int,
        height: int,
        width: int,
        seed: int,
        device: torch.device,
        conditioner=None,
        horizon_latents: Optional[int] = None,
    ):
        """``conditioner`` (the teacher's frozen encoders) and ``horizon_latents`` (the teacher's horizon in
        latent frames) cut rollouts longer than the horizon into windows (``stage.rollout_horizons``)."""
        from trackstream.trainer.parallel import unwrap

        self.generator, self.critic, self.teacher = generator, critic, teacher
        self.student = unwrap(generator)  # the rollout drives the DiT's streaming path directly
        # A teacher trained with latent frame 0 given clean (network.json conventions) scores clips whose
        # frame 0 is the clean first-frame latent at t = 0; the critic, its copy, is trained the same way.
        self.clean_first = unwrap(teacher).conventions.clean_first_frame
        self.cfg, self.causal, self.sigmas, self.shift = cfg, cfg.causal, sigmas.float(), shift
        self.null_text, self.null_lengths = null_text.to(device), null_text_lengths.to(device)
        self.embed_dim, self.height, self.width, self.device = embed_dim, height, width, device
        self.seed = seed
        self.gen = torch.Generator().manual_seed(seed)  # exit steps (one per batch: the same on every rank)
        # batches without global sample ids (unit tests) draw per-sample values from these streams
        self.noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
        self.conditioner, self.horizon_latents = conditioner, horizon_latents
        if cfg.rollout_horizons > 1 and (conditioner is None or horizon_latents is None):
            raise ValueError("stage.rollout_horizons > 1 needs the teacher's conditioner and horizon_latents")

    def updates(self, step: int) -> list[str]:
        if (step + 1) % self.cfg.update_ratio == 0:
            return ["critic", "generator"]
        return ["critic"]

    def prepare_batch(self, batch: dict) -> dict:
        from trackstream.models.conditioner import encode_motion

        out = {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        B, _, N, _ = out["tracks"].shape
        gens = self._sample_gens(out, "track-ids", device="cpu")
        out["track_ids"] = (
            sample_track_ids(B, N, id_range=self.student.track_id_range, generator=self.gen)
            if gens is None
            # fresh tags per sample
            else torch.cat([sample_track_ids(1, N, id_range=self.student.track_id_range, generator=g) for g in gens])
        ).to(self.device)
        out["motion"] = encode_motion(
            out["tracks"],
            out["visibility"],
            out["track_ids"],
            embed_dim=self.embed_dim,
            height=self.height,
            width=self.width,
            latent_height=out["image_latent"].shape[-2],
            splat=self.student.track_splat,
            convention=self.student.track_convention,
        )  # c_m [B, D, T, h, w]
        return out

    def batch_size(self, batch: dict) -> int:
        return int(batch["tracks"].shape[0])

    # ------------------------------------------------------------------ per-sample randomness

    def _sample_gens(self, batch: dict, purpose: str, *, device=None) -> Optional[list[torch.Generator]]:
        """One generator per sample keyed by its global sample id (``gid``): a global batch draws the
        same numbers whatever the number of processes it is split over. None without ids."""
        if "gid" not in batch:
            return None
        dev = self.device if device is None else device
        return [
            torch.Generator(device=dev).manual_seed(derive_seed(self.seed, purpose, int(g)) % 2**62)
            for g in batch["gid"].tolist()
        ]

    def _randn(self, gens: Optional[list[torch.Generator]], shape: tuple[int, ...]) -> torch.Tensor:
        """Noise [B, *shape[1:]]: per sample from ``gens``, else from the objective's stream."""
        if gens is None:
            return torch.randn(shape, generator=self.noise_gen, device=self.device)
        return torch.stack([torch.randn(shape[1:], generator=g, device=self.device) for g in gens])

    # ------------------------------------------------------------------ rollout

    def rollout(
        self,
        batch: dict,
        *,
        grad: bool,
        exit_step: Optional[int] = None,
        purpose: str = "rollout",
        with_committed: bool = False,
    ):
        """Rollout of the whole clip through the rolling cache -> x0 [B, C, F, h, w]: each chunk's exit-step
        prediction (what the loss sees). ``with_committed``: also the latents written to the cache (Self-
        Forcing: the same; Self-Rollout: each chunk sampled on to its clean latent, = the engine's output).

        ``exit_step`` None draws it (uniform over the K steps, shared by all chunks)."""
        net, cfg = self.student, self.causal
        image_cond = batch.get("image")  # [B, C_img, F, h, w]; None for t2v / ti2v layouts
        F = latent_frames(batch["motion"].shape[2])  # latent frames of the clip (motion: [B, D, T, h, w])
        n = cfg.num_chunks(F)
        if exit_step is None:
            exit_step = int(torch.randint(len(self.sigmas) - 1, (), generator=self.gen))
        with torch.set_grad_enabled(grad):
            cond = VideoCondition(
                context=net.project_text(batch["text_emb"], batch["text_len"]),
                image_latent=batch["image_latent"],
                image_cond=image_cond,
                track_ids=batch["track_ids"],
                height=self.height,
                width=self.width,
                image_features=batch.get("image_features"),
            )
            cache = start_cache(net, cond, cfg)
        motion = batch["motion"]
        given = first_chunk_given(cfg)
        outs, committed = [], []
        B, C, _, h, w = cond.image_latent.shape
        gens = self._sample_gens(batch, purpose)
        draw = lambda f: self._randn(gens, (B, C, f, h, w))  # noqa: E731
        for i in range(n):
            lo, hi = chunk_pixel_frames(cfg, i)
            with torch.set_grad_enabled(grad):
                y = chunk_condition(net, cond, cfg, i, motion[:, :, lo:hi])
            if i == 0 and given:  # the given first frame: committed, not sampled
                cache = commit_chunk(net, cache, cond.image_latent, y)
                outs.append(cond.image_latent)
                committed.append(cond.image_latent)
                continue
            f = cfg.chunk_len(i)
            if self.cfg.rollout == "self_rollout":  # every step, the exit step's x0 kept (with grad) for the loss
                kept = {}

                def keep(k: int, x0: torch.Tensor, kept=kept) -> torch.Tensor:
                    if k == exit_step:
                        kept["x0"] = x0
                    return x0

                clean = denoise_chunk(
                    net,
                    cache,
                    draw(f),
                    y,
                    self.sigmas,
                    fresh_noise=lambda: draw(f),
                    grad=grad,
                    grad_step=exit_step,
                    on_x0=keep,
                )
                x0 = kept["x0"]
            else:
                x0 = clean = denoise_chunk(
                    net, cache, draw(f), y, self.sigmas, fresh_noise=lambda: draw(f), exit_step=exit_step, grad=grad
                )
            cache = commit_chunk(net, cache, clean, y)
            outs.append(x0)
            committed.append(clean.detach())
        x = torch.cat(outs, dim=2)
        return (x, torch.cat(committed, dim=2)) if with_committed else x

    # ------------------------------------------------------------------ losses

    def _noised(self, x: torch.Tensor, batch: dict, purpose: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x_t, eps and sigma ([B], or [B, F] with frame 0 at 0 under the clean-first-frame convention)."""
        B = x.shape[0]
        kw = dict(shift=self.shift, sigma_min=self.cfg.sigma_min, sigma_max=self.cfg.sigma_max)
        levels = self._sample_gens(batch, purpose + "-sigma", device="cpu")
        sigma = (
            sample_training_sigmas(B, generator=self.gen, **kw)
            if levels is None
            else torch.cat([sample_training_sigmas(1, generator=g, **kw) for g in levels])
        ).to(self.device)
        if self.clean_first:
            sigma = first_frame_sigmas(sigma, x.shape[2])
        noise = self._randn(self._sample_gens(batch, purpose + "-noise"), tuple(x.shape))
        return add_noise(x, noise, sigma), noise, sigma

    def _critic_velocity(self, x_t: torch.Tensor, sigma: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.critic(
            x_t,
            sigma_to_t(sigma),
            text=batch["text_emb"],
            text_lengths=batch["text_len"],
            image=batch.get("image"),
            motion=batch["motion"],
            image_features=batch.get("image_features"),
        ).float()

    def _windows(self, x: torch.Tensor, committed: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        """A rollout past the teacher's horizon as horizon-sized windows (N B samples), else unchanged."""
        if self.horizon_latents is None or x.shape[2] == self.horizon_latents:
            return x, batch
        return split_windows(x, committed, batch, horizon_latents=self.horizon_latents, conditioner=self.conditioner)

    def generator_loss(self, batch: dict):
        x, committed = self.rollout(batch, grad=True, purpose="generator-rollout", with_committed=True)
        x, batch = self._windows(x, committed, batch)  # [B', C, F, h, w], B' = B x windows
        with torch.no_grad():
            x_t, _, sigma = self._noised(x.detach(), batch, "generator")
            cond = Condition(
                text=batch["text_emb"],
                text_lengths=batch["text_len"],
                null_text=self.null_text,
                null_text_lengths=self.null_lengths,
                image=batch.get("image"),
                motion=batch["motion"],
                image_features=batch.get("image_features"),
            )
            real = x0_from_velocity(x_t, guided_velocity(self.teacher, x_t, sigma, cond, self.cfg.guidance), sigma)
            fake = x0_from_velocity(x_t, self._critic_velocity(x_t, sigma, batch), sigma)
            g = dmd_gradient(x.detach(), real, fake)
        # a given first chunk is the first frame itself (constant, no gradient); a sampled one is generated
        gen_frames = slice(1, None) if first_chunk_given(self.causal) else slice(None)
        xs = x[:, :, gen_frames].double()
        target = (x.detach() - g)[:, :, gen_frames].double()
        loss = 0.5 * torch.nn.functional.mse_loss(xs, target)
        return loss.float(), {
            "dmd/grad_abs": g[:, :, gen_frames].abs().mean(),
            "dmd/real_fake_gap": (real - fake)[:, :, gen_frames].square().mean(),
        }

    def critic_loss(self, batch: dict):
        with torch.no_grad():
            x, committed = self.rollout(batch, grad=False, purpose="critic-rollout", with_committed=True)
            x, batch = self._windows(x, committed, batch)
            x_t, noise, sigma = self._noised(x, batch, "critic")
        v = self._critic_velocity(x_t, sigma, batch)
        err = (v - (noise - x)).square()  # [B, C, F, h, w]
        loss = (err[:, :, 1:] if self.clean_first else err).mean()  # a clean frame 0 is given, not predicted
        return loss, {"critic/flow_mse": loss.detach()}

    def loss(self, name: str, batch: dict, *, step: int):
        if name == "generator":
            return self.generator_loss(batch)
        if name == "critic":
            return self.critic_loss(batch)
        raise ValueError(f"DMDObjective has no network {name!r}; it trains {self.networks}")

    def state_dict(self) -> dict:
        return {"gen": generator_state(self.gen), "noise_gen": generator_state(self.noise_gen)}

    def load_state_dict(self, state: dict) -> None:
        load_generator_state(self.gen, state["gen"])
        load_generator_state(self.noise_gen, state["noise_gen"])
