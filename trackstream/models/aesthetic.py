"""The LAION aesthetic predictor: OpenAI CLIP ViT-L/14 image embedding -> linear MLP head -> one score.

This is the predictor of LAION's improved-aesthetic-predictor (``sac+logos+ava1-l14-linearMSE.pth``), the
quality reward of AR-Drag's RL stage (train/rl/objective.py). Scores are on the AVA rating scale (roughly 1..10).

* Image tower: transformers' ``CLIPVisionModelWithProjection`` (the class ``models.clip_image`` builds Wan's
  ViT-H/14 with) at ViT-L/14 sizes: width 1024, 24 blocks of 16 heads, MLP 4096, patch 14 at 224 px,
  QuickGELU (x * sigmoid(1.702 x), OpenAI's activation), LayerNorm eps 1e-5, projection 1024 -> 768
  without bias. Embedding = ln_post(CLS token) @ proj, L2-normalised before the head.
* Head: ``layers`` = Linear(768, 1024), Dropout(0.2), Linear(1024, 128), Dropout(0.2), Linear(128, 64),
  Dropout(0.1), Linear(64, 16), Linear(16, 1): no activation anywhere (the released head is linear end to
  end), so the file's keys are ``layers.{0,2,4,6,7}.{weight,bias}``; the dropouts only keep the indices.
* Weights, from local files in the formats users have:
  - a Hugging Face folder of ``openai/clip-vit-large-patch14`` (``config.json`` + ``model.safetensors``; the
    full CLIPModel or a vision-only save): its ``vision_model.*`` / ``visual_projection.weight`` keys are
    ours, the text tower is ignored;
  - an OpenAI / open_clip state dict file (``visual.conv1.weight`` ... ``visual.proj``; OpenAI's TorchScript
    ``ViT-L-14.pt`` is read through ``torch.jit.load``), converted by ``convert_openai_clip_visual``.
* Preprocessing is OpenAI's (``clip.load``): bicubic resize of the short side to 224, centre crop 224,
  CLIP mean / std. The head file is the ``.pth`` as released (a plain state dict).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from trackstream.models.clip_image import CLIP_MEAN, CLIP_STD, materialise_buffers
from trackstream.models.formats.files import read_torch_file, read_torchscript

__all__ = [
    "VIT_L14_CONFIG",
    "HEAD_KEYS",
    "AestheticPredictor",
    "AestheticHead",
    "load_aesthetic_head",
    "convert_openai_clip_visual",
    "openai_visual_config",
    "load_clip_vision",
    "load_aesthetic_predictor",
    "preprocess_openai",
]

# OpenAI ViT-L/14 as a transformers CLIPVisionConfig (heads = width / 64, as OpenAI's build_model sets them)
VIT_L14_CONFIG = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    projection_dim=768,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
HEAD_WIDTHS = (1024, 128, 64, 16, 1)
HEAD_KEYS = tuple(f"layers.{i}.{kind}" for i in (0, 2, 4, 6, 7) for kind in ("weight", "bias"))


class AestheticHead(nn.Module):
    """The head with the released layer indices (dropouts at 1, 3, 5, inert in eval mode): keys ``layers.N.*``."""

    def __init__(self, in_dim: int = 768):
        super().__init__()
        a, b, c, d, e = HEAD_WIDTHS
        self.layers = nn.Sequential(
            nn.Linear(in_dim, a),
            nn.Dropout(0.2),
            nn.Linear(a, b),
            nn.Dropout(0.2),
            nn.Linear(b, c),
            nn.Dropout(0.1),
            nn.Linear(c, d),
            nn.Linear(d, e),
        )

    @property
    def in_dim(self) -> int:
        return self.layers[0].in_features

    def forward(self, emb: torch.Tensor) -> torch.Tensor:  # [B, 768] -> [B, 1]
        return self.layers(emb)


def load_aesthetic_head(path: str | Path) -> AestheticHead:
    """The released ``.pth``: a plain state dict with exactly the keys ``layers.{0,2,4,6,7}.{weight,bias}``."""
    sd = read_torch_file(path, fix="download the improved-aesthetic-predictor head again (or fix the path)")
    if not isinstance(sd, dict) or set(sd) != set(HEAD_KEYS):
        keys = sorted(sd) if isinstance(sd, dict) else type(sd).__name__
        raise ValueError(f"{path} is not an improved-aesthetic-predictor head: keys {keys}, expected {list(HEAD_KEYS)}")
    head = AestheticHead(int(sd["layers.0.weight"].shape[1]))
    head.load_state_dict(sd, strict=True)
    return head.eval().requires_grad_(False)


_BLOCK = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}


def convert_openai_clip_visual(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI / open_clip ``visual.*`` keys -> ``CLIPVisionModelWithProjection`` keys. The fused attention
    input projection (``in_proj_weight`` [3w, w], rows q | k | v) is split; ``proj`` [w, d] becomes the
    projection's weight [d, w]. Keys outside ``visual.`` (the text tower) are ignored; an unknown
    ``visual.`` key raises, so nothing is silently left unconverted."""
    out: dict[str, torch.Tensor] = {}
    p = "vision_model."
    plain = {
        "conv1.weight": "embeddings.patch_embedding.weight",
        "class_embedding": "embeddings.class_embedding",
        "positional_embedding": "embeddings.position_embedding.weight",
    }
    for key, val in sd.items():
        if not key.startswith("visual."):
            continue
        k = key[len("visual.") :]
        if k in plain:
            out[p + plain[k]] = val
        elif k == "proj":
            out["visual_projection.weight"] = val.t().contiguous()
        elif (m := re.fullmatch(r"(ln_pre|ln_post)\.(weight|bias)", k)) is not None:
            out[p + {"ln_pre": "pre_layrnorm", "ln_post": "post_layernorm"}[m[1]] + "." + m[2]] = val
        elif (m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)", k)) is not None:
            base = f"{p}encoder.layers.{m[1]}."
            if m[2] in _BLOCK:
                out[f"{base}{_BLOCK[m[2]]}.{m[3]}"] = val
            else:
                raise ValueError(f"unknown CLIP visual key {key!r}: is this an OpenAI / open_clip ViT state dict?")
        elif (m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)", k)) is not None:
            for name, part in zip(("q_proj", "k_proj", "v_proj"), val.chunk(3, dim=0)):
                out[f"{p}encoder.layers.{m[1]}.self_attn.{name}.{m[2]}"] = part.contiguous()
        else:
            raise ValueError(f"unknown CLIP visual key {key!r}: is this an OpenAI / open_clip ViT state dict?")
    if not out:
        raise ValueError("no 'visual.*' keys: not an OpenAI / open_clip CLIP state dict")
    return out


def openai_visual_config(sd: Mapping[str, torch.Tensor]) -> dict:
    """CLIPVisionConfig fields read off an OpenAI ``visual.*`` state dict, as OpenAI's ``build_model`` does."""
    w = sd["visual.conv1.weight"]  # [width, 3, p, p]
    width, patch = int(w.shape[0]), int(w.shape[-1])
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    layers = len([k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
    return dict(
        VIT_L14_CONFIG,
        hidden_size=width,
        intermediate_size=int(sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        num_hidden_layers=layers,
        num_attention_heads=max(1, width // 64),
        image_size=grid * patch,
        patch_size=patch,
        projection_dim=int(sd["visual.proj"].shape[1]),
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict (``.pt`` / ``.pth`` / ``.bin``), or OpenAI's TorchScript archive's parameters."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            scripted = any(n.endswith("constants.pkl") for n in z.namelist())
        if scripted:
            archive = read_torchscript(path, what="OpenAI's CLIP file (ViT-L-14.pt)")
            return {k: v.float() for k, v in archive.state_dict().items()}
    sd = read_torch_file(path, fix="download the CLIP ViT-L/14 weights again (or fix the path)")
    return sd.get("state_dict", sd) if isinstance(sd, dict) else sd


def load_clip_vision(path: str | Path, *, dtype: torch.dtype | None = None) -> CLIPVisionModelWithProjection:
    """The ViT-L/14 image tower from a Hugging Face folder or an OpenAI / open_clip state dict (module docs)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"CLIP weights {str(path)!r} do not exist")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"CLIP folder {path} has no config.json: pass a Hugging Face CLIP save")
        model = CLIPVisionModelWithProjection.from_pretrained(path, dtype=dtype)
        return model.eval().requires_grad_(False)
    sd = _read_state_dict(path)
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**openai_visual_config(sd)))
    model.load_state_dict(convert_openai_clip_visual(sd), strict=True, assign=True)
    materialise_buffers(model)
    model = model.to(dtype) if dtype is not None else model
    return model.eval().requires_grad_(False)


def preprocess_openai(image: torch.Tensor, size: int = 224) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> [B, 3, size, size] CLIP-normalised: short side to ``size`` (bicubic,
    antialiased like PIL's resize), centre crop, mean / std (OpenAI's ``clip.load`` transform)."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be [B, 3, H, W] in [-1, 1], got {tuple(image.shape)}")
    H, W = image.shape[-2:]
    scale = size / min(H, W)
    h, w = max(size, round(H * scale)), max(size, round(W * scale))
    x = F.interpolate(image.float(), size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (h - size) // 2, (w - size) // 2
    x = (x[..., top : top + size, left : left + size] * 0.5 + 0.5).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class AestheticPredictor(nn.Module):
    """Frozen CLIP image tower + aesthetic head: images [B, 3, H, W] in [-1, 1] -> scores [B] (float32)."""

    def __init__(self, vision: CLIPVisionModelWithProjection, head: AestheticHead):
        super().__init__()
        if head.in_dim != vision.config.projection_dim:
            raise ValueError(
                f"the aesthetic head takes {head.in_dim}-d embeddings but the CLIP tower projects to "
                f"{vision.config.projection_dim}: the head needs OpenAI ViT-L/14 (768-d)"
            )
        self.vision, self.head = vision.eval().requires_grad_(False), head.eval().requires_grad_(False)

    @torch.no_grad()
    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings [B, 768] (float32)."""
        p = next(self.vision.parameters())
        pixels = preprocess_openai(image, self.vision.config.image_size).to(device=p.device, dtype=p.dtype)
        emb = self.vision(pixel_values=pixels).image_embeds.float()
        return emb / emb.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        emb = self.embed(image)
        w = self.head.layers[0].weight
        return self.head(emb.to(device=w.device, dtype=w.dtype)).squeeze(-1).float()


def load_aesthetic_predictor(
    clip: str | Path, head: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> AestheticPredictor:
    """The predictor from local files: ``clip`` as ``load_clip_vision`` reads it, ``head`` the released ``.pth``."""
    model = AestheticPredictor(load_clip_vision(clip, dtype=dtype), load_aesthetic_head(head))
    return model.to(device)
