"""A stage given a network reads that network's settings from what was recorded with it.

The network a stage is given: ``stage.teacher`` (a distillation's teacher), else ``stage.student`` (RL's policy),
else ``model.init_from`` (a fine-tune's start). Whichever of its folders the user points at (a run directory, its
export, a release folder, a FastVideo WanTrack bundle), ``models.network.Network`` reads the export, the config
recorded with it and the codec of its latent space; a bundle's frame size and shift are what it was trained at,
its umT5 and CLIP are its own.
What the stage takes (``TeacherSettings``): the network's architecture, text encoder and track channels and
splatting (network.json), its trainable codec (file, name, options), and the world, frame size, fps, track
grid, number of tracks and noise shift it was trained on (the recorded config); and, where the stage names none
that exists, the encoder folders and the pretrained codec file it was trained with (network.json, the config).
``apply_settings`` puts them into the stage's composed config where the command line did not set them, and
refuses a command-line value that contradicts them in one line, before any work. A fine-tune (``model.init_from``) trains its network
further and may move it to other data: only its network and codec bind it.
"""

from __future__ import annotations

import dataclasses
import filecmp
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from trackstream.data.synthetic import SyntheticWorld
from trackstream.models.flavors import flavor_config
from trackstream.models.motion_wan import ModelConfig
from trackstream.models.network import Network
from trackstream.trainer.codec import TRAINABLE

__all__ = ["TeacherSettings", "Applied", "apply_settings", "SOURCES", "DATA_KEYS"]

# the fields that give a stage its network, first set first; True: the data settings bind too
SOURCES = (("stage.teacher", True), ("stage.student", True), ("model.init_from", False))
NETWORK_FIELDS = ("stage.teacher", "stage.student", "model.init_from")  # pointed at a folder: its network's
DATA_KEYS = (
    "data.world",
    "data.height",
    "data.width",
    "data.fps",
    "data.grid_size",
    "data.num_tracks",
    "data.placement",
    "schedule.shift",
)
_UNSET = object()


@dataclass(frozen=True)
class TeacherSettings:
    """What a stage given a network takes from its record."""

    model: ModelConfig  # network.json's
    codec_name: str | None = None  # the recorded config's codec (None: no config recorded)
    codec_options: dict = dataclasses.field(default_factory=dict)
    codec_checkpoint: str | None = None  # the record's codec file
    data: dict = dataclasses.field(default_factory=dict)  # DATA_KEYS the recorded config has -> their values
    # encoder paths the network carries (a bundle's text_encoder/ and image_encoder/): set where the line did not
    paths: dict = dataclasses.field(default_factory=dict)
    # the encoders and pretrained codec an export was trained with (its network.json, its run's config), where they
    # are on this machine: they fill a stage's setting that is unset or names no file
    fills: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, record: Network) -> "TeacherSettings":
        meta = record.meta
        if record.bundle:
            return cls._of_bundle(meta)
        run = record.config or {}
        codec = run.get("codec") or {}
        recorded = {k: OmegaConf.select(OmegaConf.create(run), k, default=_UNSET) for k in DATA_KEYS}
        model = ModelConfig(**meta["model"])
        return cls(
            model=model,
            codec_name=codec.get("name"),
            codec_options=dict(codec.get("options") or {}),
            codec_checkpoint=str(record.codec_file) if record.codec_file else None,
            data={k: _plain(v) for k, v in recorded.items() if v is not _UNSET},
            fills=_export_fills(model, codec),
        )

    @classmethod
    def _of_bundle(cls, meta: dict) -> "TeacherSettings":
        """A bundle's settings: its network, the frame size and shift its conventions record (its
        training_config.yaml, else FastVideo's defaults), and its own umT5 and CLIP folders."""
        model, conv = ModelConfig(**meta["model"]), meta.get("conventions", {})
        data = {"data.height": conv.get("height"), "data.width": conv.get("width")}
        data["schedule.shift"] = conv.get("schedule_shift")
        paths = {
            "model.text_encoder_path": model.text_encoder_path,
            "model.image_encoder_path": model.image_encoder_path,
            "model.image_processor": model.image_processor,
        }
        return cls(model=model, data={k: v for k, v in data.items() if v is not None}, paths=paths)

    def codec_path(self, record: Network, codec_name: str) -> str | None:
        """A bundle's own VAE folder (``vae/``) when the stage's codec is of its latent space."""
        from trackstream.models.formats.wantrack import wantrack_codec

        carried = wantrack_codec(record.folder) if record.bundle else None
        return carried[1] if carried and carried[0] == codec_name else None

    def values(self, flavor: str, codec_name: str) -> dict[str, Any]:
        """Config key -> value, for a stage whose network is of ``flavor`` and whose codec is ``codec_name``.
        A stage of another flavor trains a network of another size (a 14B teacher's 1.3B student): its DiT
        settings are its own. A pretrained codec is the recipe's, at the user's path (its name fixes the
        latent space); a trainable one's latent space is its file."""
        m = self.model
        out = {"model.text_encoder": m.text_encoder, "model.track_channels": m.track_channels}
        out["model.track_splat"] = m.track_splat
        if flavor == m.flavor:
            out["model.overrides"] = dict(m.overrides)
        if (self.codec_name or codec_name) in TRAINABLE:
            if self.codec_name:
                out |= {"codec.name": self.codec_name, "codec.options": dict(self.codec_options)}
            if self.codec_checkpoint:
                out["codec.checkpoint"] = self.codec_checkpoint
        return out | self.data

    def at(self, key: str, path: tuple[str, ...]) -> Any:
        """The network's value at ``key`` + ``path`` (a sub-key of a dict setting), defaults included."""
        if key == "model.overrides":
            value = flavor_config(self.model.flavor, **self.model.overrides)
        elif key == "data.world":
            value = {**_world_defaults(), **(self.data.get(key) or {})}
        else:
            value = self.values(self.model.flavor, self.codec_name or "")[key]
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return value


def _export_fills(model: ModelConfig, codec: dict) -> dict:
    """An export's encoder folders (network.json) and its run's pretrained codec file, those that exist here."""
    found = {f"model.{k}": getattr(model, k) for k in ("text_encoder_path", "image_encoder_path", "image_processor")}
    if codec.get("name") and codec["name"] not in TRAINABLE:  # a trainable codec's file is codec_checkpoint
        found["codec.checkpoint"] = codec.get("checkpoint")
    return {k: v for k, v in found.items() if v and Path(v).exists()}


def _names_nothing(value: Any) -> bool:
    return value is None or not Path(str(value)).exists()


def _world_defaults() -> dict:
    fixed = {"height", "width", "num_frames", "fps", "grid_size"}
    return {k: v for k, v in dataclasses.asdict(SyntheticWorld()).items() if k not in fixed}


@dataclass(frozen=True)
class Applied:
    """What ``apply_settings`` did: the field and record it read, and the keys whose value changed."""

    field: str
    spec: str
    record: Network
    changed: tuple[str, ...]

    def describe(self) -> str:
        where = self.record.describe()
        changed = ", ".join(self.changed) or "nothing"
        return f"{self.field}={self.spec}: settings read from {where} (changed: {changed})"


def apply_settings(cfg: DictConfig, explicit: Mapping[str, str]) -> Applied | None:
    """Put the settings of the network the stage is given into ``cfg`` (in place), where the command line did
    not set them; ``explicit``: config key -> the command-line override that set it. A network field pointed at a
    run or release folder is set to its export. An override that contradicts the network is a one-line
    ValueError naming it, the network and the fix. None when the stage is given no recorded network."""
    records = {}
    for name in NETWORK_FIELDS:
        spec = OmegaConf.select(cfg, name, default=None)
        found = Network.find(spec, name)
        if found is not None:
            records[name] = (str(spec), found)
            OmegaConf.update(cfg, name, str(found.folder))
    source = next(((n, binds) for n, binds in SOURCES if OmegaConf.select(cfg, n, default=None)), None)
    if source is None or source[0] not in records:
        return None
    field, binds_data = source
    spec, record = records[field]
    settings = TeacherSettings.of(record)
    changed = []
    paths = dict(settings.paths)
    vae = settings.codec_path(record, cfg.codec.name)
    if vae is not None:
        paths["codec.checkpoint"] = vae
    for key, value in paths.items():  # the network's own encoders and VAE, unless the line names others
        if key not in explicit and _plain(OmegaConf.select(cfg, key, default=None)) != value:
            OmegaConf.update(cfg, key, value, merge=False)
            changed.append(key)
    for key, value in settings.fills.items():  # an export's: where the stage names nothing that exists
        if key.startswith("codec.") and settings.codec_name != cfg.codec.name:
            continue  # another latent space: its file is not this codec's
        if key not in explicit and _names_nothing(OmegaConf.select(cfg, key, default=None)):
            OmegaConf.update(cfg, key, value, merge=False)
            changed.append(key)
    for key, value in settings.values(cfg.model.flavor, cfg.codec.name).items():
        touching = {k: line for k, line in explicit.items() if _within(k, key) or _within(key, k)}
        if touching and key in DATA_KEYS and not binds_data:  # the fine-tune's own data
            _fill_around(cfg, key, value, touching)
            continue
        for k, line in touching.items():
            _refuse_contradiction(cfg, settings, key, k, line, given_as=f"{field}={spec}", record=record)
        before = _plain(OmegaConf.select(cfg, key, default=None))
        OmegaConf.update(cfg, key, value, merge=False)
        if before != _plain(value):
            changed.append(key)
    return Applied(field=field, spec=spec, record=record, changed=tuple(changed))


def _within(key: str, parent: str) -> bool:
    return key == parent or key.startswith(parent + ".")


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _fill_around(cfg: DictConfig, key: str, value: Any, touching: Mapping[str, str]) -> None:
    """``key`` set to the network's ``value`` but for the sub-keys the command line set (kept)."""
    if any(_within(key, k) for k in touching):  # the line set it whole
        return
    kept = {k: _plain(OmegaConf.select(cfg, k, default=None)) for k in touching}
    OmegaConf.update(cfg, key, value, merge=False)
    for k, v in kept.items():
        OmegaConf.update(cfg, k, v, force_add=True)


def _refuse_contradiction(
    cfg: DictConfig, settings: TeacherSettings, key: str, k: str, line: str, *, given_as: str, record: Network
) -> None:
    """A ValueError when the override ``line`` (which set ``k``, within or above ``key``) gives ``key`` another
    value than the network ``given_as`` (``stage.teacher=...``) has."""
    at = k if _within(k, key) else key
    path = tuple(at[len(key) + 1 :].split(".")) if at != key else ()
    given = _plain(OmegaConf.select(cfg, at, default=None))
    if key == "model.overrides" and not path:
        same = flavor_config(settings.model.flavor, **(given or {})) == settings.at(key, ())
    elif key == "codec.checkpoint":
        same = given is not None and _same_file(str(given), settings.codec_checkpoint)
    else:
        same = _plain(given) == _plain(settings.at(key, path))
    if not same:
        field = given_as.split("=", 1)[0]
        source = record.codec_file if key == "codec.checkpoint" else record.config_path
        if key.startswith("model."):
            source = record.folder / "network.json"
        raise ValueError(
            f"{line} contradicts {given_as}, made with {at}={settings.at(key, path)!r} ({source}): drop "
            f"{line} (the stage reads {at} from {field}) or give {field} a network made with it"
        )


def _same_file(a: str, b: str | None) -> bool:
    if b is None or not Path(a).is_file():
        return False
    return Path(a).resolve() == Path(b).resolve() or filecmp.cmp(a, b, shallow=False)
