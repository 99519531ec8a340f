"""AR-Drag's RL stage: GRPO with selective stochasticity on the streaming student.

Networks: the policy (``generator``: the streaming student from a DMD / ODE-init export, trainable) and
``reference``, a frozen copy of that starting student (the KL anchor). Frozen parts: the codec (decodes
rollouts for the rewards) and the rewards (eval/rewards.py). The SDE step and the GRPO maths: grpo.py.

A round takes ``updates_per_rollout`` loop steps; its first step collects, on each micro-batch:
1. rollouts (no grad): each condition (first frame, tracks, text) is repeated G times and every copy is
   sampled through the rolling KV cache with the engine's per-chunk functions (``stream.chunks``), the clean
   latent of each chunk entering the cache (Self-Rollout: the engine's transitions). In every generated
   chunk exactly one of the K - 1 re-noising transitions is the SDE step, drawn per rollout and chunk; the
   others are the engine's seeded steps. Every draw is per rollout, keyed by (global sample id, member):
   noise, exploration noise, SDE steps, track IDs. Recorded per chunk: the SDE step, its input x and output
   x', the seeded part of its mean, log p_old(x' | x) under the sampling policy and, for the KL, the
   reference's x0 at that state (a second streaming pass of the reference over the same clean chunks);
2. rewards of the decoded clips; advantages normalised within each group of G (grpo.group_advantages).
Every step of the round then updates on those records: log p_theta(x' | x) is recomputed chunk by chunk
through a cache rebuilt from the rollout's committed clean chunks (the context the transition saw: the
policy's K/V of those latents, written without grad as every commit is), one noisy pass per chunk at the
recorded input and level with grad; loss = clipped surrogate + kl_weight x KL(policy || reference) on the
SDE step means. The first update of a round is on-policy (ratio 1 in value); later ones are not, which is
where the clip range acts. A round's records are part of the objective's state, so a run cut mid-round
resumes exactly; the data stream yields a batch on every step and the later steps of a round ignore it.
Legend: B conditions, G group size, R = B G rollouts, n generated chunks, K steps, C channels, f chunk latents.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from typing import Optional

import torch

from trackstream.data.batching import derive_seed
from trackstream.diffusion.schedule import sigma_to_t, x0_from_velocity
from trackstream.distill.grpo import clipped_surrogate, gaussian_log_prob, group_advantages, mean_kl, sde_mean, sde_std
from trackstream.distill.horizons import check_horizons
from trackstream.eval.rewards import RewardsConfig
from trackstream.models.causal import stream_step
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

__all__ = ["RLConfig", "RLObjective", "Rollout"]


@dataclass
class RLConfig:
    name: str = "rl"
    student: Optional[str] = None  # exported student folder (DMD / ODE init): the policy's start and the reference
    pairs: Optional[str] = None  # ODE pair folder: its conditions (first frame, tracks, text) only
    # without stage.pairs: how many training clips' conditions, encoded by the student's conditioner (null:
    # data.pool_size); a student that has no pair folder (FastVideo's Track-v0) trains on its data's conditions
    pool_size: Optional[int] = None
    causal: CausalConfig = field(default_factory=CausalConfig)
    group_size: int = 4  # G rollouts per condition
    noise_level: float = 0.7  # a: the SDE step's share of exploration noise (grpo.py; Flow-GRPO's 0.7)
    clip_range: float = 1e-4  # PPO clip of the ratio of element-averaged log-probs (Flow-GRPO, DanceGRPO)
    adv_clip_max: float = 5.0  # advantages clipped to +-5 (Flow-GRPO, DanceGRPO)
    adv_eps: float = 1e-4  # std + eps in the group normalisation (Flow-GRPO)
    kl_weight: float = 0.04  # beta (Flow-GRPO's GenEval / OCR configs; 0: no reference network at all)
    updates_per_rollout: int = 1  # loop steps (optimizer updates) on one round of rollouts
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-5, betas=[0.9, 0.999], weight_decay=1e-4, clip_grad_norm=1.0)
    )
    ema: EMAConfig = field(default_factory=lambda: EMAConfig(enabled=False))
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    # rollouts over this many teacher horizons through the rolling cache (distill.horizons; the rewards score
    # the whole rollout); 1: the pairs' length
    rollout_horizons: int = 1

    def __post_init__(self) -> None:
        for name, cls in (("causal", CausalConfig), ("optim", OptimConfig), ("ema", EMAConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls(**getattr(self, name)))
        if isinstance(self.rewards, dict):
            self.rewards = RewardsConfig(**self.rewards)
        check_horizons(self.causal, self.rollout_horizons)
        if self.group_size < 2:
            raise ValueError(f"stage.group_size={self.group_size} must be >= 2 (advantages are relative to the group)")
        if not 0.0 < self.noise_level <= 1.0:
            raise ValueError(f"stage.noise_level={self.noise_level} must be in (0, 1]")
        for name in ("clip_range", "adv_clip_max", "adv_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"stage.{name}={getattr(self, name)} must be > 0")
        if self.pool_size is not None and self.pool_size < 1:
            raise ValueError(f"stage.pool_size={self.pool_size} must be >= 1 (or null for data.pool_size)")
        if self.kl_weight < 0:
            raise ValueError(f"stage.kl_weight={self.kl_weight} must be >= 0")
        if self.updates_per_rollout < 1:
            raise ValueError(f"stage.updates_per_rollout={self.updates_per_rollout} must be >= 1")


@dataclass
class Rollout:
    """One micro-batch's round of rollouts: what the update steps recompute the log-probs on. The per-chunk
    states are lists, one [R, C, f_j, h, w] per generated chunk j: chunks differ in length where chunk 0 is a
    sampled single latent (FastVideo's [1] + [3] x k)."""

    committed: torch.Tensor  # [R, C, F, h, w] each chunk's clean latent: the cache's content and the video
    steps: torch.Tensor  # [n, R] long: the SDE step of each generated chunk
    x_in: list[torch.Tensor]  # n x [R, C, f, h, w] the SDE step's input
    x_next: list[torch.Tensor]  # n x [R, C, f, h, w] its output
    anchor: list[torch.Tensor]  # n x [R, C, f, h, w] the seeded part of its mean, sigma' sqrt(1 - a^2) eps
    log_prob: torch.Tensor  # [n, R] float64 under the sampling policy
    ref_x0: Optional[list[torch.Tensor]] = None  # n x [R, C, f, h, w] the reference's x0 at the SDE states
    advantages: Optional[torch.Tensor] = None  # [R]

    def to(self, device) -> "Rollout":
        def moved(v):  # a checkpoint from before the per-chunk lists holds them stacked: either moves
            return [t.to(device) for t in v] if isinstance(v, (list, tuple)) else v.to(device)

        return Rollout(**{f.name: None if (v := getattr(self, f.name)) is None else moved(v) for f in fields(self)})


class RLObjective(Objective):
    networks = ("generator",)

    def __init__(
        self,
        generator: torch.nn.Module,
        reference: Optional[torch.nn.Module],
        codec: torch.nn.Module,
        reward,
        *,
        cfg: RLConfig,
        sigmas: torch.Tensor,
        embed_dim: int,
        height: int,
        width: int,
        seed: int,
        device: torch.device,
    ):
        from trackstream.trainer.parallel import unwrap

        if len(sigmas) < 3:
            raise ValueError(
                f"schedule.student_steps={len(sigmas) - 1}: the SDE step is one of the K - 1 re-noising "
                "transitions of a chunk, so K must be >= 2"
            )
        self.generator, self.student = generator, unwrap(generator)  # the rollout drives the streaming path
        self.reference = None if reference is None or cfg.kl_weight == 0 else unwrap(reference)
        self.codec, self.reward = codec, reward
        self.cfg, self.causal, self.sigmas = cfg, cfg.causal, sigmas.float().to(device)
        self.embed_dim, self.height, self.width, self.device, self.seed = embed_dim, height, width, device, seed
        # batches without global sample ids (unit tests) draw from these streams; noise_gen is the engine's seed + 1
        self.gen = torch.Generator().manual_seed(seed)
        self.noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
        self.explore_gen = torch.Generator(device=device).manual_seed(seed + 2)
        self.buffers: dict[int, tuple[Rollout, dict]] = {}  # micro-batch index -> (rollout, its prepared batch)
        self._at, self._count = -1, 0

    # ------------------------------------------------------------------ batches and draws

    def batch_size(self, batch: dict) -> int:
        return int(batch["tracks"].shape[0])

    def prepare_batch(self, batch: dict) -> dict:
        out = {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        B, _, N, _ = out["tracks"].shape
        gens = self._gens(out, "track-ids", device="cpu", members=1)
        ids = (
            sample_track_ids(B, N, id_range=self.student.track_id_range, generator=self.gen)
            if gens is None
            else torch.cat([sample_track_ids(1, N, id_range=self.student.track_id_range, generator=g) for g in gens])
        )
        out["track_ids"] = ids.to(self.device)
        return self._with_motion(out)

    def _with_motion(self, b: dict) -> dict:
        from trackstream.models.conditioner import encode_motion

        lat_h = b["image_latent"].shape[-2]
        kw = dict(
            embed_dim=self.embed_dim,
            height=self.height,
            width=self.width,
            latent_height=lat_h,
            splat=self.student.track_splat,
            convention=self.student.track_convention,
        )
        return {**b, "motion": encode_motion(b["tracks"], b["visibility"], b["track_ids"], **kw)}  # [B, D, T, h, w]

    def _gens(self, batch: dict, purpose: str, *, device=None, members: Optional[int] = None):
        """One generator per rollout (global sample id, member of the group): the same numbers whatever the
        number of processes a global batch is split over. None without ids."""
        if "gid" not in batch:
            return None
        G = self.cfg.group_size if members is None else members
        dev = self.device if device is None else device
        return [
            torch.Generator(device=dev).manual_seed(derive_seed(self.seed, purpose, int(g), j) % 2**62)
            for g in batch["gid"].tolist()
            for j in range(G)
        ]

    def _randn(self, gens, shape: tuple[int, ...], fallback: torch.Generator) -> torch.Tensor:
        if gens is None:
            return torch.randn(shape, generator=fallback, device=self.device)
        return torch.stack([torch.randn(shape[1:], generator=g, device=self.device) for g in gens])

    def _group(self, batch: dict) -> dict:
        """Each condition repeated G times, members of a group adjacent: [B, ...] -> [B G, ...]."""
        G = self.cfg.group_size
        return {k: v.repeat_interleave(G, dim=0) if torch.is_tensor(v) and v.ndim else v for k, v in batch.items()}

    def _condition(self, net, rep: dict) -> VideoCondition:
        return VideoCondition(
            context=net.project_text(rep["text_emb"], rep["text_len"]),
            image_latent=rep["image_latent"],
            image_cond=rep.get("image"),
            track_ids=rep["track_ids"],
            height=self.height,
            width=self.width,
            image_features=rep.get("image_features"),
        )

    # ------------------------------------------------------------------ rollout

    def _sde_chunk(self, cache, y, shape, k_sde, env, explore, a: float):
        """One chunk through ``denoise_chunk`` with the SDE step at ``k_sde`` [R] -> the clean latent and the
        step's (input, output, x0, seeded noise), each [R, C, f, h, w]."""
        inputs, x0s, eps_at, transitions = {}, {}, {}, iter(range(len(self.sigmas) - 2))

        def fresh() -> torch.Tensor:  # the re-noise of transition k: seeded eps, or the SDE mix at k_sde
            k = next(transitions)
            eps = eps_at[k] = self._randn(env, shape, self.noise_gen)
            z = self._randn(explore, shape, self.explore_gen)
            return torch.where((k_sde == k).view(-1, 1, 1, 1, 1), math.sqrt(1 - a * a) * eps + a * z, eps)

        def on_input(k: int, x: torch.Tensor) -> torch.Tensor:
            inputs[k] = x
            return x

        def on_x0(k: int, x0: torch.Tensor) -> torch.Tensor:
            x0s[k] = x0
            return x0

        noise = self._randn(env, shape, self.noise_gen)
        clean = denoise_chunk(
            self.student, cache, noise, y, self.sigmas, fresh_noise=fresh, on_input=on_input, on_x0=on_x0
        )
        pick = lambda d, off: torch.stack([d[k + off][r] for r, k in enumerate(k_sde.tolist())])  # noqa: E731
        return clean, pick(inputs, 0), pick(inputs, 1), pick(x0s, 0), pick(eps_at, 0)

    @torch.no_grad()
    def rollout(self, batch: dict, *, noise_level: Optional[float] = None) -> Rollout:
        """G rollouts of every condition of a prepared batch (see the module docstring). ``noise_level``
        overrides the configured a (tests: a -> 0 is the engine)."""
        a = self.cfg.noise_level if noise_level is None else noise_level
        net, cfg, K = self.student, self.causal, len(self.sigmas) - 1
        rep = self._group(batch)
        cond = self._condition(net, rep)
        cache = start_cache(net, cond, cfg)
        R, C, _, h, w = cond.image_latent.shape
        n = cfg.num_chunks(latent_frames(rep["motion"].shape[2]))
        given = first_chunk_given(cfg)
        env, explore = self._gens(batch, "rollout-noise"), self._gens(batch, "rollout-explore")
        picks = self._gens(batch, "rollout-sde-step", device="cpu")
        acts = n - int(given)
        steps = (
            torch.randint(K - 1, (acts, R), generator=self.gen)
            if picks is None
            else torch.stack([torch.randint(K - 1, (acts,), generator=g) for g in picks], dim=1)
        ).to(self.device)  # [n, R]: which transition of each chunk is the SDE step
        committed, rec = [], {k: [] for k in ("x_in", "x_next", "anchor", "log_prob")}
        for i in range(n):
            lo, hi = chunk_pixel_frames(cfg, i)
            y = chunk_condition(net, cond, cfg, i, rep["motion"][:, :, lo:hi])
            if i == 0 and given:  # the given first frame: committed, not sampled, no action
                cache = commit_chunk(net, cache, cond.image_latent, y)
                committed.append(cond.image_latent)
                continue
            k_sde = steps[len(rec["x_in"])]
            shape = (R, C, cfg.chunk_len(i), h, w)
            clean, x_in, x_next, x0, eps = self._sde_chunk(cache, y, shape, k_sde, env, explore, a)
            s_next = self.sigmas[k_sde + 1]  # [R]
            anchor = (s_next * math.sqrt(1 - a * a)).view(-1, 1, 1, 1, 1) * eps
            rec["log_prob"].append(gaussian_log_prob(x_next, sde_mean(x0, anchor, s_next), sde_std(s_next, a)))
            for key, value in (("x_in", x_in), ("x_next", x_next), ("anchor", anchor)):
                rec[key].append(value)
            cache = commit_chunk(net, cache, clean, y)
            committed.append(clean)
        rec["log_prob"] = torch.stack(rec["log_prob"])
        ro = Rollout(committed=torch.cat(committed, dim=2), steps=steps, **rec)
        if self.reference is not None:
            ro.ref_x0 = self._x0_at_states(self.reference, rep, ro, grad=False)
        return ro

    def _x0_at_states(self, net, rep: dict, ro: Rollout, *, grad: bool) -> list[torch.Tensor]:
        """``net``'s x0 at every recorded SDE state [R, C, f, h, w], chunk by chunk: the context is a cache of
        the rollout's committed clean chunks written by ``net`` (no grad, as every commit), the chunk's pass
        runs at the recorded input and per-rollout level, with grad when ``grad``."""
        cfg = self.causal
        with torch.set_grad_enabled(grad):
            cond = self._condition(net, rep)
            cache = start_cache(net, cond, cfg)
        out = []
        for i in range(cfg.num_chunks(ro.committed.shape[2])):
            lo, hi = chunk_pixel_frames(cfg, i)
            with torch.set_grad_enabled(grad):
                y = chunk_condition(net, cond, cfg, i, rep["motion"][:, :, lo:hi])
            s, f = cfg.chunk_start(i), cfg.chunk_len(i)
            if not (i == 0 and first_chunk_given(cfg)):
                j = len(out)
                sigma = self.sigmas[ro.steps[j]]  # [R]
                with torch.set_grad_enabled(grad):
                    v = stream_step(net.dit, cache, ro.x_in[j], sigma_to_t(sigma), y=y).pred
                    out.append(x0_from_velocity(ro.x_in[j], v, sigma))
            cache = commit_chunk(net, cache, ro.committed[:, :, s : s + f], y)
        return out

    # ------------------------------------------------------------------ rewards and the loss

    @torch.no_grad()
    def _collect(self, batch: dict) -> tuple[Rollout, dict]:
        """Rollouts, decoded clips, rewards, advantages (+ their metrics) of one prepared micro-batch."""
        G = self.cfg.group_size
        t0 = time.perf_counter()
        ro = self.rollout(batch)
        frames = torch.cat(
            [self.codec.decode(ro.committed[r : r + 1].float()).float().cpu() for r in range(len(ro.committed))]
        )
        t1 = time.perf_counter()
        rep = self._group({k: batch[k] for k in ("tracks", "visibility", "first_frame") if k in batch})
        total = self.reward(frames, {k: v.cpu() for k, v in rep.items()})  # [R]
        ro.advantages = group_advantages(total, G, eps=self.cfg.adv_eps).to(self.device)
        R = len(total)
        groups = total.view(-1, G)
        m = {
            "rl/reward": total.mean(),
            "rl/reward_std": total.std(unbiased=False),
            "rl/reward_group_std": groups.std(dim=1, unbiased=False).mean(),
            "rl/zero_std_groups": (groups.std(dim=1) == 0).float().mean(),
            "rl/adv_abs": ro.advantages.abs().mean(),
            "rl/adv_std": ro.advantages.std(unbiased=False),  # ~1 unless groups have no reward spread
            "rl/adv_max": ro.advantages.abs().max(),
            "rl/rollout_seconds": torch.tensor((t1 - t0) / R),  # sampling + decoding, per rollout
            "rl/reward_seconds": torch.tensor(self.reward.last_seconds / R),
        }
        for name, value in self.reward.parts.items():
            m[f"rl/reward_{name}"], m[f"rl/reward_{name}_std"] = value.mean(), value.std(unbiased=False)
        m.update({f"rl/{k}": v.float().mean() for k, v in self.reward.extras.items()})
        return ro, {k: torch.as_tensor(v, dtype=torch.float32).to(self.device) for k, v in m.items()}

    def policy_terms(self, ro: Rollout, batch: dict) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """log p_theta of every recorded transition [n, R] (with grad) and the KL to the reference [n, R] (or None)."""
        a = self.cfg.noise_level
        x0 = self._x0_at_states(self.student, self._group(batch), ro, grad=True)
        s_next = self.sigmas[ro.steps + 1]  # [n, R]
        logp, kl = [], []
        for j, x0_j in enumerate(x0):
            mean, std = sde_mean(x0_j, ro.anchor[j], s_next[j]), sde_std(s_next[j], a)
            logp.append(gaussian_log_prob(ro.x_next[j], mean, std))
            if ro.ref_x0 is not None:
                kl.append(mean_kl(mean, sde_mean(ro.ref_x0[j], ro.anchor[j], s_next[j]), std))
        return torch.stack(logp), (torch.stack(kl) if kl else None)

    def loss(self, name: str, batch: dict, *, step: int):
        if name != "generator":
            raise ValueError(f"RLObjective has no network {name!r}; it trains {self.networks}")
        if step != self._at:  # the loop calls loss once per micro-batch, in order
            self._at, self._count = step, 0
        micro, self._count = self._count, self._count + 1
        U, metrics = self.cfg.updates_per_rollout, {}
        if step % U == 0:
            ro, metrics = self._collect(batch)
            self.buffers[micro] = (ro, batch)
        elif micro not in self.buffers:
            raise RuntimeError(
                f"step {step}: no rollouts of micro-batch {micro} (a round of {U} steps starts at a multiple of {U})"
            )
        ro, rb = self.buffers[micro]
        logp, kl = self.policy_terms(ro, rb)
        adv = ro.advantages.clamp(-self.cfg.adv_clip_max, self.cfg.adv_clip_max)
        loss, stats = clipped_surrogate(logp, ro.log_prob, adv, clip_range=self.cfg.clip_range)
        metrics.update({f"rl/{k}": v.float() for k, v in stats.items()}, **{"rl/policy_loss": loss.detach().float()})
        if kl is not None:
            kl = kl.mean()
            loss = loss + self.cfg.kl_weight * kl
            metrics["rl/kl"] = kl.detach().float()
        if (step + 1) % U == 0:
            self.buffers.pop(micro)
        return loss.float(), metrics

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        keep = lambda b: {k: v.cpu() for k, v in b.items() if torch.is_tensor(v) and k != "motion"}  # noqa: E731
        return {
            "gen": generator_state(self.gen),
            "noise_gen": generator_state(self.noise_gen),
            "explore_gen": generator_state(self.explore_gen),
            # a round cut mid-way: its rollouts (motion features are re-encoded from the tracks on load)
            "buffers": {
                m: ({f.name: getattr(ro.to("cpu"), f.name) for f in fields(ro)}, keep(b))
                for m, (ro, b) in self.buffers.items()
            },
        }

    def load_state_dict(self, state: dict) -> None:
        load_generator_state(self.gen, state["gen"])
        load_generator_state(self.noise_gen, state["noise_gen"])
        load_generator_state(self.explore_gen, state["explore_gen"])
        self.buffers = {
            m: (Rollout(**ro).to(self.device), self._with_motion({k: v.to(self.device) for k, v in b.items()}))
            for m, (ro, b) in state["buffers"].items()
        }
