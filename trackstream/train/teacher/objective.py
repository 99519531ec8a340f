"""The motion-conditioned teacher: rectified flow matching (MotionStream §3.1, eq. A1-A2).

``FlowMatchingObjective`` is the teacher's loss (the frozen encoders that turn raw samples into the
network's inputs are ``models.conditioner.Conditioner``):

  sigma ~ shift(U(0, 1)) (eq. A1's timestep shift), x_sigma = (1 - sigma) x0 + sigma eps,
  loss = w(sigma) * || v_theta(x_sigma, 1000 sigma, c_t, c_m, image) - (eps - x0) ||^2 (eq. A2),

with first-frame (I2V) conditioning always on (optionally also as a clean latent frame 0 with
timestep 0, ``clean_first_frame``), and INDEPENDENT dropout of the text (-> the
empty prompt's encoding) and of the tracks (-> the empty motion, zero track channels) so that
v(c_t, c_m), v(0, c_m), v(c_t, 0) - the three terms of the joint guidance (eq. 2) - and
v(0, 0) are all trained. ``mid_frame_mask_prob`` > 0 switches on the stochastic mid-frame
masking of the fine-tune stage (MotionStream: 0.2 after a first stage without it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from trackstream.diffusion.samplers import mix_text
from trackstream.diffusion.schedule import (
    WEIGHTINGS,
    add_noise,
    first_frame_sigmas,
    loss_weight,
    sample_training_sigmas,
    sigma_to_t,
    velocity_target,
    x0_from_velocity,
)
from trackstream.models.conditioner import Conditioner, encode_motion
from trackstream.models.tracks import DEFAULT_ID_RANGE, drop_region, mask_mid_frames, sample_track_ids
from trackstream.trainer.correspondence import (
    CORRESPONDENCE_SOURCES,
    CorrespondenceProbe,
    correspondence_loss,
    correspondence_targets,
)
from trackstream.trainer.objective import Objective, generator_state, load_generator_state

__all__ = ["TeacherConfig", "FlowMatchingObjective", "decoded_frame_loss"]


@dataclass
class TeacherConfig:
    name: str = "teacher"
    weighting: str = "bell"  # diffusion.schedule.WEIGHTINGS
    sigma_min: float = 0.0
    p_drop_text: float = 0.1
    p_drop_tracks: float = 0.1
    mid_frame_mask_prob: float = 0.0  # 0.2 in MotionStream's fine-tune stage
    # region dropout (models.tracks.drop_region): a box of the frame left without tracks, so the model
    # keeps unconditioned content coherent (what DragStream's latent drags and pinned backgrounds need)
    region_drop_prob: float = 0.0
    region_drop_size: tuple = (0.3, 0.6)
    track_id_range: int = DEFAULT_ID_RANGE
    # Latent frame 0 given clean (sigma 0, per-frame timesteps, no loss on it) on top of the I2V
    # channels, as Wan2.2-TI2V and causal students do: the first frame is then exact in every
    # sample, and the streaming student's first chunk is the image itself.
    clean_first_frame: bool = False
    # Auxiliary track-correspondence loss on one attention head (trackstream/trainer/correspondence.py): a
    # training aid for tiny from-scratch teachers, not part of MotionStream; 0 disables it.
    correspondence_weight: float = 0.0
    correspondence_layer: int = 0
    correspondence_head: int = 0
    # where the supervised head copies from: "first" (frame 0's token of each track) or "previous" (its
    # token in the previous latent frame: content carried from frame to frame)
    correspondence_source: str = "first"
    # A loss on the decoded frames of the clean estimate x0 = x_sigma - sigma v (through the frozen codec):
    # the frames and their frame-to-frame differences against the codec's decoding of the true latents,
    # weighted by (1 - sigma). It sees the motion inside each latent frame's group of pixel frames, a
    # small share of a latent's variance that the latent MSE barely weighs; 0 disables it.
    decoded_loss_weight: float = 0.0
    # With this probability a sample's first latent frames after frame 0 are given clean (timestep 0, no loss)
    # for a whole number of the student's chunks (``clean_prefix_chunk`` latent frames each, at least one chunk
    # left to denoise): the context a streaming student's later chunks see, clean chunks before a noisy one.
    # A teacher trained only with every frame at one noise level has never seen it, and its weights, copied
    # into the causal student, darken its second chunk. Needs clean_first_frame; 0 disables it.
    clean_prefix_prob: float = 0.0
    clean_prefix_chunk: int = 3  # latent frames per chunk (the student's CausalConfig.chunk_size, c3)

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"stage.weighting={self.weighting!r}; choose one of {WEIGHTINGS}")
        for name in ("p_drop_text", "p_drop_tracks", "mid_frame_mask_prob", "region_drop_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"stage.{name}={getattr(self, name)} must be in [0, 1]")
        if not 0.0 <= self.sigma_min < 1.0:
            raise ValueError(f"stage.sigma_min={self.sigma_min} must be in [0, 1)")
        if not 0.0 <= self.clean_prefix_prob <= 1.0 or self.clean_prefix_chunk < 1:
            raise ValueError(
                f"stage.clean_prefix_prob={self.clean_prefix_prob} must be in [0, 1] and "
                f"stage.clean_prefix_chunk={self.clean_prefix_chunk} >= 1"
            )
        if self.clean_prefix_prob > 0 and not self.clean_first_frame:
            raise ValueError("stage.clean_prefix_prob > 0 needs stage.clean_first_frame=true (the prefix extends it)")
        if self.decoded_loss_weight < 0:
            raise ValueError(f"stage.decoded_loss_weight={self.decoded_loss_weight} must be >= 0")
        if self.correspondence_weight < 0 or self.correspondence_layer < 0 or self.correspondence_head < 0:
            raise ValueError("stage.correspondence_weight/_layer/_head must be >= 0")
        if self.correspondence_source not in CORRESPONDENCE_SOURCES:
            raise ValueError(
                f"stage.correspondence_source={self.correspondence_source!r}; choose one of {CORRESPONDENCE_SOURCES}"
            )


def clean_prefix(sigma: torch.Tensor, *, p: float, chunk: int, generator: torch.Generator) -> torch.Tensor:
    """Per-frame sigmas [B, F] (frame 0 clean) -> the same with, for a share ``p`` of the samples, the first
    k * ``chunk`` latent frames after frame 0 clean too (k uniform in 1 .. the chunks that leave one to
    denoise); samples with no room for a prefix are left as they are."""
    B, F = sigma.shape
    room = (F - 1) // chunk - 1  # whole chunks that can be clean with one left noisy
    if room < 1:
        return sigma
    on = torch.rand(B, generator=generator) < p
    k = torch.randint(1, room + 1, (B,), generator=generator)
    frames = torch.arange(F)[None]  # [1, F]
    clean = on[:, None] & (frames >= 1) & (frames <= k[:, None] * chunk)
    return torch.where(clean.to(sigma.device), torch.zeros_like(sigma), sigma)


def decoded_frame_loss(
    codec: nn.Module, x: torch.Tensor, v: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """Per-sample MSE [B] of the decoded clean estimate against the decoded true latents, on the frames and
    on their frame-to-frame differences (the motion), frame 0 excluded (it is given).

    x, v, x0: [B, C, F, h, w] latents (noisy input, predicted velocity, true clean latents); sigma [B] or
    [B, F]. The codec is frozen; the gradient flows through its decoder into the velocity."""
    x0_hat = x0_from_velocity(x, v, sigma)
    frames_hat = codec.decode(x0_hat)  # [B, 3, T, H, W]
    with torch.no_grad():
        frames = codec.decode(x0)
    err = (frames_hat - frames)[:, :, 1:]
    motion_err = frames_hat.diff(dim=2) - frames.diff(dim=2)  # [B, 3, T - 1, H, W]
    dims = tuple(range(1, err.ndim))
    return err.square().mean(dim=dims) + motion_err.square().mean(dim=dims)


class FlowMatchingObjective(Objective):
    networks = ("dit",)

    def __init__(
        self,
        network: nn.Module,
        *,
        cfg: TeacherConfig,
        shift: float,
        null_text: torch.Tensor,
        null_lengths: torch.Tensor,
        embed_dim: int,
        height: int,
        width: int,
        seed: int,
        device: torch.device,
        conditioner: Conditioner | None = None,
        splat: str = "nearest",
        convention: str = "trackstream",
    ):
        """``null_text`` [1, L0, E] / ``null_lengths`` [1]: the empty prompt's encoding (text dropout).
        ``conditioner``: frozen encoders for batches that still hold raw videos / captions."""
        self.network, self.cfg, self.shift, self.conditioner = network, cfg, shift, conditioner
        self.null_text, self.null_lengths = null_text.to(device), null_lengths.to(device)
        self.embed_dim, self.height, self.width, self.device = embed_dim, height, width, device
        self.splat, self.convention = splat, convention  # the network's track_splat and track_convention
        self.gen = torch.Generator().manual_seed(seed)  # sigmas, dropout, track IDs, masking
        self.noise_gen = torch.Generator(device=device).manual_seed(seed + 1)

    def prepare_batch(self, batch: dict) -> dict:
        if self.conditioner is not None:
            batch = self.conditioner.encode(batch)
        else:
            batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        batch.pop("video", None)  # the latents replace it; keeps device memory flat
        return batch

    def loss(self, name: str, batch: dict, *, step: int):
        x0 = batch["latents"]  # [B, 16, F, h, w]
        B = x0.shape[0]
        g, c = self.gen, self.cfg
        sigma = sample_training_sigmas(B, shift=self.shift, generator=g, sigma_min=c.sigma_min)
        drop_text = torch.rand(B, generator=g) < c.p_drop_text
        drop_tracks = torch.rand(B, generator=g) < c.p_drop_tracks
        tracks, vis = batch["tracks"], batch["visibility"]  # [B, T, N, 2], [B, T, N]
        ids = sample_track_ids(B, tracks.shape[2], id_range=c.track_id_range, generator=g)
        if c.mid_frame_mask_prob > 0:
            _, vis = mask_mid_frames(tracks, vis.cpu(), p=c.mid_frame_mask_prob, generator=g)
            vis = vis.to(self.device)
        if c.region_drop_prob > 0:
            vis = drop_region(
                tracks,
                vis,
                p=c.region_drop_prob,
                size=tuple(c.region_drop_size),
                height=self.height,
                width=self.width,
                generator=g,
            )
        vis = vis & ~drop_tracks.to(self.device)[:, None, None]
        motion = encode_motion(
            tracks,
            vis,
            ids,
            embed_dim=self.embed_dim,
            height=self.height,
            width=self.width,
            latent_height=x0.shape[3],
            splat=self.splat,
            convention=self.convention,
        )
        text, text_len = mix_text(batch["text_emb"], batch["text_len"], self.null_text, self.null_lengths, drop_text)
        noise = torch.randn(x0.shape, generator=self.noise_gen, device=self.device, dtype=torch.float32)
        sigma = sigma.to(self.device)
        sig_in = first_frame_sigmas(sigma, x0.shape[2]) if c.clean_first_frame else sigma  # [B] or [B, F]
        if c.clean_prefix_prob > 0:
            sig_in = clean_prefix(sig_in, p=c.clean_prefix_prob, chunk=c.clean_prefix_chunk, generator=g)
        probe, extra_kw = None, {}
        if c.correspondence_weight > 0:
            probe = self._probe(x0)
            extra_kw["attention"] = probe
        x_in = add_noise(x0, noise, sig_in)
        v = self.network(
            x_in,
            sigma_to_t(sig_in),
            text=text,
            text_lengths=text_len,
            image=batch.get("image"),
            motion=motion,
            image_features=batch.get("image_features"),
            **extra_kw,
        )
        err = (v.float() - velocity_target(x0, noise)).square()  # [B, C, F, h, w]
        if c.clean_prefix_prob > 0:
            # frames given clean (frame 0, a clean prefix) are not predicted: the mean over the noisy ones
            noisy = (sig_in > 0).to(err.dtype)[:, None, :, None, None]  # [B, 1, F, 1, 1]
            per_sample = (err * noisy).sum(dim=(1, 2, 3, 4)) / (noisy.sum(dim=(1, 2, 3, 4)) * err[0, :, 0].numel())
        else:
            if c.clean_first_frame:
                err = err[:, :, 1:]  # frame 0 is given, not predicted
            per_sample = err.mean(dim=tuple(range(1, err.ndim)))
        weight = loss_weight(sigma, weighting=c.weighting, shift=self.shift)
        loss = (weight * per_sample).mean()
        metrics = {"fm/mse": per_sample.mean().detach()}
        if c.decoded_loss_weight > 0:
            decoded = decoded_frame_loss(self._codec(), x_in, v.float(), x0, sig_in)  # [B]
            loss = loss + c.decoded_loss_weight * ((1 - sigma) * decoded).mean()
            metrics["fm/decoded"] = decoded.mean().detach()
        if probe is not None:
            src = c.correspondence_source
            target = correspondence_targets(tracks, vis, grid=probe.grid, token_px=probe.token_px, source=src)
            aux = correspondence_loss(probe.logits, target, source=src)
            loss = loss + c.correspondence_weight * aux
            metrics["fm/correspondence"] = aux.detach()
        return loss, metrics

    def _codec(self) -> nn.Module:
        if self.conditioner is None:
            raise ValueError(
                "stage.decoded_loss_weight > 0 needs the frozen codec: build the objective with a conditioner"
            )
        return self.conditioner.codec

    def _probe(self, x0: torch.Tensor) -> CorrespondenceProbe:
        from trackstream.trainer.parallel import unwrap

        dit = unwrap(self.network).dit
        pt, ph, pw = dit.patch_size
        grid = (x0.shape[2] // pt, x0.shape[3] // ph, x0.shape[4] // pw)
        if self.cfg.correspondence_layer >= dit.num_layers or self.cfg.correspondence_head >= dit.num_heads:
            raise ValueError(
                f"stage.correspondence_layer/_head must index the DiT's {dit.num_layers} layers / {dit.num_heads} heads"
            )
        probe = CorrespondenceProbe(
            grid, dit.head_dim, layer=self.cfg.correspondence_layer, head=self.cfg.correspondence_head, device=x0.device
        )
        factor = self.height // x0.shape[3]  # the codec's spatial factor
        probe.grid, probe.token_px = grid, (factor * ph, factor * pw)
        return probe

    def state_dict(self) -> dict:
        return {"gen": generator_state(self.gen), "noise_gen": generator_state(self.noise_gen)}

    def load_state_dict(self, state: dict) -> None:
        load_generator_state(self.gen, state["gen"])
        load_generator_state(self.noise_gen, state["noise_gen"])
