"""The trainable motion-conditioned video network: Wan DiT + track head + text projection.

``MotionWan`` bundles what the teacher, the student and the critic train together, so one module
is wrapped by DDP/FSDP, one state dict is checkpointed and one EMA is kept. The frozen parts
(codec, text encoder) are NOT in it: they are shared, offloaded or replaced by cached outputs
(``models.conditioner.Conditioner``). An exported network is a folder (``save_network`` /
``load_network``): the DiT in the official Wan format, the heads, and ``network.json`` with the
config and the typed ``Conventions`` it must be called with.

Inputs of ``forward`` (B batch, D track-embedding dim, T pixel frames, F = 1 + (T-1)/4 latent
frames, h/w latent size, L text tokens):
  x        [B, C, F, h, w]      noisy latent (C = the flavor's out_dim: 16, or 48 for Wan 2.2 TI2V-5B);
                                t [B] or [B, F] on the 0..1000 scale
  text     [B, L, E] + lengths  frozen-encoder output (projected here to the DiT's text_dim)
  image    [B, C_img, F, h, w]  first-frame channels (``models.channel_layouts``: wan_i2v -> 20,
                                fun_control -> 16, t2v / ti2v -> None)
  motion   [B, D, T, h, w]      rasterised track embeddings c_m (MotionStream eq. 1) or None for
                                the empty motion condition; the learnable TrackHead folds time 4x.
The empty motion condition is exactly zero track channels (the head has no bias), the same
input as tracks dropped in training and masked mid-frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from trackstream.models.channel_layouts import IMAGE_IN_LATENT, LAYOUTS, compose_condition, condition_channels
from trackstream.models.flavors import build_wan, flavor_config
from trackstream.models.lora import LoraConfig
from trackstream.models.streaming import StreamConfig
from trackstream.models.text_encoders import TextProjection
from trackstream.models.tracks import DEFAULT_ID_RANGE, TRACK_EMBED_DIM, TrackEncoder, check_convention, check_splat
from trackstream.models.wan import WanModel

__all__ = [
    "IMAGE_FEATURES",
    "ModelConfig",
    "Conventions",
    "MotionWan",
    "build_motion_wan",
    "read_init",
    "save_network",
    "load_network",
    "load_wantrack",
    "is_network_folder",
    "TEXT_ENCODER_DIMS",
    "pad_text",
    "LATENT_CHANNELS",
    "EXPORT_FILES",
    "latent_channels",
]

LATENT_CHANNELS = 16  # Wan 2.1 latents; a flavor's own count is latent_channels(flavor)
IMAGE_FEATURES = ("auto", "clip", "zeros")


@dataclass
class ModelConfig:
    flavor: str = "tiny"  # models.flavors name
    layout: str = "wan_i2v"  # models.channel_layouts.LAYOUTS
    track_channels: int = 16  # TrackHead output channels; 0 disables track conditioning
    track_embed_dim: int = TRACK_EMBED_DIM
    # how tracks are written on the latent grid (models.tracks.SPLATS): nearest cell (MotionStream's eq. 1)
    # or bilinear over the 4 cells around a point (its sub-cell position; the embedded world's 4-px cells)
    track_splat: str = "nearest"
    # the whole track encoding (models.tracks.TRACK_CONVENTIONS): ours, or FastVideo's WanTrack maths (their
    # ID range and embedding, normalised round-and-clamp snapping, zero-padded frame 0) for their bundles
    track_convention: str = "trackstream"
    # a bias on the track head: FastVideo's track convs may carry one (then no tracks differs from tracks
    # given but all invisible); ours has none, so the empty motion condition is exactly zero
    track_bias: bool = False
    text_encoder: str = "minilm"  # models.text_encoders.build_text_encoder name (frozen)
    text_encoder_path: str | None = None  # local folder / checkpoint of the text encoder
    overrides: dict = field(default_factory=dict)  # WanModel kwargs (dim, num_layers, text_len, ...)
    # what to start from (trainer.weights.initialise): an exported network folder, a Wan checkpoint
    # (official or diffusers; the DiT only), or an entry of a training .pt as PATH::entry
    # (Self-Forcing / CausVid / LongLive: PATH::generator_ema or PATH::generator); docs/checkpoints.md
    init_from: str | None = None
    # CLIP image tokens for flavors with the I2V image branch (img_emb): "clip" = the first frame's
    # tokens from the CLIP model at image_encoder_path; "zeros" = zero tokens (what the Fun-Control
    # release feeds when no CLIP image is given); "auto" = "clip" for those flavors, unused otherwise.
    image_features: str = "auto"
    image_encoder_path: str | None = None  # CLIP .pth, transformers folder or release folder
    # a CLIPImageProcessor folder that prepares CLIP's pixels (FastVideo's bundles: their image_processor/, shortest
    # side to 224 and a centre crop); None: Wan's official preprocessing (the whole picture resized to 224 x 224)
    image_processor: str | None = None
    # a PEFT LoRA adapter folder merged into init_from's weights when they are loaded (models.lora)
    adapter: str | None = None
    # LoRA adapters on the trained networks of any stage (models.lora; rank 0: the whole network trains)
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):
            self.lora = LoraConfig(**self.lora)
        if self.adapter and not self.init_from:
            raise ValueError(
                f"model.adapter={self.adapter!r} needs its base: set model.init_from to the weights it was trained on"
            )
        if self.layout not in LAYOUTS:
            raise ValueError(f"model.layout={self.layout!r}; choose one of {LAYOUTS}")
        if self.track_channels < 0:
            raise ValueError(f"model.track_channels={self.track_channels} must be >= 0")
        if self.track_embed_dim < 2 or self.track_embed_dim % 2:
            raise ValueError(f"model.track_embed_dim={self.track_embed_dim} must be even and >= 2")
        check_splat(self.track_splat)
        check_convention(self.track_convention, field="model.track_convention")
        if self.track_convention == "fastvideo" and self.track_splat != "nearest":
            raise ValueError(
                f"model.track_splat={self.track_splat!r}: the fastvideo track convention rounds each point to one "
                "cell; leave it at nearest"
            )
        base = flavor_config(self.flavor, **self.overrides)  # raises ValueError naming unknown flavors / fields
        if self.image_features not in IMAGE_FEATURES:
            raise ValueError(f"model.image_features={self.image_features!r}; choose one of {IMAGE_FEATURES}")
        if base["model_type"] == "t2v" and self.image_features in ("clip", "zeros"):
            raise ValueError(
                f"model.image_features={self.image_features!r}: flavor {self.flavor!r} (t2v) has no "
                "CLIP image branch; leave it at auto"
            )

    @property
    def image_feature_mode(self) -> str:
        """ "clip", "zeros" or "none" (no CLIP branch in this flavor)."""
        if flavor_config(self.flavor, **self.overrides)["model_type"] not in ("i2v", "flf2v"):  # t2v, ti2v
            return "none"
        return "clip" if self.image_features == "auto" else self.image_features


@dataclass
class Conventions:
    """How an exported network must be called (``network.json`` "conventions"), typed.

    ``clean_first_frame``: latent frame 0 is given clean at t = 0 and only frames 1.. are denoised;
    ``schedule_shift`` / ``num_frames`` / ``height`` / ``width``: what the teacher was trained on;
    ``streaming``: a causal student's chunking, steps and shift (JSON key "causal"), None for a teacher."""

    clean_first_frame: bool = False
    schedule_shift: Optional[float] = None
    num_frames: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    streaming: Optional[StreamConfig] = None

    def to_dict(self) -> dict:
        out = {
            k: getattr(self, k)
            for k in ("clean_first_frame", "schedule_shift", "num_frames", "height", "width")
            if getattr(self, k) is not None
        }
        if self.streaming is not None:
            out["causal"] = self.streaming.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "conventions") -> "Conventions":
        d = dict(d)
        known = {"clean_first_frame", "schedule_shift", "num_frames", "height", "width", "causal"}
        if set(d) - known:
            raise ValueError(f"{source}: unknown conventions {sorted(set(d) - known)}; known: {sorted(known)}")
        causal = d.pop("causal", None)
        return cls(**d, streaming=StreamConfig.from_dict(causal, source=f"{source}.causal") if causal else None)

    @classmethod
    def recorded(cls, meta: dict, directory: str | Path) -> "Conventions":
        """What an export's ``network.json`` (read as ``meta``, from ``directory``) records."""
        return cls.from_dict(meta.get("conventions", {}), source=str(Path(directory) / "network.json"))

    def stream_config(self, source: str, **changes) -> StreamConfig:
        """How this exported student streams (``changes`` as ``StreamConfig.replace``); a one-line error
        naming ``source`` (the export) when it records none (a teacher export)."""
        if self.streaming is None:
            raise ValueError(
                f"{source}/network.json records no streaming configuration (conventions.causal): a teacher? "
                "export a student with the ODE-init or DMD stage"
            )
        return self.streaming.replace(**changes)


def pad_text(emb: torch.Tensor, length: int) -> torch.Tensor:
    """[B, L, E] -> [B, length, E]: zero-pad or truncate on tokens (zero rows are Wan's padding)."""
    if emb.shape[1] >= length:
        return emb[:, :length]
    return torch.nn.functional.pad(emb, (0, 0, 0, length - emb.shape[1]))


class MotionWan(nn.Module):
    """DiT + TrackEncoder head + optional TextProjection, one trainable module."""

    def __init__(
        self,
        dit: WanModel,
        *,
        layout: str,
        track_encoder: TrackEncoder | None,
        text_proj: TextProjection | None,
        required_in_dim: int | None = None,
    ):
        super().__init__()
        self.dit, self.layout = dit, layout
        self.required_in_dim = required_in_dim or dit.in_dim  # in_dim the layout needs
        # how the network was trained to be called (save_network writes them to network.json;
        # load_network restores them)
        self.conventions = Conventions()
        self.track_encoder = track_encoder
        self.text_proj = text_proj

    @property
    def gradient_checkpointing(self) -> bool:
        return self.dit.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        self.dit.gradient_checkpointing = bool(value)

    @property
    def latent_channels(self) -> int:
        """Channels of the latents this network denoises (the DiT's out_dim)."""
        return self.dit.out_dim

    @property
    def image_in_latent(self) -> bool:
        """Whether the first frame enters as clean latent frame 0 of x (ti2v) rather than as channels of y."""
        return self.layout in IMAGE_IN_LATENT

    @property
    def track_embed_dim(self) -> int:
        return self.track_encoder.embed_dim if self.track_encoder is not None else TRACK_EMBED_DIM

    @property
    def track_splat(self) -> str:
        """How this network's tracks are written on the latent grid (``encode_motion(..., splat=)``)."""
        return self.track_encoder.splat if self.track_encoder is not None else "nearest"

    @property
    def track_convention(self) -> str:
        """How this network's whole track encoding is done (``encode_motion(..., convention=)``)."""
        return self.track_encoder.convention if self.track_encoder is not None else "trackstream"

    @property
    def track_id_range(self) -> int:
        """The range this network's track IDs are drawn from (``models.tracks.sample_track_ids(id_range=)``)."""
        return self.track_encoder.id_range if self.track_encoder is not None else DEFAULT_ID_RANGE

    @torch.no_grad()
    def init_weights(self) -> None:
        """Fresh initialisation of every part (after ``to_empty`` of a meta-built module)."""
        self.dit.init_weights()
        if self.track_encoder is not None:
            self.track_encoder.head.proj.reset_parameters()
        if self.text_proj is not None:
            self.text_proj.proj.reset_parameters()

    def project_text(self, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Frozen-encoder output [B, L, E] -> DiT context [B, min(L, text_len), text_dim]."""
        lengths = lengths.clamp(max=self.dit.text_len)
        text = pad_text(text, min(text.shape[1], self.dit.text_len))
        if self.text_proj is not None:
            return self.text_proj(text, lengths)
        keep = torch.arange(text.shape[1], device=text.device)[None, :] < lengths.to(text.device)[:, None]
        return text * keep[..., None].to(text.dtype)

    def motion_channels(self, motion: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        """c_m [B, D, T, h, w] (or None = empty motion) -> track channels [B, C, F, h, w]."""
        if self.track_encoder is None:
            if motion is not None:
                raise ValueError("this network has no track head (model.track_channels=0) but got motion")
            return None
        if motion is None:
            B, _, F, h, w = like.shape
            return like.new_zeros(B, self.track_encoder.out_channels, F, h, w)
        return self.track_encoder.head(motion)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        *,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        image: torch.Tensor | None = None,
        motion: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        **dit_kwargs,
    ) -> torch.Tensor:
        """Velocity [B, 16, F, h, w] float32. ``image_features`` [B, 257, 1280]: CLIP tokens of the
        first frame for flavors with the I2V image branch (``needs_image_features``).
        ``dit_kwargs`` go to ``WanModel.forward`` (``attention=``/``frame_offset=`` for the causal student)."""
        context = self.project_text(text, text_lengths)
        y = compose_condition(self.layout, first_frame=image, track=self.motion_channels(motion, x))
        return self.dit(x, t, context, clip_fea=image_features, y=y, **dit_kwargs)

    @property
    def needs_image_features(self) -> bool:
        """Whether the DiT has the I2V image branch (img_emb, k_img / v_img): it needs CLIP tokens."""
        return hasattr(self.dit, "img_emb")


def latent_channels(flavor: str, overrides: dict | None = None) -> int:
    """Latent channels a flavor denoises (its out_dim): 16 for Wan 2.1, 48 for Wan 2.2 TI2V-5B."""
    return int(flavor_config(flavor, **(overrides or {}))["out_dim"])


def build_motion_wan(cfg: ModelConfig, *, text_encoder_dim: int, device: str | torch.device | None = None) -> MotionWan:
    """Build from a config. Real flavors default to ``meta`` (materialise after sharding with
    ``to_empty`` + :func:`initialise`); ``tiny*`` flavors build (randomly initialised) on CPU."""
    base = flavor_config(cfg.flavor, **cfg.overrides)  # validates the flavor and the override names
    c = int(base["out_dim"])
    in_dim = c + condition_channels(cfg.layout, cfg.track_channels, latent_channels=c)
    if device is None:
        device = "cpu" if cfg.flavor.startswith("tiny") else "meta"
    dit = build_wan(cfg.flavor, device=device, **{**cfg.overrides, "in_dim": in_dim})
    text_dim = base["text_dim"]
    with torch.device(device):
        tracks = (
            TrackEncoder(
                cfg.track_channels,
                embed_dim=cfg.track_embed_dim,
                splat=cfg.track_splat,
                bias=cfg.track_bias,
                convention=cfg.track_convention,
            )
            if cfg.track_channels
            else None
        )
        proj = TextProjection(text_encoder_dim, text_dim) if text_encoder_dim != text_dim else None
    return MotionWan(dit, layout=cfg.layout, track_encoder=tracks, text_proj=proj)


def _pad_patch_embedding(sd: dict[str, torch.Tensor], in_dim: int, source: str) -> dict[str, torch.Tensor]:
    """Grow a base checkpoint's patch embedding to ``in_dim`` input channels with ZERO weights
    appended (``models.channel_layouts.expand_patch_embedding`` semantics): the grown model starts
    exactly as the base model, whatever the new track channels carry."""
    w = sd["patch_embedding.weight"]  # [dim, C_in, pt, ph, pw]
    if w.shape[1] > in_dim:
        raise ValueError(
            f"{source} has {w.shape[1]} input channels, more than the {in_dim} this layout "
            "needs: check model.layout / model.track_channels against the checkpoint"
        )
    if w.shape[1] < in_dim:
        sd = dict(sd)
        sd["patch_embedding.weight"] = torch.cat([w, w.new_zeros(w.shape[0], in_dim - w.shape[1], *w.shape[2:])], dim=1)
    return sd


def read_init(path: str, in_dim: int, subkey: str | None = None) -> dict[str, torch.Tensor]:
    """Full state dict (MotionWan keys) to start from: an exported network folder (DiT + heads,
    e.g. the stage-1 teacher for the fine-tune stage), a FastVideo WanTrack bundle (DiT + folded track head), a Wan checkpoint (DiT only; ``subkey``: the
    entry of a training ``.pt`` such as Self-Forcing's ``generator_ema``), or a folder written by
    ``models.wan_export`` (the DiT plus its side file of heads)."""
    from trackstream.models.formats.checkpoint import SIDE_HEADS, read_state_dict
    from trackstream.models.formats.files import read_torch_file
    from trackstream.models.formats.wan_formats import to_official
    from trackstream.models.formats.wantrack import find_wantrack

    folder = Path(path)
    if subkey is None and not (folder / "network.json").is_file() and find_wantrack(folder) is not None:
        net_sd = load_wantrack(folder).state_dict()  # FastVideo's bundle: its DiT and its folded track head
        dit = _pad_patch_embedding({k[4:]: v for k, v in net_sd.items() if k.startswith("dit.")}, in_dim, path)
        return {
            **{f"dit.{k}": v for k, v in dit.items()},
            **{k: v for k, v in net_sd.items() if not k.startswith("dit.")},
        }
    if (folder / "network.json").is_file():
        raw, _ = read_state_dict(folder / "dit", fix=EXPORT_FIX)
        heads = read_torch_file(folder / "heads.pt", fix=EXPORT_FIX)
    else:
        raw, heads = read_state_dict(path, subkey=subkey)[0], {}
        if (folder / SIDE_HEADS).is_file():
            heads = read_torch_file(folder / SIDE_HEADS, fix=EXPORT_FIX)
    dit, _ = to_official(raw)
    dit = _pad_patch_embedding(dit, in_dim, path)
    return {**{f"dit.{k}": v for k, v in dit.items()}, **heads}


# ModelConfig fields written to network.json only where they differ from these defaults
QUIET_DEFAULTS = {"track_convention": "trackstream", "track_bias": False, "image_processor": None}

TEXT_ENCODER_DIMS = {"minilm": 384, "all-minilm-l6-v2": 384, "umt5": 4096, "umt5-xxl": 4096}  # for meta builds


# ----------------------------------------------------------------------------- export / load

EXPORT_FILES = ("network.json", "dit", "heads.pt")
# the fix for an export folder whose files do not parse: the stage that exported it writes it again
EXPORT_FIX = (
    "export it again (re-run the stage that wrote it: it resumes from its last checkpoint and re-exports) "
    "or copy the folder again (the shipped ones: git checkout assets/)"
)


def save_network(
    state_dict: dict[str, torch.Tensor],
    directory: Path,
    *,
    model_cfg: dict,
    text_encoder_dim: int,
    ema: bool,
    conventions: "Conventions | dict | None" = None,
    max_shard_bytes: int | None = None,
    codec: dict | None = None,
) -> Path:
    """Write a full MotionWan state dict as ``<dir>/dit`` (official Wan format, loadable by
    ``models.wan_io.load_wan``; sharded with an index above ``max_shard_bytes``), ``<dir>/heads.pt``
    (track head + text projection) and ``<dir>/network.json`` (config, plus ``conventions``: how the
    network must be called; ``codec``: {"name", "checkpoint"} of its latent space, for a folder with no run around
    it to record one). Paths it names are written relative to the folder (``models.network`` reads them so). The
    files keep the state dict's dtype (a release may be bf16)."""
    import json

    from trackstream.models.wan_io import save_wan

    directory = Path(directory)
    net = build_motion_wan(ModelConfig(**model_cfg), text_encoder_dim=text_encoder_dim, device="meta")
    net.load_state_dict(state_dict, strict=True, assign=True)
    directory.mkdir(parents=True, exist_ok=True)
    save_wan(net.dit, directory / "dit", max_shard_bytes=max_shard_bytes)
    heads = {k: v for k, v in state_dict.items() if not k.startswith("dit.")}
    torch.save(heads, directory / "heads.pt")
    conv = conventions if isinstance(conventions, Conventions) else Conventions.from_dict(conventions or {})
    model_cfg = _relative_paths(model_cfg, directory)
    # the folder holds the whole network (an adapter already merged): where its training started is a path on
    # the machine that trained it, recorded by the run's config.yaml, and would only mislead a copy of the folder
    model_cfg = {**model_cfg, "init_from": None, "adapter": None}
    # fields a network of ours leaves at their defaults are left out, so its network.json reads as before they existed
    model_cfg = {k: v for k, v in model_cfg.items() if k not in QUIET_DEFAULTS or v != QUIET_DEFAULTS[k]}
    meta = {"model": model_cfg, "text_encoder_dim": text_encoder_dim, "ema": bool(ema), "conventions": conv.to_dict()}
    if codec is not None:
        path = Path(codec["checkpoint"])
        meta["codec"] = {"name": codec["name"], "checkpoint": os.path.relpath(path.resolve(), directory.resolve())}
    if any(model_cfg.get(k) for k in PATH_FIELDS) or codec is not None:  # where relative paths resolve when moved alone
        meta["written_at"] = str(directory.resolve())
    (directory / "network.json").write_text(json.dumps(meta, indent=2, default=str))
    return directory


# the model fields that name a folder or file on disk: written relative to the export, read relative to it
PATH_FIELDS = ("text_encoder_path", "image_encoder_path", "image_processor")


def _relative_paths(model_cfg: dict, directory: Path) -> dict:
    """``model_cfg`` with the encoder paths that exist here relative to the export ``directory``: the export and
    the folders it names (a bundle's umT5 and CLIP) still go together when both are moved."""
    out = dict(model_cfg)
    for key in PATH_FIELDS:
        value = out.get(key)
        if value and Path(value).exists():
            out[key] = os.path.relpath(Path(value).resolve(), directory.resolve())
    return out


def _resolved_paths(meta: dict, directory: Path) -> dict:
    """network.json's relative encoder paths made whole: relative to the folder it is in, else to where it was
    written (``written_at``: the export was moved without them); absolute ones as they are."""
    model = dict(meta["model"])
    for key in PATH_FIELDS:
        value = model.get(key)
        if not value or Path(value).is_absolute():
            continue
        here = directory / value
        there = Path(meta["written_at"]) / value if meta.get("written_at") else None
        model[key] = str(
            os.path.normpath(there if there is not None and not here.exists() and there.exists() else here)
        )
    return {**meta, "model": model}


def is_network_folder(path: str | Path) -> bool:
    """Whether ``path`` is a network every command takes: an exported network folder (``network.json``) or a
    FastVideo WanTrack bundle (recognised by its tensors, ``models.formats.wantrack.find_wantrack``)."""
    from trackstream.models.formats.wantrack import find_wantrack

    return (Path(path) / "network.json").is_file() or find_wantrack(path) is not None


def read_network_json(directory: str | Path) -> dict:
    """An export's ``network.json``, checked: valid JSON with ``model`` (a valid ModelConfig) and
    ``text_encoder_dim``; anything else is a one-line ValueError naming the file and the fix. A FastVideo
    WanTrack bundle (``models.formats.wantrack``) has its equivalent derived from its own files."""
    from trackstream.models.formats.files import one_line, read_json_file
    from trackstream.models.formats.wantrack import find_wantrack, wantrack_network_json

    path = Path(directory) / "network.json"
    if not path.is_file() and find_wantrack(directory) is not None:
        return wantrack_network_json(directory)  # FastVideo's bundle, described from its own files
    meta = read_json_file(path, fix=EXPORT_FIX, require=("model", "text_encoder_dim"))
    try:
        ModelConfig(**meta["model"])
        int(meta["text_encoder_dim"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {one_line(err)}; {EXPORT_FIX}") from None
    return _resolved_paths(meta, Path(directory))


def load_network(directory: str | Path, *, device: str | torch.device = "cpu") -> MotionWan:
    """Rebuild an exported network (the frozen teacher of the distillation stages loads this way), or a
    FastVideo WanTrack bundle (``load_wantrack``)."""
    from trackstream.models.formats.checkpoint import read_state_dict
    from trackstream.models.formats.files import check_shipped, read_torch_file
    from trackstream.models.formats.wantrack import find_wantrack
    from trackstream.models.wan_io import load_into

    directory = Path(directory)
    if not (directory / "network.json").is_file() and find_wantrack(directory) is not None:
        return load_wantrack(directory, device=device)
    missing = [f for f in EXPORT_FILES if not (directory / f).exists()]
    if missing:
        raise ValueError(
            f"{directory} is not an exported network (missing {missing}); see trainer.weights.export_network"
        )
    check_shipped(directory)  # a shipped release folder's files must match its manifest (once per process)
    meta = read_network_json(directory)
    net = build_motion_wan(ModelConfig(**meta["model"]), text_encoder_dim=int(meta["text_encoder_dim"]), device="meta")
    sd, _ = read_state_dict(directory / "dit", fix=EXPORT_FIX)
    load_into(net.dit, sd, strict=True, source=str(directory / "dit"))
    heads = read_torch_file(directory / "heads.pt", fix=EXPORT_FIX)
    own = {k for k in net.state_dict() if not k.startswith("dit.")}
    if not isinstance(heads, dict) or set(heads) != own:
        raise ValueError(f"{directory / 'heads.pt'} keys {sorted(heads)} do not match the network's {sorted(own)}")
    net.load_state_dict(heads, strict=False, assign=True)
    net.conventions = Conventions.recorded(meta, directory)
    # a release stored in bf16 (half the bytes) comes back in float32, as training wrote every other
    # export: callers cast for inference themselves (cast_for_inference), and training steps in float32
    return net.float().to(device)


def load_wantrack(path: str | Path, *, device: str | torch.device = "cpu") -> MotionWan:
    """A FastVideo WanTrack bundle (``models.formats.wantrack``) as a float32 ``MotionWan``: layout ``wan_i2v``,
    umT5 text at the DiT's text_dim, the track head of convention ``fastvideo`` with their embedding width,
    channels and biases (their two convs folded into one), ``conventions`` those of ``wantrack_network_json``."""
    from trackstream.models.formats.files import one_line
    from trackstream.models.formats.wantrack import bundle_root, fold_track_convs, read_wantrack, wantrack_network_json
    from trackstream.models.wan_io import load_into

    meta = wantrack_network_json(path)
    kwargs, dit_sd, track, weights = read_wantrack(path)
    net = build_motion_wan(ModelConfig(**meta["model"]), text_encoder_dim=meta["text_encoder_dim"], device="meta")
    assert net.text_proj is None and net.dit.in_dim == kwargs["in_dim"], "the config derived from the bundle"
    try:
        load_into(net.dit, dit_sd, strict=True, source=str(weights))
    except ValueError as err:
        raise ValueError(one_line(err, limit=400)) from None
    net.track_encoder.head.load_state_dict(fold_track_convs(track, str(weights)), strict=True, assign=True)
    net.conventions = Conventions.from_dict(meta["conventions"], source=str(bundle_root(Path(path), weights.parent)))
    return net.float().to(device)
