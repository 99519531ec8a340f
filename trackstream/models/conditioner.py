"""Frozen encoders turned into network inputs: clips -> latents, first frames -> image channels or a
clean first latent, captions -> text embeddings, tracks -> the motion condition c_m (eq. 1).

Shared by training (the teacher objective, ODE pairs, DMD), the streaming engine and the
evaluations, so every stage conditions the network the same way.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from trackstream.models.channel_layouts import i2v_condition, start_image_latents
from trackstream.models.motion_wan import ModelConfig
from trackstream.models.tracks import (
    check_convention,
    fastvideo_id_embedding,
    rasterize_tracks,
    rasterize_tracks_fastvideo,
    track_id_embedding,
)
from trackstream.models.wan import CLIP_DIM, CLIP_TOKENS

__all__ = [
    "Conditioner",
    "encode_motion",
    "load_export_network",
    "load_export_codec",
    "load_export_text_encoder",
]


def encode_motion(
    tracks: torch.Tensor,
    visibility: torch.Tensor,
    ids: torch.Tensor,
    *,
    embed_dim: int,
    height: int,
    width: int,
    latent_height: int | None = None,
    splat: str = "nearest",
    convention: str = "trackstream",
) -> torch.Tensor:
    """Tracks [B, T, N, 2] + visibility [B, T, N] + IDs [B, N] -> c_m [B, D, T, h, w] (eq. 1); ``splat``:
    the network's ``track_splat`` (``models.tracks.SPLATS``); ``convention``: its ``track_convention``
    (``models.tracks.TRACK_CONVENTIONS``: FastVideo's embedding and snapping for their bundles).

    ``latent_height`` (h) sets the grid: the codec's spatial factor is ``height // h`` (Wan: 8,
    the default when it is not given)."""
    factor = 8
    if latent_height is not None:
        if height % latent_height:
            raise ValueError(f"video height {height} is not a multiple of the latent height {latent_height}")
        factor = height // latent_height
    if check_convention(convention) == "fastvideo":
        emb = fastvideo_id_embedding(ids.to(tracks.device), embed_dim)
        return rasterize_tracks_fastvideo(tracks, visibility, emb, height=height, width=width, spatial_factor=factor)
    emb = track_id_embedding(ids.to(tracks.device), embed_dim)
    return rasterize_tracks(tracks, visibility, emb, height=height, width=width, spatial_factor=factor, splat=splat)


class Conditioner:
    """Frozen encoders: clips -> latents, first frames -> image channels, captions -> text."""

    def __init__(
        self,
        *,
        codec: nn.Module,
        text_encoder,
        layout: str,
        device: torch.device,
        image_features: str = "none",
        image_encoder: nn.Module | None = None,
    ):
        if image_features not in ("none", "clip", "zeros"):
            raise ValueError(f"image_features={image_features!r}; choose none, clip or zeros")
        if image_features == "clip" and image_encoder is None:
            raise ValueError(
                "image_features='clip' needs a CLIP image encoder: set model.image_encoder_path to the "
                "CLIP .pth (or the release folder holding it), or model.image_features=zeros where the "
                "release itself feeds zeros"
            )
        self.codec, self.text_encoder, self.layout, self.device = codec, text_encoder, layout, device
        self.image_feature_mode, self.image_encoder = image_features, image_encoder
        emb, lens = text_encoder.encode([""])
        self.null_text, self.null_lengths = emb.float().to(device), lens.to(device)

    @classmethod
    def for_network(
        cls,
        model: ModelConfig,
        *,
        codec: nn.Module,
        text_encoder,
        device: torch.device,
        image_encoder: nn.Module | None = None,
        encoder_device: torch.device | None = None,
        encoder_dtype: torch.dtype | None = None,
    ) -> "Conditioner":
        """The conditioner a network of config ``model`` needs (its layout; CLIP tokens when its flavor
        has the image branch, loaded from ``model.image_encoder_path`` unless ``image_encoder`` is given,
        on ``encoder_device`` (default ``device``) in ``encoder_dtype``)."""
        mode = model.image_feature_mode
        if mode == "clip" and image_encoder is None and model.image_encoder_path:
            from trackstream.models.clip_image import load_image_encoder

            image_encoder = load_image_encoder(
                model.image_encoder_path, dtype=encoder_dtype, processor=model.image_processor
            )
            image_encoder = image_encoder.to(encoder_device or device)
        return cls(
            codec=codec,
            text_encoder=text_encoder,
            layout=model.layout,
            device=device,
            image_features=mode,
            image_encoder=image_encoder,
        )

    @torch.no_grad()
    def image_features(self, first_frame: torch.Tensor) -> torch.Tensor | None:
        """First frame [B, 3, H, W] -> CLIP tokens [B, 257, 1280] (zeros in "zeros" mode; None without the branch)."""
        if self.image_feature_mode == "none":
            return None
        if self.image_feature_mode == "zeros":
            return torch.zeros(first_frame.shape[0], CLIP_TOKENS, CLIP_DIM, device=self.device)
        return self.image_encoder(first_frame.to(self.device)).float()

    @torch.no_grad()
    def latents(self, video: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(video.to(self.device)).float()

    @torch.no_grad()
    def image(self, first_frame: torch.Tensor, *, num_frames: int) -> torch.Tensor | None:
        """First frame [B, 3, H, W] -> the layout's image channels [B, C_img, F, h, w]."""
        first_frame = first_frame.to(self.device)
        if self.layout == "wan_i2v":
            return i2v_condition(self.codec, first_frame, num_frames=num_frames).float()
        if self.layout == "fun_control":
            return start_image_latents(self.codec, first_frame, num_frames=num_frames).float()
        return None

    @torch.no_grad()
    def first_latent(self, first_frame: torch.Tensor) -> torch.Tensor:
        """First frame [B, 3, H, W] -> its clean latent [B, 16, 1, h, w] (the codec is causal, so this
        equals latent frame 0 of the whole clip's encoding)."""
        return self.codec.encode(first_frame.to(self.device)[:, :, None]).float()

    @torch.no_grad()
    def text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        emb, lens = self.text_encoder.encode(list(captions))
        return emb.float(), lens

    def encode(self, batch: dict) -> dict:
        """Fill ``latents``, ``image``, ``text_emb``/``text_len`` where missing; move to the device."""
        out = dict(batch)
        if "latents" not in out:
            out["latents"] = self.latents(out["video"])
        if "image" not in out and self.layout != "t2v":
            video = out["video"]
            out["image"] = self.image(video[:, :, 0], num_frames=video.shape[2])
        if "text_emb" not in out:
            out["text_emb"], out["text_len"] = self.text(out["caption"])
        if "image_features" not in out and self.image_feature_mode != "none":
            out["image_features"] = self.image_features(out["video"][:, :, 0])
        for key, value in out.items():
            if torch.is_tensor(value):
                out[key] = value.to(self.device, non_blocking=True)
        return out


@torch.no_grad()
def load_export_network(directory, *, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The export's MotionWan, frozen, on ``device``; the DiT's matmul weights in ``dtype`` (Wan's fp32 parts
    stay fp32: ``WanModel.cast_for_inference``)."""
    from trackstream.models.motion_wan import load_network

    net = load_network(directory).requires_grad_(False).eval().to(device)
    if dtype != torch.float32:
        net.dit.cast_for_inference(dtype)
    return net


@torch.no_grad()
def load_export_codec(
    codec_name: str,
    codec,
    *,
    device: torch.device,
    dtype: torch.dtype,
    decoder: str | None = None,
    decoder_name: str | None = None,
) -> nn.Module:
    """The frozen codec ``codec_name`` from ``codec`` (``models.codecs.build_codec``'s checkpoint), on ``device``
    in ``dtype``; with ``decoder`` (a trained tiny decoder's file, ``decoder_name`` its codec name: default the
    TAEHV of the codec's latent space) the codec encodes and the tiny decoder decodes (``SplitCodec``)."""
    from trackstream.models.codecs import build_codec
    from trackstream.models.codecs.split import SplitCodec

    frozen = build_codec(codec_name, checkpoint=codec)
    if decoder is not None:
        name = decoder_name or ("taehv-wan2.2" if frozen.latent_channels == 48 else "taehv-wan2.1")
        frozen = SplitCodec(frozen, build_codec(name, checkpoint=decoder))
    frozen = frozen.eval().to(device)
    return frozen.to(dtype) if dtype != torch.float32 else frozen


def load_export_text_encoder(model_meta: dict, *, device: torch.device, dtype: torch.dtype, path=None):
    """The frozen text encoder a network.json's ``model`` names, from ``path`` (default: its
    ``text_encoder_path``; neither: the encoder's own default, e.g. MiniLM's bundled files)."""
    from trackstream.models.text_encoders import build_text_encoder

    path = path if path is not None else model_meta.get("text_encoder_path")
    text_encoder = build_text_encoder(model_meta["text_encoder"], **({"path": str(path)} if path else {}))
    return text_encoder.to(device=device, dtype=dtype)
