"""The parts of a TrackStream diffusers pipeline folder as diffusers components (``stream.diffusers_pipeline``).

diffusers 0.42 loads a component named ``["trackstream_components", "TrackStreamTransformer"]`` in
``model_index.json`` from ``<folder>/transformer/trackstream_components.py`` (a remote-code file: a one-line
re-export of this module) and calls the class's ``from_pretrained(<folder>/transformer, torch_dtype=...,
device_map=..., ...)`` - but only for subclasses of one of its loadable bases (``ModelMixin`` here), and only
through the COMPONENT's ``from_pretrained``: ``DiffusionPipeline.from_pretrained`` never calls the pipeline
class's own. So each part loads itself here, through ``models.conditioner``'s loaders (the ones
``load_export`` is made of), and is an ``nn.Module`` so that ``pipe.to(device)`` moves it.

Each component folder holds ``config.json`` (what it is) and its weights as TrackStream writes them:
``transformer/`` the export itself (network.json, dit/, heads.pt), ``vae/`` the codec file, ``text_encoder/``
and ``image_encoder/`` the encoder's files under ``weights/`` (or nothing where the encoder's own default is
used, e.g. MiniLM's bundled files, which installing trackstream installs).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import ModelMixin

from trackstream.models.conditioner import load_export_codec, load_export_network, load_export_text_encoder
from trackstream.models.precision import resolve_precision

__all__ = [
    "COMPONENT_FILE",
    "TrackStreamTransformer",
    "TrackStreamCodec",
    "TrackStreamTextEncoder",
    "TrackStreamImageEncoder",
    "read_component_config",
]

COMPONENT_FILE = "trackstream_components"  # <component>/trackstream_components.py in an exported folder


def read_component_config(folder: str | Path) -> dict:
    path = Path(folder) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable component config ({err}); export the pipeline again") from None


def _precision(torch_dtype) -> tuple[torch.device, torch.dtype]:
    """diffusers passes ``torch_dtype=None`` when the user gave none: then the project's default, CUDA + bf16
    when a GPU is present, else CPU + fp32 (``models.precision``); a given dtype loads on that default device."""
    return resolve_precision(None, torch_dtype)


class _Component(ModelMixin):
    """One wrapped TrackStream module (``self.module``); ``from_pretrained`` takes what diffusers passes
    (``torch_dtype`` and the accelerate options, which do not apply to these small wrappers)."""

    def __init__(self, module: torch.nn.Module, info: dict):
        super().__init__()
        self.module, self.info = module, dict(info)

    @classmethod
    def from_pretrained(cls, folder, torch_dtype=None, **_loading_kwargs):
        device, dtype = _precision(torch_dtype)
        info = read_component_config(folder)
        return cls(cls.load(Path(folder), info, device, dtype), info)

    @classmethod
    def load(cls, folder: Path, info: dict, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        raise NotImplementedError


class TrackStreamTransformer(_Component):
    """The exported MotionWan (the Wan DiT + track head + text projection) and its ``network.json``."""

    @classmethod
    def load(cls, folder, info, device, dtype):
        return load_export_network(folder, device=device, dtype=dtype)

    @classmethod
    def from_pretrained(cls, folder, torch_dtype=None, **loading_kwargs):
        from trackstream.models.network import Network

        component = super().from_pretrained(folder, torch_dtype=torch_dtype, **loading_kwargs)
        component.info["network"] = Network.open(folder, "transformer").meta  # the conventions, the encoders' names
        return component

    @property
    def network(self):
        return self.module

    def to(self, *args, **kwargs):
        # a dtype goes through the same cast as load_export: Wan's fp32 parts (time embedding, modulation,
        # norms) and the heads stay fp32, as the streaming step expects; nn.Module.to would cast them all
        device, dtype, *_ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None:
            super().to(device)
        if dtype is not None:
            self.module.dit.cast_for_inference(dtype)
        return self


class TrackStreamCodec(_Component):
    """The frozen codec (``models.codecs`` name in config.json, its weights file beside it)."""

    @classmethod
    def load(cls, folder, info, device, dtype):
        return load_export_codec(info["codec_name"], str(folder / info["weights"]), device=device, dtype=dtype)

    @property
    def codec(self):
        return self.module


class TrackStreamTextEncoder(_Component):
    """The frozen text encoder the network was trained with (``models.text_encoders``)."""

    @classmethod
    def load(cls, folder, info, device, dtype):
        path = folder / info["weights"] if info.get("weights") else None
        return load_export_text_encoder({"text_encoder": info["name"]}, device=device, dtype=dtype, path=path)

    @property
    def encoder(self):
        return self.module


class TrackStreamImageEncoder(_Component):
    """The CLIP image encoder of the flavors with the I2V image branch (``models.clip_image``)."""

    @classmethod
    def load(cls, folder, info, device, dtype):
        from trackstream.models.clip_image import load_image_encoder

        processor = folder / info["processor"] if info.get("processor") else None
        return load_image_encoder(folder / info["weights"], dtype=dtype, processor=processor).to(device)

    @property
    def encoder(self):
        return self.module
