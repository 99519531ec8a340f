"""The codecs ``models.codecs.build_codec`` accepts and the facts a config check needs about each, in a
module of their own so that checking a config (trainer.codec.CodecConfig, train.config) does not import the
codecs (and diffusers through them). ``tests/test_codecs.py`` builds every codec and holds it to these facts.
A codec has one name everywhere: ``codec.name``, ``generate.codec.name``, ``--codec-name`` and the file
stems of ``conf/codec/`` (``codec=wan2.1-vae``); :func:`codec_name` refuses any other spelling in one line.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Optional

__all__ = [
    "CODEC_NAMES",
    "CodecChoice",
    "CodecFacts",
    "CODEC_FACTS",
    "codec_name",
    "codec_spatial_factor",
    "codec_latent_channels",
]


@dataclass(frozen=True)
class CodecFacts:
    """Latent channels and pixels per latent cell of a codec at its defaults, and the options that change them."""

    latent_channels: int
    spatial_factor: int
    patch_option: Optional[str] = None  # option scaling the spatial factor (cell = base * option value)
    patch_base: int = 1
    channels_option: bool = True  # whether ``latent_channels`` may be set in the options

    def spatial(self, options: dict) -> int:
        factor = self.spatial_factor
        if self.patch_option is not None and self.patch_option in options:
            factor = self.patch_base * int(options[self.patch_option])
        if "spatial_stages" in options:  # TAEHV: each of its 3 stages halves (or not) the frame; 8x with all three
            factor = factor * 2 ** sum(bool(s) for s in options["spatial_stages"]) // 8
        return factor

    def channels(self, options: dict) -> int:
        return (
            int(options.get("latent_channels", self.latent_channels)) if self.channels_option else self.latent_channels
        )


CODEC_FACTS: dict[str, CodecFacts] = {
    "wan2.1-vae": CodecFacts(16, 8),  # 8x spatial, 4x temporal, 16 channels
    "wan2.2-vae": CodecFacts(48, 16, channels_option=False),  # 16x spatial (2x2 patch over the 8x VAE)
    "taehv-wan2.1": CodecFacts(16, 8, patch_option="patch_size", patch_base=8),  # the taew2_1 release
    "taehv-wan2.2": CodecFacts(48, 16, patch_option="patch_size", patch_base=8),  # taew2_2: 2x2 pixel patch
    "tiny-ae": CodecFacts(16, 8, patch_option="patch", patch_base=1),  # the embedded world's codec
}
CODEC_NAMES = tuple(CODEC_FACTS)


@dataclass
class CodecChoice:
    """A codec by name and where its weights are: the shape of train's ``codec`` and eval's ``generate.codec``.
    ``checkpoint``: a weights file, a diffusers folder, a Wan release folder or a TrackStream release folder
    (``models.codecs.codec_checkpoint``)."""

    name: Optional[str] = "tiny-ae"  # one of CODEC_NAMES (eval's generate.codec: null, the runs' own codec)
    checkpoint: Optional[str] = None


def codec_name(value: str, *, field: str = "codec.name") -> str:
    """``value`` when it is one of :data:`CODEC_NAMES`; otherwise a one-line ValueError naming ``field`` and
    the name(s) it resembles (``wan2.1_vae`` -> wan2.1-vae, ``taehv`` -> taehv-wan2.1 or taehv-wan2.2)."""
    if value in CODEC_NAMES:
        return value
    dashed = str(value).replace("_", "-")
    near = [n for n in CODEC_NAMES if n.startswith(dashed)] or difflib.get_close_matches(dashed, CODEC_NAMES, n=1)
    hint = f"; it is spelled {' or '.join(near)}" if near else ""
    raise ValueError(f"{field}={value!r} is not a codec name{hint} (one of {', '.join(CODEC_NAMES)})")


def codec_spatial_factor(name: str, options: dict) -> int:
    """Pixels per latent cell of a configured codec (``options``: its ``codec.options``)."""
    return CODEC_FACTS[name].spatial(options)


def codec_latent_channels(name: str, options: dict) -> int:
    """Latent channels of a configured codec."""
    return CODEC_FACTS[name].channels(options)
