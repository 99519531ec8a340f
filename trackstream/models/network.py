"""A network folder, opened once: ``Network.open(path)`` for any folder a user names -- a run directory, a
TrackStream export (``network.json``), a shipped release folder, a FastVideo WanTrack bundle -- with what
every command needs from it, read from the folder and never restated:

    net = Network.open("runs/dmd")               # or runs/dmd/export/student, assets/tiny-student/student, Track-v0
    net.model, net.conventions, net.text_dim    # its architecture and how it must be called
    net.codec                                   # CodecRef(name, checkpoint) of its latent space
    net.recorded("data.placement")              # what its run was trained on
    module = net.load()                         # the MotionWan, float32 on the CPU
    module, codec, conditioner = net.for_inference(device=None, dtype=None)   # CUDA + bf16 when present

Where a folder's codec is found (its latent space; a stage's typed ``codec.*`` or a command's ``--codec``
overrides it): a bundle's ``vae/``; a run's fitted ``codec/codec.pt`` or a release's ``codec.pt``; the
codec its run's ``config.yaml`` names, where that path exists here; its teacher's (a student works in its
teacher's latent space); a release's manifest entry ``codec`` (matched by sha256 beside the release).

Encoder folders recorded in a network.json relative to it (``save_network`` writes them so) are read
relative to the folder, so an export and the folders it names can move together.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trackstream.models.motion_wan import (
    Conventions,
    ModelConfig,
    MotionWan,
    is_network_folder,
    load_network,
    read_network_json,
)

__all__ = ["CodecRef", "Network", "NotANetwork"]

_MAX_TEACHER_DEPTH = 8  # a student's codec is its teacher's, whose codec may be its own teacher's, ...


class NotANetwork(ValueError):
    """A path that is no network folder (``Network.open``): a one-line error naming the field and the fix."""


@dataclass(frozen=True)
class CodecRef:
    """A codec by ``models.codecs`` name and checkpoint (a file, a Wan release folder, a bundle's ``vae/``)."""

    name: str
    checkpoint: str


@dataclass(frozen=True)
class Network:
    """One network folder and what was recorded with it (see the module docstring)."""

    folder: Path  # the export (network.json) or the bundle's root
    home: Path | None  # the run directory or release folder holding the export (None: a bare export)
    meta: dict  # network.json (a bundle's derived from its own files), encoder paths resolved
    config: dict | None  # the resolved config of the run that made it (a run's or release's config.yaml)
    config_path: Path | None
    codec_file: Path | None  # the codec of its latent space, where one is found
    bundle: bool = False  # a FastVideo WanTrack bundle: its settings come from its own files

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, spec: str | os.PathLike, field: str = "network") -> "Network":
        """The network ``spec`` names; anything else is a one-line ``NotANetwork`` naming ``field``."""
        found = cls.find(spec, field)
        if found is None:
            raise NotANetwork(
                f"{field}={str(spec)!r} is not a network folder: give a run directory, its export/<name> "
                "(network.json), a release folder or a FastVideo WanTrack bundle"
            )
        return found

    @classmethod
    def of(cls, network: "Network | str | os.PathLike", field: str = "network") -> "Network":
        """``network`` itself, or the network the path names (``open``)."""
        return network if isinstance(network, Network) else cls.open(network, field)

    @classmethod
    def find(cls, spec: str | os.PathLike | None, field: str = "network", _depth: int = 0) -> "Network | None":
        """The network ``spec`` names, or None where it names none (a Wan checkpoint, ``PATH::entry``, a path
        that does not exist: the caller says why). A folder holding several networks is a one-line ValueError."""
        from trackstream.models.formats.checkpoint import split_subkey

        if not spec or split_subkey(str(spec))[1] is not None or not Path(spec).is_dir():
            return None
        folder = Path(spec)
        if not (folder / "network.json").is_file() and is_network_folder(folder):  # a WanTrack bundle
            meta = read_network_json(folder)
            return cls(folder=folder, home=None, meta=meta, config=None, config_path=None, codec_file=None, bundle=True)
        network = folder if (folder / "network.json").is_file() else _network_in(folder, field, spec)
        if network is None:
            return None
        in_run = network.parent.name == "export"
        home = network.parents[1] if in_run else network.parent
        config_path = home / "config.yaml" if (home / "config.yaml").is_file() else None
        config = _read_config(config_path) if config_path else None
        try:
            meta = read_network_json(network)
        except ValueError:
            from trackstream.models.formats.files import check_shipped

            check_shipped(network)  # an edited shipped release: say that it is not intact (and how to restore it)
            raise
        fitted = home / "codec" / "codec.pt" if in_run else home / "codec.pt"
        codec = (
            next((c for c in (fitted, _recorded_codec(meta, network)) if c is not None and c.exists()), None)
            or _named_codec(config, field, _depth)
            or _manifest_codec(home)
        )
        has_home = in_run or config_path is not None or (home / "manifest.json").is_file()
        return cls(
            folder=network,
            home=home if has_home else None,
            meta=meta,
            config=config,
            config_path=config_path,
            codec_file=codec,
        )

    # ------------------------------------------------------------------ what it is

    @property
    def model(self) -> ModelConfig:
        return ModelConfig(**self.meta["model"])

    @property
    def text_dim(self) -> int:
        return int(self.meta["text_encoder_dim"])

    @functools.cached_property
    def conventions(self) -> Conventions:
        if self.bundle:
            from trackstream.models.formats.wantrack import bundle_root, find_wantrack

            source = bundle_root(self.folder, find_wantrack(self.folder))
            return Conventions.from_dict(self.meta.get("conventions", {}), source=str(source))
        return Conventions.recorded(self.meta, self.folder)

    @property
    def codec(self) -> CodecRef | None:
        """The codec of its latent space (None where the folder records none that is on this machine)."""
        if self.bundle:
            from trackstream.models.formats.wantrack import wantrack_codec

            name, checkpoint = wantrack_codec(self.folder)
            return CodecRef(name, checkpoint)
        name = self.codec_name
        if name is None or self.codec_file is None:
            return None
        return CodecRef(name, str(self.codec_file))

    @property
    def codec_name(self) -> str | None:
        """The name of its codec, as its run recorded it (a bundle's: the Wan 2.1 VAE)."""
        if self.bundle:
            return "wan2.1-vae"
        if isinstance(self.meta.get("codec"), dict):  # an export with no run around it records its codec
            return self.meta["codec"].get("name")
        return ((self.config or {}).get("codec") or {}).get("name")

    @property
    def codec_options(self) -> dict:
        return dict(((self.config or {}).get("codec") or {}).get("options") or {})

    def recorded(self, key: str, default: Any = None) -> Any:
        """The value of the dotted config ``key`` its run recorded (``data.placement``), else ``default``."""
        node: Any = self.config or {}
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def describe(self) -> str:
        """Where its settings were read from, for logs."""
        if self.bundle:
            return f"the bundle {self.folder}"
        return str(self.config_path or self.folder / "network.json")

    # ------------------------------------------------------------------ loading

    def load(self, device: str | torch.device = "cpu") -> MotionWan:
        """The MotionWan, float32 (``models.motion_wan.load_network``)."""
        return load_network(self.folder, device=device)

    def codec_for(self, name: str | None = None, checkpoint: str | None = None, *, field: str = "--codec") -> CodecRef:
        """The codec to load: its own, with ``name`` / ``checkpoint`` where typed (a typed checkpoint without a
        name takes the network's codec name). None found is a one-line ValueError naming ``field``."""
        from trackstream.models.codecs import codec_checkpoint

        own = self.codec
        if checkpoint:
            name = name or self.codec_name
            if not name:
                raise ValueError(
                    f"{field}={checkpoint}: name its codec too ({field}-name; {self.describe()} names none)"
                )
            return CodecRef(name, codec_checkpoint(name, checkpoint, field=field))  # a missing path: refused here
        if own is None:
            raise ValueError(
                f"no codec is recorded with {self.folder} ({self.describe()} names none on this machine): give "
                f"{field}=<the codec it works in> (a run's <teacher run>/codec/codec.pt, a Wan release folder)"
            )
        if name and name != own.name:
            raise ValueError(
                f"{field}-name={name} is not {self.folder}'s codec ({own.name}, {own.checkpoint}): drop it, or give "
                f"{field}=<a {name} checkpoint>"
            )
        return own

    @torch.no_grad()
    def for_inference(
        self,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        codec: CodecRef | None = None,
        offload_encoders: bool = False,
        decoder: str | None = None,
        decoder_name: str | None = None,
    ):
        """(network, codec, conditioner) ready for inference: the network frozen in eval mode, its codec
        (``codec``: another checkpoint of its latent space, ``codec_for``; default its own) and the text
        encoder and image features its network.json names. Every command that runs a network loads it here.

        ``device`` / ``dtype``: None or "auto" is CUDA + bf16 when a GPU is present, else CPU + fp32
        (``models.precision``; fp8: the DiT blocks' linears in float8, everything else as bf16). The DiT's matmul
        weights and the codec are cast to ``dtype``; what Wan keeps in fp32 (time embedding, modulation, norms)
        stays fp32 (``WanModel.cast_for_inference``). The text encoder (umT5 for the real networks) and the CLIP
        image encoder run on ``device`` in ``dtype`` too; ``offload_encoders`` keeps them on the CPU in fp32
        instead (a GPU too small for umT5-XXL beside the DiT: encoding a prompt is once per stream).
        ``decoder`` / ``decoder_name``: a trained tiny decoder that decodes instead of the codec's own."""
        from trackstream.models.conditioner import (
            Conditioner,
            load_export_codec,
            load_export_network,
            load_export_text_encoder,
        )
        from trackstream.models.precision import resolve_precision, working_dtype

        ref = codec or self.codec_for()
        device, dtype = resolve_precision(device, dtype)
        net = load_export_network(self.folder, device=device, dtype=dtype)
        dtype = working_dtype(dtype)  # fp8 is the DiT's linears alone: codec and encoders in bf16
        frozen_codec = load_export_codec(
            ref.name, ref.checkpoint, device=device, dtype=dtype, decoder=decoder, decoder_name=decoder_name
        )
        enc_device, enc_dtype = (torch.device("cpu"), torch.float32) if offload_encoders else (device, dtype)
        text_encoder = load_export_text_encoder(self.meta["model"], device=enc_device, dtype=enc_dtype)
        conditioner = Conditioner.for_network(
            self.model,
            codec=frozen_codec,
            text_encoder=text_encoder,
            device=device,
            encoder_device=enc_device,
            encoder_dtype=enc_dtype,
        )
        return net, frozen_codec, conditioner


# ---------------------------------------------------------------------- where the parts are


def _read_config(path: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def _network_in(folder: Path, field: str, spec) -> Path | None:
    """The one export in a run directory (``export/<name>``) or a release folder (``<name>``)."""
    found = sorted({p.parent for p in (*folder.glob("export/*/network.json"), *folder.glob("*/network.json"))})
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in found)
        raise ValueError(f"{field}={spec} holds {len(found)} networks ({names}): name one, e.g. {field}={found[0]}")
    return found[0] if found else None


def _recorded_codec(meta: dict, folder: Path) -> Path | None:
    """The codec network.json records (``save_network(codec=)``): relative to the folder, else to where it was
    written."""
    entry = meta.get("codec")
    if not isinstance(entry, dict) or not entry.get("checkpoint"):
        return None
    named = Path(entry["checkpoint"])
    if named.is_absolute():
        return named
    here = Path(os.path.normpath(folder / named))
    there = Path(os.path.normpath(Path(meta["written_at"]) / named)) if meta.get("written_at") else None
    return there if there is not None and not here.exists() and there.exists() else here


def _named_codec(config: dict | None, field: str, depth: int) -> Path | None:
    """The codec a recorded config names (where it exists here), else its own teacher's."""
    if not config:
        return None
    named = (config.get("codec") or {}).get("checkpoint")
    if named and Path(named).exists():
        return Path(named)
    teacher = (config.get("stage") or {}).get("teacher")
    if teacher and depth < _MAX_TEACHER_DEPTH:
        found = Network.find(teacher, field, depth + 1)
        return found.codec_file if found else None
    return None


def _manifest_codec(home: Path) -> Path | None:
    """A release's codec as its manifest names it (``codec: {path, sha256}``, the path relative to the
    folder holding the releases' folder, e.g. ``assets/tiny-teacher/codec.pt``), found beside the release
    (``<home>/../tiny-teacher/codec.pt``) or above it, and only where its sha256 matches."""
    from trackstream.models.formats.files import sha256

    manifest = home / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        entry = json.loads(manifest.read_text()).get("codec")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    if not isinstance(entry, dict) or not entry.get("path"):
        return None
    named = Path(entry["path"])
    for candidate in (home.parent / Path(*named.parts[1:]), home.parent.parent / named, home / named.name):
        if candidate.is_file() and (not entry.get("sha256") or sha256(candidate) == entry["sha256"]):
            return candidate
    return None
