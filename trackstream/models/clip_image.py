"""CLIP ViT-H/14 image tokens for Wan I2V (the official I2V image branch: 257 tokens of 1280), via transformers' CLIP vision model.

Output: the hidden states after the first 31 of 32 blocks (the penultimate layer, Wan's
``use_31_block``) for all 257 tokens (CLS + 16x16 patches), no post-norm, no projection:
[B, 257, 1280], the ``clip_fea`` argument of ``WanModel.forward``.

Weights come from a local folder (a transformers ``CLIPVisionModel`` /
``CLIPVisionModelWithProjection`` save, e.g. laion/CLIP-ViT-H-14-laion2B-s32B-b79K or a
diffusers I2V repo's ``image_encoder/``) or from the official Wan file
``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` through ``convert_wan_clip_visual``
(its ``visual.*`` keys; the XLM-RoBERTa text tower is ignored).

Preprocessing is the official one, not CLIPImageProcessor's: bicubic resize of the whole
[-1, 1] image to 224x224 WITHOUT keeping the aspect ratio, map to [0, 1], normalise with the
CLIP mean/std. (diffusers' I2V pipeline resizes the short side and centre-crops instead.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

from trackstream.models.formats.files import read_torch_file

_CLIP_FIX = "download models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth again (or fix model.image_encoder_path)"

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "VIT_H14_CONFIG",
    "preprocess_clip_image",
    "convert_wan_clip_visual",
    "CLIPImageEncoder",
    "materialise_buffers",
    "visual_config_from_state_dict",
    "load_image_encoder",
    "load_clip_processor",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The visual tower of open-clip xlm-roberta-large-vit-huge-14 (= LAION ViT-H/14) as a
# transformers CLIPVisionConfig: exact GELU, LayerNorm eps 1e-5, 257 tokens at 224.
VIT_H14_CONFIG = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    projection_dim=1024,
)


def preprocess_clip_image(image: torch.Tensor, size: int = 224) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> [B, 3, size, size] CLIP-normalised float32 (official recipe)."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be [B, 3, H, W] in [-1, 1], got {tuple(image.shape)}")
    x = F.interpolate(image.float(), size=(size, size), mode="bicubic", align_corners=False)
    x = x * 0.5 + 0.5
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


_BLOCK_RENAMES = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.proj": "self_attn.out_proj",
    "mlp.0": "mlp.fc1",
    "mlp.2": "mlp.fc2",
}


def convert_wan_clip_visual(
    state_dict: Mapping[str, torch.Tensor], *, prefix: str = "", with_projection: bool = False
) -> dict[str, torch.Tensor]:
    """Official Wan/open-clip ``visual.*`` keys -> transformers CLIP vision keys.

    ``prefix`` is prepended to every vision-tower key ("vision_model." for models whose
    state dict nests the tower, see ``CLIPImageEncoder.from_wan_checkpoint``). The fused
    ``to_qkv`` rows split in order [q | k | v]. ``visual.head`` ([dim, proj]) becomes
    ``visual_projection.weight`` (transposed) when ``with_projection``, else it is dropped.
    Keys outside ``visual.`` (the text tower, ``log_scale``) are ignored; an unknown
    ``visual.`` key raises, so a silently unconverted weight cannot happen.
    """
    out: dict[str, torch.Tensor] = {}
    for key, val in state_dict.items():
        if not key.startswith("visual."):
            continue
        k = key[len("visual.") :]
        if k == "patch_embedding.weight":
            out[prefix + "embeddings.patch_embedding.weight"] = val
        elif k == "cls_embedding":
            out[prefix + "embeddings.class_embedding"] = val.reshape(-1)  # [1, 1, d] -> [d]
        elif k == "pos_embedding":
            out[prefix + "embeddings.position_embedding.weight"] = val.reshape(val.shape[-2], val.shape[-1])
        elif k.startswith("pre_norm."):
            out[prefix + "pre_layrnorm." + k.split(".", 1)[1]] = val
        elif k.startswith("post_norm."):
            out[prefix + "post_layernorm." + k.split(".", 1)[1]] = val
        elif k == "head":
            if with_projection:
                out["visual_projection.weight"] = val.t().contiguous()
        elif (m := re.fullmatch(r"transformer\.(\d+)\.(.+)\.(weight|bias)", k)) is not None:
            i, name, kind = m.groups()
            base = f"{prefix}encoder.layers.{i}."
            if name == "attn.to_qkv":
                q, kk, v = val.chunk(3, dim=0)  # rows [0:d] q, [d:2d] k, [2d:3d] v
                for proj, part in (("q_proj", q), ("k_proj", kk), ("v_proj", v)):
                    out[f"{base}self_attn.{proj}.{kind}"] = part.contiguous()
            elif name in _BLOCK_RENAMES:
                out[f"{base}{_BLOCK_RENAMES[name]}.{kind}"] = val
            else:
                raise ValueError(f"unknown CLIP visual key {key!r}; is this an open-clip ViT checkpoint?")
        else:
            raise ValueError(f"unknown CLIP visual key {key!r}; is this an open-clip ViT checkpoint?")
    if not out:
        raise ValueError("no 'visual.*' keys found: not an open-clip / Wan CLIP checkpoint")
    return out


def materialise_buffers(model: nn.Module) -> None:
    """Rebuild the non-persistent buffers a meta-device build leaves empty after ``assign``.

    The model is built on ``meta`` so that the 632M-parameter tower is not randomly initialised
    just to be overwritten; only ``position_ids`` (arange over token positions) is not in the
    state dict.
    """
    for mod_name, mod in model.named_modules():
        for name, buf in list(mod.named_buffers(recurse=False)):
            if not buf.is_meta:
                continue
            if name != "position_ids":
                raise ValueError(f"buffer {mod_name}.{name} is not in the checkpoint and cannot be rebuilt")
            ids = torch.arange(buf.shape[-1]).expand(buf.shape)
            mod.register_buffer(name, ids, persistent=False)


def load_clip_processor(path: str | Path):
    """A transformers ``CLIPImageProcessor`` from its folder (``preprocessor_config.json``; a diffusers pipeline's
    ``image_processor/``)."""
    import importlib.util

    import transformers

    path = Path(path)
    if not (path / "preprocessor_config.json").is_file():
        raise ValueError(
            f"model.image_processor={str(path)!r} holds no preprocessor_config.json: give a CLIPImageProcessor "
            "folder (a diffusers pipeline's image_processor/), or null for Wan's own preprocessing"
        )
    # transformers' default backend needs torchvision (FastVideo's environment has it); without it, its PIL
    # backend, which transformers would fall back to with a warning (the two differ by resampling rounding)
    pil = importlib.util.find_spec("torchvision") is None and hasattr(transformers, "CLIPImageProcessorPil")
    return (transformers.CLIPImageProcessorPil if pil else transformers.CLIPImageProcessor).from_pretrained(path)


class CLIPImageEncoder(nn.Module):
    """Frozen CLIP vision tower -> Wan ``clip_fea`` [B, 257, 1280] (penultimate hidden states).

    ``processor``: a transformers ``CLIPImageProcessor`` that prepares the pixels instead of Wan's official
    recipe (``preprocess_clip_image``), for networks whose pipeline fed CLIP that way (FastVideo's WanTrack:
    its bundle's ``image_processor/``, shortest side to 224 and a centre crop, on the 8-bit picture)."""

    def __init__(self, vision_model: CLIPVisionModel | CLIPVisionModelWithProjection, processor=None):
        super().__init__()
        self.model = vision_model.eval().requires_grad_(False)
        self.image_size = int(vision_model.config.image_size)
        self.dim = int(vision_model.config.hidden_size)
        self.processor = processor

    def pixels(self, image: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> the tower's pixel values [B, 3, S, S] float32."""
        if self.processor is None:
            return preprocess_clip_image(image, self.image_size)
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [B, 3, H, W] in [-1, 1], got {tuple(image.shape)}")
        # the processor takes pictures: 8-bit RGB [H, W, 3], as a pipeline hands it the loaded image
        rgb = ((image.detach().float().clamp(-1, 1) * 0.5 + 0.5) * 255).round().to(torch.uint8)
        pictures = list(rgb.permute(0, 2, 3, 1).cpu().numpy())
        return self.processor(images=pictures, return_tensors="pt")["pixel_values"].float()

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: torch.dtype | None = None) -> "CLIPImageEncoder":
        """A local transformers folder (config.json + weights); with or without the projection."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"CLIP folder {path} has no config.json; pass a transformers CLIP vision save")
        arch = CLIPVisionConfig.from_pretrained(path).architectures or []
        model_cls = CLIPVisionModelWithProjection if "CLIPVisionModelWithProjection" in arch else CLIPVisionModel
        return cls(model_cls.from_pretrained(path, dtype=dtype))

    @classmethod
    def from_wan_checkpoint(
        cls,
        path: str | Path,
        *,
        config: Mapping | None = None,
        dtype: torch.dtype | None = None,
    ) -> "CLIPImageEncoder":
        """The official ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (or any file
        with the same ``visual.*`` layout); ``config`` overrides ``VIT_H14_CONFIG`` (tests)."""
        sd = read_torch_file(path, fix=_CLIP_FIX, mmap=True)
        cfg = CLIPVisionConfig(**dict(VIT_H14_CONFIG, **(config or {})))
        with torch.device("meta"):
            model = CLIPVisionModel(cfg)
        # transformers may or may not nest the tower under "vision_model."; follow the model.
        prefix = "vision_model." if any(k.startswith("vision_model.") for k in model.state_dict()) else ""
        converted = convert_wan_clip_visual(sd, prefix=prefix)
        model.load_state_dict(converted, strict=True, assign=True)
        materialise_buffers(model)
        model = model.to(dtype) if dtype is not None else model
        return cls(model)

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, 3, H, W] in [-1, 1] -> [B, 257, hidden] float32 (penultimate layer)."""
        p = next(self.model.parameters())
        pixels = self.pixels(image).to(device=p.device, dtype=p.dtype)
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        # hidden_states = (embeddings after pre-LN, block 1, ..., block 32): [-2] is after 31 blocks.
        return out.hidden_states[-2].float()


def visual_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict:
    """CLIPVisionConfig fields read off an official ``visual.*`` state dict: width and patch from the
    patch embedding, image size from the position table, depth and MLP width from the blocks. The
    head count is not stored: ViT-H/14 uses 80-dim heads (1280 / 16), kept for any width."""
    w = sd["visual.patch_embedding.weight"]  # [hidden, 3, p, p]
    hidden, patch = int(w.shape[0]), int(w.shape[-1])
    n_pos = int(sd["visual.pos_embedding"].shape[-2])  # 1 + (size / p)^2
    grid = round((n_pos - 1) ** 0.5)
    if grid * grid != n_pos - 1:
        raise ValueError(f"visual.pos_embedding has {n_pos} rows: not 1 + a square grid")
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("visual.transformer."))
    head_dim = VIT_H14_CONFIG["hidden_size"] // VIT_H14_CONFIG["num_attention_heads"]
    if hidden % head_dim:
        raise ValueError(f"CLIP width {hidden} is not a multiple of ViT-H/14's head size {head_dim}")
    return dict(
        VIT_H14_CONFIG,
        hidden_size=hidden,
        patch_size=patch,
        image_size=grid * patch,
        num_hidden_layers=layers,
        intermediate_size=int(sd["visual.transformer.0.mlp.0.weight"].shape[0]),
        num_attention_heads=hidden // head_dim,
    )


def load_image_encoder(
    path: str | Path, *, dtype: torch.dtype | None = None, processor: str | Path | None = None
) -> CLIPImageEncoder:
    """The CLIP image encoder from a local path: the official Wan ``.pth`` (its shapes set the
    config), a transformers CLIP vision folder, or a Wan release folder holding the ``.pth``;
    ``processor``: a ``CLIPImageProcessor`` folder that prepares its pixels (``model.image_processor``)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"model.image_encoder_path={str(path)!r} does not exist")
    if processor is not None:
        encoder = load_image_encoder(path, dtype=dtype)
        encoder.processor = load_clip_processor(processor)
        return encoder
    if path.is_dir() and (path / "config.json").is_file() and not any(path.glob("*.pth")):
        return CLIPImageEncoder.from_pretrained(path, dtype=dtype)
    if path.is_dir():
        from trackstream.models.formats.release_folder import find_release

        path = find_release(path).require("clip", field_name="model.image_encoder_path").clip
    sd = read_torch_file(path, fix=_CLIP_FIX, mmap=True)
    return CLIPImageEncoder.from_wan_checkpoint(path, config=visual_config_from_state_dict(sd), dtype=dtype)
