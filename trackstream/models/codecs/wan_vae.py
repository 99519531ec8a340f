"""Wan 2.1 VAE behind ``VideoCodec``: diffusers' ``AutoencoderKLWan`` plus the latent mean/std.

Loads the official ``Wan2.1_VAE.pth`` (keys renamed here, then a strict load) or a diffusers
folder. The official and diffusers modules are numerically the same network; only the names
differ:

    official                                   diffusers
    conv1 / conv2                              quant_conv / post_quant_conv
    {enc,dec}oder.conv1                        {enc,dec}oder.conv_in
    {enc,dec}oder.middle.{0,1,2}               mid_block.{resnets.0, attentions.0, resnets.1}
    {enc,dec}oder.head.{0,2}                   norm_out / conv_out
    encoder.downsamples.i                      encoder.down_blocks.i          (same flat index)
    decoder.upsamples.i                        decoder.up_blocks.b.{resnets.j | upsamplers.0}
    residual.{0,2,3,6} / shortcut (res block)  norm1 / conv1 / norm2 / conv2 / conv_shortcut

The decoder's flat ``upsamples`` list holds, per level, ``num_res_blocks + 1`` residual blocks
and then (except on the last level) one resample, so index i sits at level i // (nrb + 2).

Streaming encode is diffusers' own ``_encode`` loop made resumable: the encoder runs on frame 0 alone,
then on each group of 4 frames, every causal conv carrying its last 2 input frames (and each temporal
downsampler its last frame) from group to group; that cache is the explicit ``WanEncodeState``. Through
it frame 0 reaches every later latent (the receptive field is unbounded), so a chunked encode is the
only exact way to extend a clip's latents.

Streaming decode uses diffusers' own per-conv feature cache (the last 2 input frames of every
causal conv, "Rep" marking the first latent of a temporal upsampler), which the full decode also
runs one latent at a time; we keep that cache list in an explicit state instead of on the module.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Mapping

import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanRMS_norm, patchify, unpatchify

from .base import VideoCodec, load_state_dict_strict, read_state_dict_file

__all__ = [
    "wan_vae_config_from_state_dict",
    "WAN21_LATENTS_MEAN",
    "WAN21_LATENTS_STD",
    "WanVAEConfig",
    "WanDecodeState",
    "WanEncodeState",
    "WanVAE",
    "official_to_diffusers_key",
    "diffusers_to_official_key",
    "convert_official_to_diffusers",
    "convert_diffusers_to_official",
    "RES_OFFICIAL_TO_DIFFUSERS",
    "RES_DIFFUSERS_TO_OFFICIAL",
    "rename_inner",
]

# Per-channel statistics of Wan 2.1 VAE latents (mu), from the official code (§5).
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


def check_vae_config(cfg, layout: str) -> None:
    """The checks both Wan VAE configs share: 4 levels, 2 temporal downsamplings, statistics of z_dim."""
    name = type(cfg).__name__
    if len(cfg.dim_mult) != 4 or list(cfg.temperal_downsample).count(True) != 2:
        raise ValueError(
            f"{name}: dim_mult={cfg.dim_mult} must have 4 levels and temperal_downsample="
            f"{cfg.temperal_downsample} exactly two True entries ({layout})"
        )
    for field_name in ("latents_mean", "latents_std"):
        value = getattr(cfg, field_name)
        if value is not None and len(value) != cfg.z_dim:
            raise ValueError(f"{name}.{field_name} has {len(value)} entries; it needs z_dim={cfg.z_dim}")


def latent_statistics(cfg, mean: tuple, std: tuple) -> tuple[tuple, tuple]:
    """The config's latent mean/std, else the release's when z_dim matches it, else zeros/ones
    (small random test configs have no meaningful statistics)."""
    released = cfg.z_dim == len(mean)
    return (
        cfg.latents_mean if cfg.latents_mean is not None else mean if released else (0.0,) * cfg.z_dim,
        cfg.latents_std if cfg.latents_std is not None else std if released else (1.0,) * cfg.z_dim,
    )


class NarrowRMSNorm(WanRMS_norm):
    """diffusers' ``WanRMS_norm`` with the channel norm as a sum of squares on CPU: torch's CPU vector norm over a
    short, strided channel dim (the 2-8 channels of a rehearsal's VAE) is many times slower than ``x * rsqrt(sum
    x^2)``, and was the largest single cost of a CPU rehearsal. The same function (``F.normalize``'s eps); other devices and
    dtypes, and the release's 96-384 channels, keep diffusers' forward."""

    WIDEST = 64  # channels up to which the sum of squares is the faster on CPU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32:
            return super().forward(x)
        dim = 1 if self.channel_first else -1
        normalized = x * torch.rsqrt(x.square().sum(dim, keepdim=True).clamp_min(1e-24))  # F.normalize: norm >= 1e-12
        return normalized * self.scale * self.gamma + self.bias


def narrow_rms_norms(vae: AutoencoderKLWan) -> None:
    """The RMS norms of ``vae`` over at most ``NarrowRMSNorm.WIDEST`` channels become ``NarrowRMSNorm`` (in place; the
    parameters and state-dict keys stay)."""
    for m in vae.modules():
        if type(m) is WanRMS_norm and m.gamma.shape[0] <= NarrowRMSNorm.WIDEST:
            m.__class__ = NarrowRMSNorm


@dataclass(frozen=True)
class WanVAEConfig:
    """Architecture of the Wan 2.1 VAE; defaults are the released ``Wan2.1_VAE.pth``.

    latents_mean/std: None means the Wan 2.1 statistics when z_dim == 16, else zeros/ones
    (small random test configs have no meaningful statistics).
    """

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_vae_config(self, "8x spatial, 4x temporal Wan 2.1 layout")

    def diffusers_kwargs(self) -> dict:
        mean, std = latent_statistics(self, WAN21_LATENTS_MEAN, WAN21_LATENTS_STD)
        return dict(
            base_dim=self.base_dim,
            z_dim=self.z_dim,
            dim_mult=list(self.dim_mult),
            num_res_blocks=self.num_res_blocks,
            attn_scales=list(self.attn_scales),
            temperal_downsample=list(self.temperal_downsample),
            latents_mean=list(mean),
            latents_std=list(std),
        )


# ---------------------------------------------------------------------- key conversion

RES_OFFICIAL_TO_DIFFUSERS = (
    ("residual.0.", "norm1."),
    ("residual.2.", "conv1."),
    ("residual.3.", "norm2."),
    ("residual.6.", "conv2."),
    ("shortcut.", "conv_shortcut."),
)
RES_DIFFUSERS_TO_OFFICIAL = tuple((new, old) for old, new in RES_OFFICIAL_TO_DIFFUSERS)
_MID_OFFICIAL_TO_DIFFUSERS = {"0": "resnets.0", "1": "attentions.0", "2": "resnets.1"}
_MID_DIFFUSERS_TO_OFFICIAL = {v: k for k, v in _MID_OFFICIAL_TO_DIFFUSERS.items()}


def rename_inner(rest: str, table: tuple[tuple[str, str], ...]) -> str:
    for old, new in table:
        if rest.startswith(old):
            return new + rest[len(old) :]
    return rest  # resample / time_conv / attention names are the same in both formats


def official_to_diffusers_key(key: str, *, num_res_blocks: int = 2) -> str:
    """One official ``WanVAE_`` key -> its ``AutoencoderKLWan`` name (unknown keys pass through)."""
    per_level = num_res_blocks + 2  # residual blocks + 1 resample per decoder level
    if m := re.fullmatch(r"conv([12])\.(.+)", key):
        return ("quant_conv." if m[1] == "1" else "post_quant_conv.") + m[2]
    if m := re.fullmatch(r"(encoder|decoder)\.conv1\.(.+)", key):
        return f"{m[1]}.conv_in.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.middle\.([012])\.(.+)", key):
        return f"{m[1]}.mid_block.{_MID_OFFICIAL_TO_DIFFUSERS[m[2]]}.{rename_inner(m[3], RES_OFFICIAL_TO_DIFFUSERS)}"
    if m := re.fullmatch(r"(encoder|decoder)\.head\.([02])\.(.+)", key):
        return f"{m[1]}.{'norm_out' if m[2] == '0' else 'conv_out'}.{m[3]}"
    if m := re.fullmatch(r"encoder\.downsamples\.(\d+)\.(.+)", key):
        return f"encoder.down_blocks.{m[1]}.{rename_inner(m[2], RES_OFFICIAL_TO_DIFFUSERS)}"
    if m := re.fullmatch(r"decoder\.upsamples\.(\d+)\.(.+)", key):
        level, j = divmod(int(m[1]), per_level)
        inner = rename_inner(m[2], RES_OFFICIAL_TO_DIFFUSERS)
        if j == num_res_blocks + 1:
            return f"decoder.up_blocks.{level}.upsamplers.0.{inner}"
        return f"decoder.up_blocks.{level}.resnets.{j}.{inner}"
    return key


def diffusers_to_official_key(key: str, *, num_res_blocks: int = 2) -> str:
    """Inverse of :func:`official_to_diffusers_key`."""
    per_level = num_res_blocks + 2
    if m := re.fullmatch(r"(post_)?quant_conv\.(.+)", key):
        return ("conv2." if m[1] else "conv1.") + m[2]
    if m := re.fullmatch(r"(encoder|decoder)\.conv_in\.(.+)", key):
        return f"{m[1]}.conv1.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.(resnets\.[01]|attentions\.0)\.(.+)", key):
        return f"{m[1]}.middle.{_MID_DIFFUSERS_TO_OFFICIAL[m[2]]}.{rename_inner(m[3], RES_DIFFUSERS_TO_OFFICIAL)}"
    if m := re.fullmatch(r"(encoder|decoder)\.(norm_out|conv_out)\.(.+)", key):
        return f"{m[1]}.head.{'0' if m[2] == 'norm_out' else '2'}.{m[3]}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(.+)", key):
        return f"encoder.downsamples.{m[1]}.{rename_inner(m[2], RES_DIFFUSERS_TO_OFFICIAL)}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        index = int(m[1]) * per_level + int(m[2])
        return f"decoder.upsamples.{index}.{rename_inner(m[3], RES_DIFFUSERS_TO_OFFICIAL)}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        return f"decoder.upsamples.{int(m[1]) * per_level + num_res_blocks + 1}.{m[2]}"
    return key


def convert_official_to_diffusers(state_dict: dict, *, num_res_blocks: int = 2) -> dict:
    """Rename an official ``Wan2.1_VAE.pth`` state dict for ``AutoencoderKLWan`` (tensors untouched)."""
    out = {official_to_diffusers_key(k, num_res_blocks=num_res_blocks): v for k, v in state_dict.items()}
    assert len(out) == len(state_dict), "two official keys renamed to the same diffusers key"
    return out


def convert_diffusers_to_official(state_dict: dict, *, num_res_blocks: int = 2) -> dict:
    """Rename an ``AutoencoderKLWan`` state dict to the official layout (writes Wan2.1_VAE.pth files)."""
    out = {diffusers_to_official_key(k, num_res_blocks=num_res_blocks): v for k, v in state_dict.items()}
    assert len(out) == len(state_dict), "two diffusers keys renamed to the same official key"
    return out


# ---------------------------------------------------------------------- the codec


@dataclass(frozen=True)
class WanDecodeState:
    """Streaming state: one entry per causal conv of the decoder (None = not reached yet,
    "Rep" = temporal upsampler after the first latent, else a tensor of its last <= 2 input
    frames), and whether the stream has started (the first latent gives 1 frame, later ones 4)."""

    feat_cache: tuple = field(default_factory=tuple)
    started: bool = False


@dataclass(frozen=True)
class WanEncodeState:
    """Streaming encode state: one entry per causal conv of the encoder (None = not reached yet, else a
    tensor of its last <= 2 input frames; a temporal downsampler keeps its last frame), and whether the
    stream has started (the first group is frame 0 alone, later ones 4 frames)."""

    feat_cache: tuple = field(default_factory=tuple)
    started: bool = False


def wan_vae_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> "WanVAEConfig":
    """The widths of an official-layout VAE state dict (first conv -> ``base_dim``, the latent 1x1 conv
    -> ``z_dim``); the block structure is the released one (a different one fails the strict load)."""
    return WanVAEConfig(base_dim=int(sd["encoder.conv1.weight"].shape[0]), z_dim=int(sd["conv2.weight"].shape[0]))


class WanVAE(VideoCodec):
    """Wan 2.1 VAE: video [B, 3, 1+4k, H, W] in [-1, 1] <-> normalised latents [B, 16, 1+k, H/8, W/8].

    Any ``AutoencoderKLWan`` runs through it: the factors come from its config, so the Wan 2.2 VAE
    (``wan22_vae.Wan22VAE``: 48 channels, pixel patchify 2, 16x spatial) only adds its own key layout.
    """

    def __init__(self, vae: AutoencoderKLWan):
        super().__init__()
        narrow_rms_norms(vae)
        self.vae = vae
        cfg = vae.config
        self.latent_channels = int(cfg.z_dim)
        # Older diffusers config.json files (Wan 2.1) carry neither field: the defaults are 8 and 4.
        self.spatial_factor = int(cfg.get("scale_factor_spatial") or 8)
        self.temporal_factor = int(cfg.get("scale_factor_temporal") or 4)
        self.patch_size = int(cfg.get("patch_size") or 1)  # pixel (un)patchify around the network (2.2: 2)
        self.num_res_blocks = int(cfg.num_res_blocks)
        for name in ("latents_mean", "latents_std"):
            value = getattr(cfg, name)
            if value is None or len(value) != self.latent_channels:
                raise ValueError(
                    f"AutoencoderKLWan config {name} has {None if value is None else len(value)} entries; it needs "
                    f"z_dim={self.latent_channels} (set {name} in the vae config.json)"
                )
        # Non-persistent: they belong to the config (saved with save_pretrained), not to the weights.
        shape = (1, self.latent_channels, 1, 1, 1)
        self.register_buffer("latents_mean", torch.tensor(cfg.latents_mean).view(shape), persistent=False)
        self.register_buffer("latents_std", torch.tensor(cfg.latents_std).view(shape), persistent=False)
        self._num_decoder_convs = sum(isinstance(m, WanCausalConv3d) for m in vae.decoder.modules())
        self._num_encoder_convs = sum(isinstance(m, WanCausalConv3d) for m in vae.encoder.modules())

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, config: WanVAEConfig | None = None) -> "WanVAE":
        """Randomly initialised (tests, benchmarks of the architecture)."""
        return cls(AutoencoderKLWan(**(config or WanVAEConfig()).diffusers_kwargs()))

    @classmethod
    def from_official_checkpoint(cls, path: str, config: WanVAEConfig | None = None) -> "WanVAE":
        """Load the official ``Wan2.1_VAE.pth`` (or a file in its key layout) strictly. Without
        ``config`` the widths (``base_dim``, ``z_dim``) are read off the file; the block structure is
        the released one."""
        raw = read_state_dict_file(path)
        config = config or wan_vae_config_from_state_dict(raw)
        state = convert_official_to_diffusers(raw, num_res_blocks=config.num_res_blocks)
        # Built on meta and filled with assign=True: no 127M-parameter random init to throw away.
        with torch.device("meta"):
            vae = AutoencoderKLWan(**config.diffusers_kwargs())
        load_state_dict_strict(vae, state, source=str(path), assign=True)
        return cls(vae)

    @classmethod
    def from_pretrained(cls, path: str, *, subfolder: str | None = None) -> "WanVAE":
        """Load a diffusers folder (``config.json`` + weights); a pipeline folder needs subfolder="vae"."""
        if subfolder is None and not os.path.isfile(os.path.join(path, "config.json")):
            if os.path.isfile(os.path.join(path, "vae", "config.json")):
                subfolder = "vae"
        return cls(AutoencoderKLWan.from_pretrained(path, subfolder=subfolder))

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under official ``Wan2.1_VAE.pth`` names (``torch.save`` it to write such a file)."""
        return convert_diffusers_to_official(self.vae.state_dict(), num_res_blocks=self.num_res_blocks)

    # ------------------------------------------------------------------ latent normalisation

    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        return ((mu.float() - self.latents_mean) / self.latents_std).to(mu.dtype)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z.float() * self.latents_std + self.latents_mean).to(z.dtype)

    # ------------------------------------------------------------------ VideoCodec

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        self.check_video(video)
        mu = self.vae.encode(video.to(self.vae.dtype)).latent_dist.mode()  # [B, C, 1+k, H/8, W/8]
        return self.normalize(mu)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.check_latents(latents)
        # diffusers decodes latent by latent with its own cache and clamps to [-1, 1].
        return self.vae.decode(self.denormalize(latents).to(self.vae.dtype)).sample

    def init_encode_state(self) -> WanEncodeState:
        return WanEncodeState(feat_cache=(None,) * self._num_encoder_convs, started=False)

    def encode_chunk(self, video: torch.Tensor, state: WanEncodeState) -> tuple[torch.Tensor, WanEncodeState]:
        self.check_encode_chunk(video, started=state.started)
        # Shallow copy: diffusers' encoder only replaces cache entries with fresh clones, never writes into one.
        cache = list(state.feat_cache)
        x = video.to(self.vae.dtype)
        if self.patch_size > 1:
            x = patchify(x, patch_size=self.patch_size)  # [B, 3 p^2, T, H / p, W / p]
        # diffusers' grouping: frame 0 alone, then 4 frames per latent (a temporal downsampler's first call
        # only stores its input, so no group boundary may move)
        tf, first = self.temporal_factor, 0 if state.started else 1
        groups = ([] if state.started else [(0, 1)]) + [(a, a + tf) for a in range(first, x.shape[2], tf)]
        out = [self.vae.encoder(x[:, :, a:b], feat_cache=cache, feat_idx=[0]) for a, b in groups]
        moments = self.vae.quant_conv(torch.cat(out, dim=2))  # 1x1x1: per frame; [B, 2 C, F_chunk, h, w]
        mu = moments[:, : self.latent_channels]  # the posterior's mode, as ``encode``
        return self.normalize(mu), WanEncodeState(feat_cache=tuple(cache), started=True)

    def init_decode_state(self) -> WanDecodeState:
        return WanDecodeState(feat_cache=(None,) * self._num_decoder_convs, started=False)

    def decode_chunk(self, latents: torch.Tensor, state: WanDecodeState) -> tuple[torch.Tensor, WanDecodeState]:
        self.check_latents(latents)
        # A shallow copy is enough to leave `state` untouched: diffusers only ever *replaces*
        # cache entries with freshly cloned tensors, it never writes into a cached tensor.
        cache = list(state.feat_cache)
        x = self.vae.post_quant_conv(self.denormalize(latents).to(self.vae.dtype))  # 1x1x1: per frame
        frames = []
        for i in range(x.shape[2]):
            first = not state.started and i == 0
            out = self.vae.decoder(x[:, :, i : i + 1], feat_cache=cache, feat_idx=[0], first_chunk=first)
            frames.append(out)  # [B, 3 * p * p, 1 if first else 4, H / p, W / p] (p = patch_size)
        # [B, 3 * p * p, T, H / p, W / p] -> [B, 3, T, H, W]; per pixel, so it commutes with the time concat
        video = torch.clamp(unpatchify(torch.cat(frames, dim=2), self.patch_size), -1.0, 1.0)
        return video, WanDecodeState(feat_cache=tuple(cache), started=True)
