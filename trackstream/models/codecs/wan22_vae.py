"""Wan 2.2 VAE (``Wan2.2_VAE.pth`` of Wan2.2-TI2V-5B) behind ``VideoCodec``: 48 latent channels, 16x16x4.

The same ``AutoencoderKLWan`` as the 2.1 VAE with ``is_residual=True``: the pixels are patchified
2x2 into 12 channels before the encoder (and back after the decoder), every level is one residual
down/up block whose parameter-free shortcut averages (``AvgDown3D``) or duplicates (``DupUp3D``)
the block input, and the decoder is wider (``decoder_base_dim`` 256 vs 160). Sources: official
Wan-Video/Wan2.2 wan/modules/vae2_2.py, diffusers scripts/convert_wan_to_diffusers.py
(``vae22_diffusers_config``, ``convert_vae_22``), autoencoder_kl_wan.py.

Official names nest one level deeper than 2.1's; the rest (conv1/conv2, middle, head, residual
internals) is named as in 2.1 (see wan_vae.py):

    official                                           diffusers
    encoder.downsamples.i.downsamples.j  (j < nrb)     encoder.down_blocks.i.resnets.j
    encoder.downsamples.i.downsamples.nrb              encoder.down_blocks.i.downsampler
    decoder.upsamples.i.upsamples.j      (j <= nrb)    decoder.up_blocks.i.resnets.j
    decoder.upsamples.i.upsamples.nrb+1                decoder.up_blocks.i.upsampler
    ...avg_shortcut                                    (no parameters in either)

with nrb = num_res_blocks (the decoder has nrb + 1 residual blocks per level, as in 2.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch
from diffusers import AutoencoderKLWan

from .base import load_state_dict_strict, read_state_dict_file
from .wan_vae import (
    RES_DIFFUSERS_TO_OFFICIAL,
    RES_OFFICIAL_TO_DIFFUSERS,
    WanVAE,
    check_vae_config,
    diffusers_to_official_key,
    latent_statistics,
    official_to_diffusers_key,
    rename_inner,
)

__all__ = [
    "WAN22_LATENTS_MEAN",
    "WAN22_LATENTS_STD",
    "Wan22VAEConfig",
    "Wan22VAE",
    "wan22_vae_config_from_state_dict",
    "official22_to_diffusers_key",
    "diffusers_to_official22_key",
    "convert_official22_to_diffusers",
    "convert_diffusers_to_official22",
]

# Per-channel statistics of Wan 2.2 VAE latents (mu): official Wan2_2_VAE (vae2_2.py), identical to the
# latents_mean / latents_std of Wan-AI/Wan2.2-TI2V-5B-Diffusers vae/config.json.
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip
PATCH_SIZE = 2  # the official code patchifies by 2 unconditionally (encoder conv1 takes 3 * 2 * 2 = 12 channels)


@dataclass(frozen=True)
class Wan22VAEConfig:
    """Architecture of the Wan 2.2 VAE; defaults are the released ``Wan2.2_VAE.pth``.

    latents_mean/std: None means the Wan 2.2 statistics when z_dim == 48, else zeros/ones
    (small random test configs have no meaningful statistics).
    """

    base_dim: int = 160
    decoder_base_dim: int = 256
    z_dim: int = 48
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_vae_config(self, "16x spatial with the 2x2 patchify, 4x temporal")

    def diffusers_kwargs(self) -> dict:
        """``AutoencoderKLWan`` arguments: the Wan2.2-TI2V-5B-Diffusers vae/config.json at the default sizes."""
        mean, std = latent_statistics(self, WAN22_LATENTS_MEAN, WAN22_LATENTS_STD)
        return dict(
            base_dim=self.base_dim,
            decoder_base_dim=self.decoder_base_dim,
            z_dim=self.z_dim,
            dim_mult=list(self.dim_mult),
            num_res_blocks=self.num_res_blocks,
            attn_scales=[],
            temperal_downsample=list(self.temperal_downsample),
            is_residual=True,
            in_channels=3 * PATCH_SIZE * PATCH_SIZE,
            out_channels=3 * PATCH_SIZE * PATCH_SIZE,
            patch_size=PATCH_SIZE,
            scale_factor_temporal=4,
            scale_factor_spatial=PATCH_SIZE * 2 ** (len(self.dim_mult) - 1),
            latents_mean=list(mean),
            latents_std=list(std),
        )


# ---------------------------------------------------------------------- key conversion

_RESAMPLE = ("resample.", "time_conv.")  # the down/upsampler's parameters; anything else is a residual block


def official22_to_diffusers_key(key: str) -> str:
    """One official ``Wan2.2_VAE.pth`` key -> its ``AutoencoderKLWan`` name (unknown keys pass through).

    The resample sits at the end of a level's list, so its own names tell it apart: no block count needed.
    """
    if m := re.fullmatch(r"(encoder\.downsamples|decoder\.upsamples)\.(\d+)\.(?:down|up)samples\.(\d+)\.(.+)", key):
        side, level, j, inner = m.groups()
        prefix = f"encoder.down_blocks.{level}" if side.startswith("encoder") else f"decoder.up_blocks.{level}"
        if inner.startswith(_RESAMPLE):
            return f"{prefix}.{'downsampler' if side.startswith('encoder') else 'upsampler'}.{inner}"
        return f"{prefix}.resnets.{j}.{rename_inner(inner, RES_OFFICIAL_TO_DIFFUSERS)}"
    return official_to_diffusers_key(key)  # conv1/conv2, middle, head: named as in 2.1


def diffusers_to_official22_key(key: str, *, num_res_blocks: int = 2) -> str:
    """Inverse of :func:`official22_to_diffusers_key`."""
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(?:resnets\.(\d+)|downsampler)\.(.+)", key):
        level, j, inner = m.groups()
        if j is None:  # the downsampler follows the encoder's num_res_blocks residual blocks
            return f"encoder.downsamples.{level}.downsamples.{num_res_blocks}.{inner}"
        return f"encoder.downsamples.{level}.downsamples.{j}.{rename_inner(inner, RES_DIFFUSERS_TO_OFFICIAL)}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.(?:resnets\.(\d+)|upsampler)\.(.+)", key):
        level, j, inner = m.groups()
        if j is None:  # the upsampler follows the decoder's num_res_blocks + 1 residual blocks
            return f"decoder.upsamples.{level}.upsamples.{num_res_blocks + 1}.{inner}"
        return f"decoder.upsamples.{level}.upsamples.{j}.{rename_inner(inner, RES_DIFFUSERS_TO_OFFICIAL)}"
    return diffusers_to_official_key(key)


def convert_official22_to_diffusers(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Rename an official ``Wan2.2_VAE.pth`` state dict for ``AutoencoderKLWan`` (tensors untouched)."""
    out = {official22_to_diffusers_key(k): v for k, v in state_dict.items()}
    assert len(out) == len(state_dict), "two official keys renamed to the same diffusers key"
    return out


def convert_diffusers_to_official22(state_dict: Mapping[str, torch.Tensor], *, num_res_blocks: int = 2) -> dict:
    """Rename an ``AutoencoderKLWan`` (2.2) state dict to the official layout (writes Wan2.2_VAE.pth files)."""
    out = {diffusers_to_official22_key(k, num_res_blocks=num_res_blocks): v for k, v in state_dict.items()}
    assert len(out) == len(state_dict), "two diffusers keys renamed to the same official key"
    return out


def wan22_vae_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> Wan22VAEConfig:
    """The sizes of an official-layout 2.2 VAE state dict, so a shrunk file loads like the real one:
    encoder width (first conv), decoder width (last conv's input), latent channels (the 1x1 conv after
    sampling) and residual blocks per level (those of the encoder's last level, which has no resample).
    The level structure is the released one (a different one fails the strict load)."""
    needed = ("encoder.conv1.weight", "decoder.head.2.weight", "conv2.weight")
    missing = [k for k in needed if k not in sd]
    if missing:
        raise ValueError(
            f"not a Wan 2.2 VAE state dict in the official layout: keys {missing} are missing "
            f"(found e.g. {sorted(sd)[:5]}); point codec.checkpoint at Wan2.2_VAE.pth or a diffusers vae folder"
        )
    last = len(Wan22VAEConfig().dim_mult) - 1
    blocks = {m[1] for k in sd if (m := re.match(rf"encoder\.downsamples\.{last}\.downsamples\.(\d+)\.residual\.", k))}
    return Wan22VAEConfig(
        base_dim=int(sd["encoder.conv1.weight"].shape[0]),
        decoder_base_dim=int(sd["decoder.head.2.weight"].shape[1]),
        z_dim=int(sd["conv2.weight"].shape[0]),
        num_res_blocks=len(blocks) or Wan22VAEConfig.num_res_blocks,
    )


# ---------------------------------------------------------------------- the codec


class Wan22VAE(WanVAE):
    """Wan 2.2 VAE: video [B, 3, 1+4k, H, W] in [-1, 1] <-> normalised latents [B, 48, 1+k, H/16, W/16].

    Encode, decode, normalisation and the streaming decode state are WanVAE's (the factors and the
    pixel patchify come from the diffusers config); only the official key layout differs.
    """

    def __init__(self, vae: AutoencoderKLWan):
        cfg = vae.config
        if not cfg.get("is_residual") or (cfg.get("patch_size") or 1) != PATCH_SIZE:
            raise ValueError(
                f"AutoencoderKLWan with is_residual={cfg.get('is_residual')}, patch_size={cfg.get('patch_size')} is "
                "not a Wan 2.2 VAE (needs is_residual=true, patch_size=2); load a Wan 2.1 VAE with codec.name=wan2.1-vae"
            )
        super().__init__(vae)

    @classmethod
    def from_config(cls, config: Wan22VAEConfig | None = None) -> "Wan22VAE":
        """Randomly initialised (tests, benchmarks of the architecture)."""
        return cls(AutoencoderKLWan(**(config or Wan22VAEConfig()).diffusers_kwargs()))

    @classmethod
    def from_official_checkpoint(cls, path: str, config: Wan22VAEConfig | None = None) -> "Wan22VAE":
        """Load the official ``Wan2.2_VAE.pth`` (or a file in its key layout) strictly. Without ``config``
        the sizes are read off the file (``wan22_vae_config_from_state_dict``)."""
        raw = read_state_dict_file(path)
        config = config or wan22_vae_config_from_state_dict(raw)
        state = convert_official22_to_diffusers(raw)
        # Built on meta and filled with assign=True: no 705M-parameter random init to throw away.
        with torch.device("meta"):
            vae = AutoencoderKLWan(**config.diffusers_kwargs())
        load_state_dict_strict(vae, state, source=str(path), assign=True)
        return cls(vae)

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under official ``Wan2.2_VAE.pth`` names (``torch.save`` it to write such a file)."""
        return convert_diffusers_to_official22(self.vae.state_dict(), num_res_blocks=self.num_res_blocks)
