"""Causal consistency distillation (Causal Forcing++): a few-step causal student distilled from an
autoregressive teacher, one online teacher ODE step at a time, with no stored trajectories.

The teacher is autoregressive (a ``stage=teacher_forcing`` export: the causal network trained with the
flow-matching loss on clean context), so every trajectory it defines for chunk i is conditioned on the clean
chunks before it, as the student's is at inference (a bidirectional teacher's trajectory also depends on the
future frames, which a causal student cannot see). Per batch, on the shifted grid s_0 = 1 > ... > s_N = 0 of
``grid_steps`` N intervals (the student's K steps are points of it):

* one interval k ~ U{0, ..., N-1} for every chunk (Causal Forcing++: the same t for all frames);
* each chunk's clean latents x0_i are noised to x_i = (1 - s_k) x0_i + s_k eps_i;
* teacher (frozen, joint guidance, ``guidance``): one Euler step x_i' = x_i + (s_{k+1} - s_k) v_T(x_i, s_k);
* target (the student's EMA, no gradient): f^-(x_i', s_{k+1}) = x_i' - s_{k+1} v_EMA(x_i', s_{k+1});
* student: f(x_i, s_k) = x_i - s_k v_S(x_i, s_k); loss = mean ||f - target||^2 over the chunks.

Every network sees the clip's clean chunks before chunk i through its own rolling cache (teacher forcing's
walk, ``train.clean_context.clean_context_chunks``), under one sink / window configuration drawn per batch.
The x0 parameterisation makes f(x, 0) = x, so the last interval (s_{k+1} = 0) anchors the student to the
teacher's own Euler step: the boundary condition is in the grid, where Causal Forcing++'s stops at s ~ 0.1.
The guidance terms run as one batched stream (the batch repeated per term, each with its text and motion);
the target network is the loop's EMA of the student (``ema``), swapped in for its pass, which runs before the
student's pass with gradient. Legend: B batch, C channels, F latent frames, h/w latent size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch

from trackstream.diffusion.samplers import GuidanceConfig, combine_guided, guidance_terms
from trackstream.diffusion.schedule import add_noise, sampling_sigmas, sigma_to_t, x0_from_velocity
from trackstream.distill.masks import check_mask_choices, default_sinks, default_windows, sample_causal_config
from trackstream.models.causal import stream_step
from trackstream.models.conditioner import encode_motion
from trackstream.models.streaming import CausalConfig, first_chunk_given
from trackstream.models.tracks import DEFAULT_ID_RANGE, sample_track_ids
from trackstream.stream.chunks import start_cache
from trackstream.train.clean_context import clean_context_chunks, clip_condition, encoded_clips
from trackstream.trainer.objective import Objective, generator_state, load_generator_state
from trackstream.trainer.parallel import unwrap

__all__ = ["ConsistencyConfig", "ConsistencyObjective"]


@dataclass
class ConsistencyConfig:
    name: str = "consistency"
    # the autoregressive teacher: an exported causal network (a stage=teacher_forcing export); frozen
    teacher: Optional[str] = None
    student: Optional[str] = None  # the student's starting weights: null = the teacher's (trainer.weights.load_student)
    teacher_flavor: Optional[str] = None  # the flavor stage.teacher's export must have: null = model.flavor's size
    INPUT_PATHS: ClassVar[tuple] = ("teacher", "student")
    causal: CausalConfig = field(default_factory=CausalConfig)  # the student's chunking at inference
    sink_choices: list = field(default_factory=default_sinks)
    window_choices: list = field(default_factory=default_windows)  # a null entry: the full causal history
    # N intervals of the shifted grid the teacher steps along; a multiple of schedule.student_steps, so that the
    # student's own steps are grid points (Causal Forcing++: 48)
    grid_steps: int = 48
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)  # the teacher's step: eq. 2, w_t 3, w_m 1.5
    track_id_range: int = DEFAULT_ID_RANGE

    def __post_init__(self) -> None:
        for name, cls in (("causal", CausalConfig), ("guidance", GuidanceConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls(**getattr(self, name)))
        check_mask_choices(self.causal, self.sink_choices, self.window_choices)
        if self.grid_steps < 1:
            raise ValueError(f"stage.grid_steps={self.grid_steps} must be >= 1")


class ConsistencyObjective(Objective):
    networks = ("generator",)

    def __init__(
        self,
        network: torch.nn.Module,
        teacher: torch.nn.Module,
        ema,
        *,
        cfg: ConsistencyConfig,
        shift: float,
        student_steps: int,
        null_text: torch.Tensor,
        null_lengths: torch.Tensor,
        embed_dim: int,
        height: int,
        width: int,
        seed: int,
        device: torch.device,
        conditioner=None,
    ):
        """``ema``: the loop's ``trainer.ema.EMA`` of ``network`` (the target network); ``teacher``: the frozen
        autoregressive teacher; ``null_text`` [1, L0, E] / ``null_lengths`` [1]: the empty prompt's encoding."""
        if cfg.grid_steps % student_steps:
            raise ValueError(
                f"stage.grid_steps={cfg.grid_steps} is not a multiple of schedule.student_steps={student_steps}: "
                "the student's steps must be points of the teacher's grid"
            )
        if ema is None:
            raise ValueError("stage=consistency needs ema.enabled=true: its target network is the student's EMA")
        self.network, self.teacher, self.ema, self.cfg = network, teacher, ema, cfg
        self.grid = sampling_sigmas(cfg.grid_steps, shift=shift).float()  # [N + 1], s_N = 0
        self.null_text, self.null_lengths = null_text.to(device), null_lengths.to(device)
        self.embed_dim, self.height, self.width, self.device = embed_dim, height, width, device
        self.conditioner = conditioner
        self.gen = torch.Generator().manual_seed(seed)  # configurations, intervals, track IDs
        self.noise_gen = torch.Generator(device=device).manual_seed(seed + 1)

    def prepare_batch(self, batch: dict) -> dict:
        return encoded_clips(batch, self.conditioner, self.device)

    def _motion(self, batch: dict, ids: torch.Tensor, splat: str, convention: str) -> torch.Tensor:
        return encode_motion(
            batch["tracks"],
            batch["visibility"],
            ids,
            embed_dim=self.embed_dim,
            height=self.height,
            width=self.width,
            latent_height=batch["latents"].shape[3],
            splat=splat,
            convention=convention,
        )  # c_m [B, D, T, h, w]

    def _walk(self, net, batch, ids, motion, causal, x0, inputs: dict, sigma: float) -> dict:
        """``net``'s velocity for every chunk's input (``inputs``: chunk -> [B', C, f, h, w]) at noise level
        ``sigma``, each given the clean chunks before it through ``net``'s own cache."""
        cond = clip_condition(net, batch, ids, height=self.height, width=self.width)
        out = {}
        for i, cache, y, _ in clean_context_chunks(net, start_cache(net, cond, causal), cond, causal, motion, x0):
            s = torch.full((inputs[i].shape[0],), sigma, device=x0.device)
            out[i] = stream_step(net.dit, cache, inputs[i], sigma_to_t(s), y=y).pred.float()
        return out

    @torch.no_grad()
    def _teacher_step(self, batch, ids, motion, causal, x0, x_t: dict, s: float, s_next: float) -> dict:
        """One guided Euler step of the teacher for every chunk: the guidance terms as one stream whose batch is
        the clip's repeated per term, each with its text (or the empty prompt) and motion (or none)."""
        teacher, g = unwrap(self.teacher), self.cfg.guidance
        wanted, terms = guidance_terms(g.mode, True)
        k, B = len(terms), x0.shape[0]
        L = max(batch["text_emb"].shape[1], self.null_text.shape[1])
        pad = lambda t: torch.nn.functional.pad(t, (0, 0, 0, L - t.shape[1]))  # noqa: E731
        texts = [pad(batch["text_emb"]) if t else pad(self.null_text).expand(B, -1, -1) for t, _ in terms]
        lens = [batch["text_len"] if t else self.null_lengths.expand(B) for t, _ in terms]
        rep = lambda v: None if v is None else v.repeat(k, *([1] * (v.ndim - 1)))  # noqa: E731
        terms_batch = {
            "latents": rep(x0),
            "text_emb": torch.cat(texts),
            "text_len": torch.cat(lens),
            "image": rep(batch.get("image")),
            "image_features": rep(batch.get("image_features")),
        }
        motions = torch.cat([motion if m else torch.zeros_like(motion) for _, m in terms])
        inputs = {i: rep(x) for i, x in x_t.items()}
        v_terms = self._walk(teacher, terms_batch, rep(ids), motions, causal, rep(x0), inputs, s)
        steps = {}
        for i, x in x_t.items():
            v = v_terms[i].chunk(k)  # [k B, ...] -> per term, then their guided combination
            steps[i] = x + (s_next - s) * combine_guided([v[terms.index(key)] for key in wanted], g)
        return steps

    def loss(self, name: str, batch: dict, *, step: int):
        net, c, g = unwrap(self.network), self.cfg, self.gen
        x0 = batch["latents"].float()  # [B, C, F, h, w]
        B = x0.shape[0]
        causal = sample_causal_config(c.causal, c.sink_choices, c.window_choices, g)
        ids = sample_track_ids(B, batch["tracks"].shape[2], id_range=c.track_id_range, generator=g).to(self.device)
        motion = self._motion(batch, ids, net.track_splat, net.track_convention)
        k = int(torch.randint(c.grid_steps, (), generator=g))
        s, s_next = float(self.grid[k]), float(self.grid[k + 1])
        given = first_chunk_given(causal)
        x_t = {}  # predicted chunk -> its noised latents, chunks in order (a given chunk 0 is context only)
        for i in range(int(given), causal.num_chunks(x0.shape[2])):
            lo, f = causal.chunk_start(i), causal.chunk_len(i)
            noise = torch.randn(x0[:, :, lo : lo + f].shape, generator=self.noise_gen, device=self.device)
            x_t[i] = add_noise(x0[:, :, lo : lo + f], noise, torch.full((B,), s, device=self.device))
        x_next = self._teacher_step(batch, ids, motion, causal, x0, x_t, s, s_next)
        with torch.no_grad(), self.ema.swapped(net):  # before the pass with gradient: the swap writes the weights
            v_ema = self._walk(net, batch, ids, motion, causal, x0, x_next, s_next)
        v_student = self._walk(net, batch, ids, motion, causal, x0, x_t, s)
        losses = []
        for i, x in x_t.items():
            target = x0_from_velocity(x_next[i], v_ema[i], torch.full((B,), s_next, device=self.device))
            pred = x0_from_velocity(x, v_student[i], torch.full((B,), s, device=self.device))
            losses.append((pred - target).square().mean())
        loss = torch.stack(losses).mean()
        return loss, {
            "cd/mse": loss.detach(),
            "cd/sigma": torch.tensor(s),
            "cd/sink": torch.tensor(float(causal.sink_chunks)),
            "cd/window": torch.tensor(float(causal.window_chunks or 0)),
        }

    def state_dict(self) -> dict:
        return {"gen": generator_state(self.gen), "noise_gen": generator_state(self.noise_gen)}

    def load_state_dict(self, state: dict) -> None:
        load_generator_state(self.gen, state["gen"])
        load_generator_state(self.noise_gen, state["noise_gen"])
