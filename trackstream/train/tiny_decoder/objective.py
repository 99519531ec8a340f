"""The tiny decoder objective (MotionStream appendix A): a TAEHV decoder trained to decode the latents of a frozen
full codec (the Wan 2.1 / 2.2 VAE, or the embedded world's tiny-ae) back to the frames they were encoded from.

Per step: a random space-time crop of each clip (``stage.crop`` pixels, ``stage.num_frames`` frames; the paper
trains at 144x144x21) is encoded by the frozen full codec (``prepare_batch``, no gradient); the decoder's loss is
``reconstruction_weight`` x L1 (or MSE) + ``lpips.weight`` x LPIPS over every frame + the adversarial term of a
PatchGAN discriminator scoring every frame, from ``gan.start_step`` on, weighted by ``gan.weight`` (times VQGAN's
adaptive weight with ``gan.adaptive``: the ratio of the reconstruction's and the adversarial gradient norms at
the decoder's last layer, so the adversarial term neither vanishes nor dominates). The discriminator is a second
trained network with its own optimizer, like the DMD critic: ``updates`` schedules the decoder, then (once the
adversarial term is on) the discriminator, which scores the real crop against the decoder's reconstruction of
the same micro-batch (detached), with the hinge or the non-saturating loss.

The crop draws come from a generator the objective owns and saves (``state_dict``): resume is exact.
Legend: B clips, T frames, N = B x T images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from trackstream.trainer.objective import Objective, generator_state, load_generator_state
from trackstream.trainer.optim import OptimConfig

__all__ = [
    "LPIPSLossConfig",
    "GANConfig",
    "TinyDecoderConfig",
    "DecoderModel",
    "TinyDecoderObjective",
    "discriminator_loss",
    "generator_loss",
    "frames_of",
    "psnr",
]

GAN_LOSSES = ("hinge", "non_saturating")
RECONSTRUCTIONS = ("l1", "mse")


@dataclass
class LPIPSLossConfig:
    """LPIPS v0.1 (``eval.lpips``) between decoded and true frames; its weights are local files (nothing is
    downloaded): ``backbone`` torchvision's alexnet / vgg16 ImageNet file, ``heads`` the lpips package's v0.1 file.
    ``weight`` 0, the default (no weight files at hand, e.g. the embedded world), trains without it; the real
    recipes set 1.0 and the two files."""

    weight: float = 0.0
    net: str = "vgg"
    backbone: Optional[str] = None
    heads: Optional[str] = None

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"stage.lpips.weight={self.weight} must be >= 0 (0 trains without LPIPS)")
        if self.net not in ("alex", "vgg"):
            raise ValueError(f"stage.lpips.net={self.net!r}: choose alex or vgg")
        if self.weight > 0 and not (self.backbone and self.heads):
            raise ValueError(
                f"stage.lpips.weight={self.weight} needs stage.lpips.backbone and stage.lpips.heads (the weight "
                "files, e.g. vgg16-397923af.pth and the lpips package's v0.1 vgg.pth); set stage.lpips.weight=0 "
                "to train without LPIPS"
            )


@dataclass
class GANConfig:
    """The PatchGAN discriminator (``models.patch_discriminator``) and the adversarial term."""

    weight: float = 0.5  # 0: no discriminator is trained
    loss: str = "hinge"  # hinge | non_saturating
    adaptive: bool = True  # x VQGAN's adaptive weight (gradient-norm ratio at the decoder's last layer)
    max_adaptive: float = 1.0e4  # the adaptive factor's cap (VQGAN's)
    start_step: int = 0  # loop step from which the discriminator trains and the adversarial term counts
    width: int = 64
    layers: int = 3
    norm: str = "group"  # group | batch | none
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3.0e-4, betas=[0.5, 0.9]))

    def __post_init__(self) -> None:
        if isinstance(self.optim, dict):
            self.optim = OptimConfig(**self.optim)
        if self.weight < 0 or self.start_step < 0:
            raise ValueError(f"stage.gan.weight={self.weight} and stage.gan.start_step={self.start_step} must be >= 0")
        if self.loss not in GAN_LOSSES:
            raise ValueError(f"stage.gan.loss={self.loss!r}: choose one of {', '.join(GAN_LOSSES)}")
        if self.norm not in ("group", "batch", "none"):
            raise ValueError(f"stage.gan.norm={self.norm!r}: choose group, batch or none")


@dataclass
class TinyDecoderConfig:
    """``stage=tiny_decoder``: the full codec is the root's ``codec`` (frozen, its encoder makes the latents);
    the trained decoder is the TAEHV release ``decoder`` (its layout, ``options`` over its preset)."""

    name: str = "tiny_decoder"
    decoder: str = "taehv-wan2.1"  # taehv-wan2.1 | taehv-wan2.2: the TAEHV layout trained and saved
    # the official taew2_1 / taew2_2 file to start from (encoder kept as loaded); null: random init
    init: Optional[str] = None
    options: dict = field(default_factory=dict)  # TAEHVConfig fields (spatial_stages: [true, true, false] for 4x)
    crop: int = 144  # pixels (square crops, a multiple of the codec's spatial factor)
    num_frames: int = 21  # frames per crop, 1 + 4k
    reconstruction: str = "l1"  # l1 | mse
    reconstruction_weight: float = 1.0
    lpips: LPIPSLossConfig = field(default_factory=LPIPSLossConfig)
    gan: GANConfig = field(default_factory=GANConfig)
    decoder_optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3.0e-4))
    image_clips: int = 2  # held-out clips decoded into the reconstruction images (trainer.sample_every, the end)
    eval_clips: int = 8  # held-out clips of the final PSNR against the full codec's own decoder
    INPUT_PATHS: ClassVar[tuple] = ("init",)  # must exist before the run directory is made (train.app)

    def __post_init__(self) -> None:
        for name, cls in (("lpips", LPIPSLossConfig), ("gan", GANConfig), ("decoder_optim", OptimConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls(**getattr(self, name)))
        if self.decoder not in ("taehv-wan2.1", "taehv-wan2.2"):
            raise ValueError(f"stage.decoder={self.decoder!r}: choose taehv-wan2.1 or taehv-wan2.2 (TAEHV layouts)")
        if self.num_frames < 1 or (self.num_frames - 1) % 4:
            raise ValueError(f"stage.num_frames={self.num_frames} must be 1 + 4k (e.g. 21)")
        if self.reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"stage.reconstruction={self.reconstruction!r}: choose l1 or mse")
        if self.reconstruction_weight < 0 or self.image_clips < 0 or self.eval_clips < 0:
            raise ValueError("stage.reconstruction_weight, stage.image_clips and stage.eval_clips must be >= 0")
        need = 3 * 2**self.gan.layers  # the smallest side that leaves the PatchGAN one logit per image
        if self.gan.weight > 0 and self.crop < need:
            raise ValueError(
                f"stage.crop={self.crop} is below {need} px, the smallest side a {self.gan.layers}-layer PatchGAN "
                "scores: raise stage.crop or lower stage.gan.layers"
            )


class DecoderModel(nn.Module):
    """The TAEHV codec whose decoder trains; ``forward`` is its decode (unclamped, so gradients flow outside
    [-1, 1]) because DDP's hooks need the trained computation to be a forward. Its encoder stays frozen, as loaded."""

    def __init__(self, taehv: nn.Module):
        super().__init__()
        self.taehv = taehv  # not ``module``: trainer.parallel.unwrap takes a ``module`` attribute for a wrapper
        taehv.encoder.requires_grad_(False)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.taehv.decode(latents, clamp=False)

    def last_layer(self) -> torch.Tensor:
        """The weight the adaptive adversarial weight compares gradients at (the last conv to pixels)."""
        return self.taehv.decoder[-1].weight


def frames_of(video: torch.Tensor) -> torch.Tensor:
    """[B, 3, T, H, W] -> [N = B T, 3, H, W]: the 2D networks (LPIPS, the discriminator) score frames."""
    return video.permute(0, 2, 1, 3, 4).flatten(0, 1)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of videos in [-1, 1] (peak-to-peak 2), over the whole batch; ``pred`` is clamped first."""
    mse = (pred.detach().float().clamp(-1, 1) - target.float()).pow(2).mean()
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Hinge: mean relu(1 - D(real)) + mean relu(1 + D(fake)); non-saturating: -log s(D(real)) - log(1 - s(D(fake))).
    Halved, as taming-transformers does, so one discriminator step weighs like one decoder step."""
    if kind == "hinge":
        return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())
    return 0.5 * (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean())


def generator_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The decoder's adversarial term: -mean D(fake) (hinge) or -log s(D(fake)) (non-saturating)."""
    return -fake_logits.mean() if kind == "hinge" else F.softplus(-fake_logits).mean()


class TinyDecoderObjective(Objective):
    networks = ("decoder", "discriminator")
    primary = "decoder"

    def __init__(
        self,
        decoder: nn.Module,
        discriminator: nn.Module | None,
        full_codec: nn.Module,
        lpips: nn.Module | None,
        *,
        cfg: TinyDecoderConfig,
        device: torch.device,
        seed: int,
    ):
        """``decoder``: the (wrapped) ``DecoderModel``; ``discriminator``: the (wrapped) PatchGAN, None without the
        adversarial term; ``full_codec``: the frozen codec whose ``encode`` makes the latents; ``lpips``: the
        frozen LPIPS net, None when ``lpips.weight`` is 0."""
        from trackstream.trainer.parallel import unwrap

        if cfg.gan.weight > 0 and discriminator is None:
            raise ValueError("stage.gan.weight > 0 needs the discriminator network")
        self.decoder, self.discriminator, self.full, self.lpips = decoder, discriminator, full_codec, lpips
        self.raw_decoder = unwrap(decoder)
        self.raw_discriminator = unwrap(discriminator) if discriminator is not None else None
        self.cfg, self.device = cfg, device
        self.gen = torch.Generator().manual_seed(seed)  # crop positions
        if discriminator is None:
            self.networks = ("decoder",)

    def gan_on(self, step: int) -> bool:
        return self.cfg.gan.weight > 0 and step >= self.cfg.gan.start_step

    def updates(self, step: int) -> list[str]:
        # decoder first: the discriminator then scores the reconstruction the decoder's loss made (detached)
        return ["decoder", "discriminator"] if self.gan_on(step) else ["decoder"]

    def crop(self, video: torch.Tensor) -> torch.Tensor:
        """A random ``num_frames`` x ``crop`` x ``crop`` crop (one position per micro-batch) of [B, 3, T, H, W]."""
        _, _, T, H, W = video.shape
        c, t = self.cfg.crop, self.cfg.num_frames
        if c > min(H, W) or t > T:
            raise ValueError(
                f"stage crop {t}x{c}x{c} (stage.num_frames x stage.crop) does not fit clips of {T}x{H}x{W}"
            )
        g = self.gen
        t0 = int(torch.randint(0, T - t + 1, (), generator=g))
        y0 = int(torch.randint(0, H - c + 1, (), generator=g))
        x0 = int(torch.randint(0, W - c + 1, (), generator=g))
        return video[:, :, t0 : t0 + t, y0 : y0 + c, x0 : x0 + c]

    @torch.no_grad()
    def prepare_batch(self, batch: dict) -> dict:
        video = self.crop(batch["video"]).to(self.device, non_blocking=True).float()
        return {"video": video, "latents": self.full.encode(video).float()}

    def loss(self, name: str, batch: dict, *, step: int):
        if name == "decoder":
            return self.decoder_loss(batch, step=step)
        return self.discriminator_loss(batch)

    def decoder_loss(self, batch: dict, *, step: int):
        cfg, target = self.cfg, batch["video"]
        recon = self.decoder(batch["latents"]).float()  # [B, 3, T, H, W], unclamped
        diff = recon - target
        rec = diff.abs().mean() if cfg.reconstruction == "l1" else diff.pow(2).mean()
        nll = cfg.reconstruction_weight * rec
        extras = {"tiny_decoder/reconstruction": rec.detach(), "tiny_decoder/psnr": psnr(recon, target)}
        if self.lpips is not None:
            lp = self.lpips(frames_of(recon), frames_of(target)).mean()
            nll = nll + cfg.lpips.weight * lp
            extras["tiny_decoder/lpips"] = lp.detach()
        total = nll
        if self.gan_on(step):
            adv = generator_loss(self._score_frozen(frames_of(recon)), cfg.gan.loss)
            weight = cfg.gan.weight * (self._adaptive(nll, adv) if cfg.gan.adaptive else 1.0)
            total = total + weight * adv
            extras.update(
                {"tiny_decoder/adversarial": adv.detach(), "tiny_decoder/gan_weight": torch.as_tensor(weight)}
            )
        batch["fake"] = recon.detach()  # the discriminator's update of this step scores it
        return total, extras

    def _score_frozen(self, images: torch.Tensor) -> torch.Tensor:
        """The discriminator's logits with its parameters detached: the decoder's loss must leave no gradient
        in the discriminator (its update this step would add it), and the wrapped module is not called so a
        DDP forward is not left without its backward."""
        raw = self.raw_discriminator
        state = {k: v.detach() for k, v in [*raw.named_parameters(), *raw.named_buffers()]}
        return torch.func.functional_call(raw, state, (images,))

    def _adaptive(self, nll: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """VQGAN's adaptive weight ||grad nll|| / ||grad adv|| at the decoder's last layer, capped, no gradient."""
        last = self.raw_decoder.last_layer()
        g_nll = torch.autograd.grad(nll, last, retain_graph=True)[0]
        g_adv = torch.autograd.grad(adv, last, retain_graph=True)[0]
        return (g_nll.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, self.cfg.gan.max_adaptive).detach()

    def discriminator_loss(self, batch: dict):
        real = frames_of(batch["video"])
        fake = batch.get("fake")
        if fake is None:  # a discriminator update without the decoder's in the same step (not scheduled today)
            with torch.no_grad():
                fake = self.raw_decoder(batch["latents"]).float()
        # one forward over real and fake together: a DDP module is called once per backward
        logits = self.discriminator(torch.cat([real, frames_of(fake)]))
        real_logits, fake_logits = logits.float().chunk(2)
        loss = discriminator_loss(real_logits, fake_logits, self.cfg.gan.loss)
        return loss, {
            "tiny_decoder/d_real": real_logits.detach().mean(),
            "tiny_decoder/d_fake": fake_logits.detach().mean(),
        }

    def batch_size(self, batch: dict) -> int:
        return int(batch["video"].shape[0])

    def state_dict(self) -> dict:
        return {"gen": generator_state(self.gen)}

    def load_state_dict(self, state: dict) -> None:
        load_generator_state(self.gen, state["gen"])
