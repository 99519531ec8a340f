"""Video codecs (VAEs) behind one interface, ``VideoCodec`` (see ``base.py`` for the contract).

- ``wan2.1-vae``: the Wan 2.1 VAE (diffusers ``AutoencoderKLWan``), official ``Wan2.1_VAE.pth``
  or a diffusers folder, latent mean/std applied inside.
- ``wan2.2-vae``: the Wan 2.2 (TI2V-5B) VAE, official ``Wan2.2_VAE.pth`` or a diffusers folder:
  48 latent channels at H/16 x W/16 (``spatial_factor`` 16).
- ``taehv-wan2.1``: TAEHV tiny VAE in the Wan 2.1 latent space (``taew2_1.pth``/``.safetensors``).
- ``taehv-wan2.2``: TAEHV tiny VAE in the Wan 2.2 TI2V-5B latent space (``taew2_2.pth``/``.safetensors``):
  48 latent channels, 2x2 pixel patch, ``spatial_factor`` 16; the 5B's fast decoder.
- ``tiny-ae``: a small trainable causal autoencoder for the embedded synthetic world.

All map [B, 3, 1+4k, H, W] pixels in [-1, 1] to normalised latents [B, C, 1+k, H/s, W/s], s = ``spatial_factor``
(8, except 16 for ``wan2.2-vae`` / ``taehv-wan2.2`` and the patch options of TAEHV / the tiny AE).

Wherever a codec is named, its weights may be given as a file, a Wan release folder (its official VAE
file) or a TrackStream release folder (``assets/tiny-teacher``: manifest.json + config.yaml + codec.pt);
``codec_checkpoint`` is the one resolver, used by ``build_codec``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from trackstream.models.codec_names import CODEC_NAMES, codec_name
from trackstream.models.formats.release_folder import find_release, is_release_folder, vae_version

from .base import VideoCodec, load_state_dict_strict, read_state_dict_file
from .taehv import TAEHV, TAEHV_RELEASES, TAEHVConfig, TAEHVDecodeState, TAEHVEncodeState
from .tiny_ae import TinyAE, TinyAEConfig, TinyAEDecodeState, TinyAEEncodeState, reconstruction_loss

# The Wan VAEs are diffusers' AutoencoderKLWan: importing diffusers costs about a second, which every
# command that runs the tiny AE or TAEHV would pay at start-up, so their names resolve on first use.
_LAZY = {
    "wan_vae": (
        "WAN21_LATENTS_MEAN",
        "WAN21_LATENTS_STD",
        "WanDecodeState",
        "WanEncodeState",
        "WanVAE",
        "WanVAEConfig",
        "convert_diffusers_to_official",
        "convert_official_to_diffusers",
    ),
    "wan22_vae": (
        "WAN22_LATENTS_MEAN",
        "WAN22_LATENTS_STD",
        "Wan22VAE",
        "Wan22VAEConfig",
        "convert_diffusers_to_official22",
        "convert_official22_to_diffusers",
    ),
}


def __getattr__(name: str) -> Any:
    for module, names in _LAZY.items():
        if name in names:
            import importlib

            return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CODEC_NAMES",
    "build_codec",
    "codec_checkpoint",
    "is_trackstream_release",
    "VideoCodec",
    "WanVAE",
    "WanVAEConfig",
    "WanDecodeState",
    "WanEncodeState",
    "WAN21_LATENTS_MEAN",
    "WAN21_LATENTS_STD",
    "convert_official_to_diffusers",
    "convert_diffusers_to_official",
    "Wan22VAE",
    "Wan22VAEConfig",
    "WAN22_LATENTS_MEAN",
    "WAN22_LATENTS_STD",
    "convert_official22_to_diffusers",
    "convert_diffusers_to_official22",
    "TAEHV",
    "TAEHVConfig",
    "TAEHV_RELEASES",
    "TAEHVDecodeState",
    "TAEHVEncodeState",
    "TinyAE",
    "TinyAEConfig",
    "TinyAEDecodeState",
    "TinyAEEncodeState",
    "reconstruction_loss",
    "load_state_dict_strict",
    "read_state_dict_file",
]


def _make_config(cls: type, name: str, options: dict[str, Any], base: Any = None):
    """``cls(**options)``, or ``base`` with ``options`` replaced (a release preset plus overrides)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"codec {name!r}: unknown option(s) {unknown}; valid options are {sorted(fields)}")
    # Hydra hands over lists (ListConfig); the frozen configs hold tuples.
    values = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in options.items()}
    return cls(**values) if base is None else dataclasses.replace(base, **values)


# codec name -> (class, config dataclass, VAE version of its official .pth), by name (imported on use)
_WAN_VAES = {"wan2.1-vae": ("WanVAE", "WanVAEConfig", "2.1"), "wan2.2-vae": ("Wan22VAE", "Wan22VAEConfig", "2.2")}


# what a TrackStream release folder holds (pipeline's shipping writes it): the run's config and its codec
RELEASE_MANIFEST, RELEASE_CONFIG, RELEASE_CODEC = "manifest.json", "config.yaml", "codec.pt"


def is_trackstream_release(folder: str | os.PathLike) -> bool:
    """A TrackStream release folder: a manifest.json beside the run's config.yaml (``assets/tiny-teacher``)."""
    folder = Path(folder)
    return folder.is_dir() and (folder / RELEASE_MANIFEST).is_file() and (folder / RELEASE_CONFIG).is_file()


def _release_codec(name: str, folder: Path, field: str) -> str:
    """The codec.pt of a TrackStream release folder, after checking that its config names ``name``."""
    import yaml

    try:
        cfg = yaml.safe_load((folder / RELEASE_CONFIG).read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{field}={str(folder)!r}: its {RELEASE_CONFIG} is not valid YAML ({err.problem})") from None
    theirs = (cfg.get("codec") or {}).get("name") if isinstance(cfg, dict) else None
    if theirs is not None and theirs != name:
        raise ValueError(
            f"{field}={str(folder)!r} is a release whose codec is {theirs!r} ({RELEASE_CONFIG}), not {name!r}: "
            f"name the codec {theirs}"
        )
    if not (folder / RELEASE_CODEC).is_file():
        raise ValueError(
            f"{field}={str(folder)!r} is a release without {RELEASE_CODEC}: point at its codec's weights "
            f"(its {RELEASE_CONFIG} says codec.checkpoint={(cfg.get('codec') or {}).get('checkpoint')!r})"
        )
    return str(folder / RELEASE_CODEC)


def codec_checkpoint(name: str, checkpoint: str | os.PathLike | None, *, field: str = "codec.checkpoint") -> str | None:
    """What ``build_codec`` reads for codec ``name`` at ``checkpoint``: a weights file or a diffusers folder
    as given; a TrackStream release folder -> its codec.pt (its config.yaml must name the same codec); a
    Wan release folder -> its official VAE file (Wan VAEs only). A missing path is a one-line ValueError."""
    name = codec_name(name)
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    if not path.exists():
        raise ValueError(f"{field}={str(checkpoint)!r} does not exist (codec {name!r}): fix the path")
    if is_trackstream_release(path):
        return _release_codec(name, path, field)
    if is_release_folder(path):
        if name not in _WAN_VAES:
            raise ValueError(
                f"{field}={str(checkpoint)!r} is a Wan release folder, which holds a Wan VAE, not {name!r}: "
                f"name the codec {' or '.join(_WAN_VAES)}, or point at the {name} weights file"
            )
        # its Wan2.1_VAE.pth / Wan2.2_VAE.pth (found by name, else by keys)
        return str(find_release(path).require("vae", field_name=field).vae)
    return str(checkpoint)


def _build_wan_vae(name: str, checkpoint: str | None, options: dict[str, Any]) -> VideoCodec:
    cls_name, config_name, version = _WAN_VAES[name]
    cls, config_cls = __getattr__(cls_name), __getattr__(config_name)
    if checkpoint is not None and os.path.isdir(checkpoint):
        if options:
            raise ValueError(
                f"codec {name!r}: options {sorted(options)} cannot be combined with the diffusers folder "
                f"{checkpoint!r}, whose config.json defines the architecture; drop them"
            )
        return cls.from_pretrained(checkpoint)
    config = _make_config(config_cls, name, options)
    if checkpoint is None:
        return cls.from_config(config)
    found = vae_version(checkpoint)
    if found is not None and found != version:
        other = next(n for n, (_, _, v) in _WAN_VAES.items() if v == found)
        raise ValueError(
            f"codec.checkpoint={checkpoint!r} is a Wan {found} VAE but codec.name={name!r} expects "
            f"Wan {version}; set codec.name={other} (or point at a Wan {version} VAE)"
        )
    return cls.from_official_checkpoint(checkpoint, config if options else None)  # None: sizes from the file


def _taehv_sidecar(checkpoint) -> dict:
    """The TAEHVConfig options saved beside a trained TAEHV file (``<file>.json``), or none."""
    import json
    from pathlib import Path

    sidecar = Path(str(checkpoint)).with_suffix(".json")
    if not sidecar.is_file():
        return {}
    options = json.loads(sidecar.read_text()).get("taehv_options", {})
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items()}


def build_codec(name: str, *, checkpoint: str | None = None, **options: Any) -> VideoCodec:
    """Build a codec by name.

    checkpoint: None for random init (tests, architecture benchmarks, a tiny AE about to be
    trained); a file (official ``Wan2.1_VAE.pth`` / ``Wan2.2_VAE.pth``, ``taew2_1`` / ``taew2_2``
    ``.pth``/``.safetensors``, a tiny-AE checkpoint); a TrackStream release folder (its codec.pt); or,
    for the Wan VAEs only, a diffusers folder (its config.json is used) or a Wan release folder (its
    official VAE file). See ``codec_checkpoint``.
    options: fields of the codec's config dataclass (``WanVAEConfig``, ``Wan22VAEConfig``, ``TAEHVConfig``,
    ``TinyAEConfig``); for TAEHV they override the release preset of the name (``TAEHV_RELEASES``).
    """
    if checkpoint is not None:
        from trackstream.models.formats.files import check_shipped

        checkpoint = codec_checkpoint(name, checkpoint)
        check_shipped(checkpoint)  # e.g. assets/tiny-teacher/codec.pt: its sha256 against the release's manifest
    if name in _WAN_VAES:
        return _build_wan_vae(name, checkpoint, options)
    if name in TAEHV_RELEASES:
        if checkpoint is not None:  # a trained decoder's own options (<file>.json, stage=tiny_decoder); given ones win
            options = {**_taehv_sidecar(checkpoint), **options}
        config = _make_config(TAEHVConfig, name, options, base=TAEHV_RELEASES[name][0])
        return TAEHV(config) if checkpoint is None else TAEHV.from_checkpoint(checkpoint, config)
    if name == "tiny-ae":
        config = _make_config(TinyAEConfig, name, options) if options else None
        if checkpoint is None:
            return TinyAE(config)
        return TinyAE.from_checkpoint(checkpoint, config)
    codec_name(name)  # a name that is not a codec: the one-line error naming the spelling it resembles
    raise AssertionError(f"codec {name!r} is in CODEC_NAMES but build_codec has no branch for it")
