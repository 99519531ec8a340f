"""ODE init (causal adaptation, MotionStream §3.2 / appendix D; CausVid's ODE regression).

The student starts as a copy of the teacher (same weights, causal attention) and regresses the
teacher's clean latents from points of the teacher's own trajectories, in ONE block-causal
forward per clip:

* chunks: a given chunk 0 is the clean first-frame latent at t = 0 (as at inference, where it is
  the sink); a sampled chunk 0 (``stream.chunks``) is noised like the others; every other chunk gets
  its own random index k into the K-step list and its input is the
  teacher's latent at sigma_k (diffusion forcing: chunks at different noise levels);
* attention: the block-causal mask with a sink / window configuration drawn PER BATCH from
  ``sink_choices`` x ``window_choices`` (MotionStream: "diverse sparse causal attention masks",
  one model for several rollout configurations), RoPE by cache position (models.causal);
* loss: MSE between the predicted x0 (x - sigma v) and the teacher's clean endpoint, on frames
  with sigma > 0 (CausVid masks t = 0 the same way).
Random draws come from generators the objective owns and checkpoints (exact resume).
Legend: B batch, K student steps, F latent frames, h/w latent size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch

from trackstream.data.batching import derive_seed
from trackstream.diffusion.schedule import sigma_to_t, x0_from_velocity
from trackstream.distill.masks import check_mask_choices, default_sinks, default_windows, sample_causal_config
from trackstream.distill.ode_pairs import ODEPairsConfig
from trackstream.models.block_causal import BlockCausalAttention
from trackstream.models.streaming import CausalConfig, first_chunk_given
from trackstream.trainer.objective import Objective, generator_state, load_generator_state
from trackstream.trainer.parallel import unwrap

__all__ = ["ODEInitConfig", "ODEInitObjective", "per_chunk_indices"]


@dataclass
class ODEInitConfig:
    name: str = "ode_init"
    teacher: Optional[str] = None  # exported teacher folder (trainer.weights.export_network): the pairs' sampler
    # the student's starting weights: null = the teacher; an exported folder or a Wan checkpoint / release
    # folder, in the network of model.flavor (trainer.weights.load_student): a 14B teacher, a 1.3B student
    student: Optional[str] = None
    # the flavor stage.teacher's export must have (checked; memory plans read it): null = model.flavor's size
    teacher_flavor: Optional[str] = None
    pairs: Optional[str] = None  # ODE pair folder; null: <run_dir>/ode_pairs, generated from the teacher
    # fields naming files that must exist before the run directory is made (train.app.check_inputs); not
    # pairs: a folder without pairs yet is filled from the teacher
    INPUT_PATHS: ClassVar[tuple] = ("teacher", "student")
    pool_size: Optional[int] = None  # training clips rendered for pair conditions (null: ode_pairs.num_pairs)
    ode_pairs: ODEPairsConfig = field(default_factory=ODEPairsConfig)
    # the student's chunking at inference (models.streaming.CausalConfig, written to its export); training
    # keeps its chunk size and draws sink / window per batch from the choices below
    causal: CausalConfig = field(default_factory=CausalConfig)
    sink_choices: list = field(default_factory=default_sinks)
    window_choices: list = field(default_factory=default_windows)  # a null entry: the full causal history

    def __post_init__(self) -> None:
        if isinstance(self.ode_pairs, dict):
            self.ode_pairs = ODEPairsConfig(**self.ode_pairs)
        if isinstance(self.causal, dict):
            self.causal = CausalConfig(**self.causal)
        check_mask_choices(self.causal, self.sink_choices, self.window_choices)


def per_chunk_indices(
    cfg: CausalConfig, batch: int, num_frames: int, steps: int, gen: torch.Generator | list[torch.Generator]
) -> torch.Tensor:
    """[B, F] step index per frame: one draw in [0, K) per chunk; K (= clean) for a given chunk 0.
    ``gen``: one generator for the batch, or one per sample (draws independent of the batch split)."""
    n = cfg.num_chunks(num_frames)
    if isinstance(gen, list):
        assert len(gen) == batch
        k = torch.stack([torch.randint(steps, (n,), generator=g) for g in gen])
    else:
        k = torch.randint(steps, (batch, n), generator=gen)
    if first_chunk_given(cfg):
        k[:, 0] = steps
    lengths = torch.tensor([cfg.chunk_len(i) for i in range(n)])
    return k.repeat_interleave(lengths, dim=1)


class ODEInitObjective(Objective):
    networks = ("generator",)

    def __init__(
        self,
        network: torch.nn.Module,
        *,
        cfg: ODEInitConfig,
        sigmas: torch.Tensor,
        embed_dim: int,
        height: int,
        width: int,
        seed: int,
        device: torch.device,
        backend: str = "auto",
    ):
        self.network, self.cfg, self.embed_dim = network, cfg, embed_dim
        self.sigmas = sigmas.float()  # [K + 1], entry K = 0 (clean)
        assert float(self.sigmas[-1]) == 0.0
        self.steps = len(sigmas) - 1
        self.height, self.width, self.device, self.backend = height, width, device, backend
        self.seed = seed
        # one draw per step, the same on every rank: the batch's sink / window configuration
        self.gen = torch.Generator().manual_seed(seed)

    def prepare_batch(self, batch: dict) -> dict:
        return {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def loss(self, name: str, batch: dict, *, step: int):
        from trackstream.models.conditioner import encode_motion

        traj = batch["trajectory"].float()  # [B, K+1, C, F, h, w]
        B, K1, C, F, h, w = traj.shape
        assert K1 == self.steps + 1, f"pairs hold {K1 - 1} steps, the objective {self.steps}"
        causal = sample_causal_config(self.cfg.causal, self.cfg.sink_choices, self.cfg.window_choices, self.gen)
        # per-sample steps keyed by (step, global sample id): a global batch draws the same whatever
        # the number of processes it is split over
        gens = (
            [
                torch.Generator().manual_seed(derive_seed(self.seed, "chunk-steps", step, int(g)) % 2**62)
                for g in batch["gid"].tolist()
            ]
            if "gid" in batch
            else self.gen
        )
        k = per_chunk_indices(causal, B, F, self.steps, gens).to(traj.device)  # [B, F]
        gather = k[:, None, None, :, None, None].expand(B, 1, C, F, h, w)
        x = traj.gather(1, gather).squeeze(1)  # [B, C, F, h, w]: each frame at its chunk's level
        if first_chunk_given(causal):
            x[:, :, :1] = batch["image_latent"].float()  # chunk 0: the clean first-frame latent (the sink)
        sigma = self.sigmas.to(traj.device)[k]  # [B, F]
        motion = encode_motion(
            batch["tracks"],
            batch["visibility"],
            batch["track_ids"],
            embed_dim=self.embed_dim,
            height=self.height,
            width=self.width,
            latent_height=h,
            splat=unwrap(self.network).track_splat,
            convention=unwrap(self.network).track_convention,
        )
        dit = unwrap(self.network).dit
        attn = BlockCausalAttention(
            causal,
            (F, h // dit.patch_size[1], w // dit.patch_size[2]),
            dit.head_dim,
            device=traj.device,
            backend=self.backend,
        )
        v = self.network(
            x,
            sigma_to_t(sigma),
            text=batch["text_emb"],
            text_lengths=batch["text_len"],
            image=batch.get("image"),
            motion=motion,
            image_features=batch.get("image_features"),
            attention=attn,
        )
        x0 = x0_from_velocity(x, v.float(), sigma)
        err = (x0 - traj[:, -1]).square().mean(dim=(1, 3, 4))  # [B, F]
        noisy = sigma > 0
        loss = err[noisy].mean()
        return loss, {
            "ode/mse": loss.detach(),
            "ode/sink": torch.tensor(float(causal.sink_chunks)),
            "ode/window": torch.tensor(float(causal.window_chunks or 0)),
        }

    def state_dict(self) -> dict:
        return {"gen": generator_state(self.gen)}

    def load_state_dict(self, state: dict) -> None:
        load_generator_state(self.gen, state["gen"])
