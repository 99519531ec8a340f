"""Video codecs (VAEs) behind one interface, ``VideoCodec`` (see ``base.py`` for the contract).

- ``wan2.1-vae``: the Wan 2.1 VAE (diffusers ``AutoencoderKLWan``), official ``Wan2.1_VAE.pth``
  or a diffusers folder, latent mean/std applied inside.
- ``taehv-wan2.1``: TAEHV tiny VAE in the Wan 2.1 latent space (``taew2_1.pth``/``.safetensors``).
- ``tiny-ae``: a small trainable causal autoencoder for the embedded synthetic world.

All map [B, 3, 1+4k, H, W] pixels in [-1, 1] to normalised latents [B, C, 1+k, H/8, W/8].
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from models.codec_names import CODEC_NAMES
from models.release_folder import find_release, is_release_folder

from .base import VideoCodec, load_state_dict_strict, read_state_dict_file
from .taehv import TAEHV, TAEHVConfig, TAEHVDecodeState
from .tiny_ae import TinyAE, TinyAEConfig, TinyAEDecodeState, reconstruction_loss
from .wan_vae import (
    WAN21_LATENTS_MEAN,
    WAN21_LATENTS_STD,
    WanDecodeState,
    WanVAE,
    WanVAEConfig,
    convert_diffusers_to_official,
    convert_official_to_diffusers,
)

__all__ = [
    "CODEC_NAMES",
    "build_codec",
    "VideoCodec",
    "WanVAE",
    "WanVAEConfig",
    "WanDecodeState",
    "WAN21_LATENTS_MEAN",
    "WAN21_LATENTS_STD",
    "convert_official_to_diffusers",
    "convert_diffusers_to_official",
    "TAEHV",
    "TAEHVConfig",
    "TAEHVDecodeState",
    "TinyAE",
    "TinyAEConfig",
    "TinyAEDecodeState",
    "reconstruction_loss",
    "load_state_dict_strict",
    "read_state_dict_file",
]



def _make_config(cls: type, name: str, options: dict[str, Any]):
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"codec {name!r}: unknown option(s) {unknown}; valid options are {sorted(fields)}")
    # Hydra hands over lists (ListConfig); the frozen configs hold tuples.
    return cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in options.items()})


def build_codec(name: str, *, checkpoint: str | None = None, **options: Any) -> VideoCodec:
    """Build a codec by name.

    checkpoint: None for random init (tests, architecture benchmarks, a tiny AE about to be
    trained); a file (official ``Wan2.1_VAE.pth``, ``taew2_1.pth``/``.safetensors``, a tiny-AE
    checkpoint); or, for ``wan2.1-vae`` only, a diffusers folder (its config.json is used) or a Wan
    release folder (its ``Wan2.1_VAE.pth``).
    options: fields of the codec's config dataclass (``WanVAEConfig``, ``TAEHVConfig``, ``TinyAEConfig``).
    """
    if checkpoint is not None and not os.path.exists(checkpoint):
        raise ValueError(f"codec {name!r}: checkpoint path {checkpoint!r} does not exist")
    if name == "wan2.1-vae":
        if checkpoint is not None and is_release_folder(Path(checkpoint)):
            # a Wan release folder: its Wan2.1_VAE.pth (found by name, else by keys)
            checkpoint = str(find_release(checkpoint).require("vae", field_name="codec.checkpoint").vae)
        if checkpoint is not None and os.path.isdir(checkpoint):
            if options:
                raise ValueError(
                    f"codec 'wan2.1-vae': options {sorted(options)} cannot be combined with the diffusers folder "
                    f"{checkpoint!r}, whose config.json defines the architecture; drop them"
                )
            return WanVAE.from_pretrained(checkpoint)
        config = _make_config(WanVAEConfig, name, options)
        if checkpoint is None:
            return WanVAE.from_config(config)
        return WanVAE.from_official_checkpoint(checkpoint, config if options else None)  # None: widths from the file
    if name == "taehv-wan2.1":
        config = _make_config(TAEHVConfig, name, options)
        return TAEHV(config) if checkpoint is None else TAEHV.from_checkpoint(checkpoint, config)
    if name == "tiny-ae":
        config = _make_config(TinyAEConfig, name, options) if options else None
        if checkpoint is None:
            return TinyAE(config)
        return TinyAE.from_checkpoint(checkpoint, config)
    raise ValueError(f"unknown codec name {name!r}; choose one of {list(CODEC_NAMES)}")
