"""The setups of the realtime benchmark: each a student as a real recipe trains it, with the codec it streams
with, and the random-weight build of one (``bench.realtime`` streams it)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Optional

import torch

from trackstream.models.causal import CausalConfig
from trackstream.models.codecs import build_codec
from trackstream.models.motion_wan import ModelConfig, build_motion_wan

__all__ = ["Setup", "SETUPS", "CPU_SETUPS", "REAL_SETUPS", "build"]


@dataclass(frozen=True)
class Setup:
    """A student as a real recipe trains it (``recipe``: its conf/experiment) with the codec it streams with.
    Its size, chunking, steps and shift are the recipe's (composed once: conf/family for the real ones);
    ``size`` replaces the pixel size (--height / --width)."""

    recipe: str
    model: ModelConfig
    codec: str
    codec_options: dict
    text_dim: int  # the frozen text encoder's output width
    size: Optional[tuple[int, int]] = None

    @property
    def height(self) -> int:
        return self.size[0] if self.size else _recipe(self.recipe).data.height

    @property
    def width(self) -> int:
        return self.size[1] if self.size else _recipe(self.recipe).data.width

    @property
    def causal(self) -> CausalConfig:
        return _recipe(self.recipe).stage.causal

    @property
    def shift(self) -> float:
        return _recipe(self.recipe).schedule.shift

    @property
    def steps(self) -> int:
        return _recipe(self.recipe).schedule.student_steps


@functools.lru_cache(maxsize=None)
def _recipe(name: str):
    from trackstream.train.recipes import compose_recipe

    return compose_recipe([f"experiment={name}"])


_WAN13 = ModelConfig(
    flavor="wan2.1-fun-1.3b-control", layout="fun_control", track_channels=16, track_embed_dim=64, text_encoder="umt5"
)
_WAN5 = ModelConfig(flavor="wan2.2-ti2v-5b", layout="ti2v", track_channels=16, track_embed_dim=64, text_encoder="umt5")
# tiny_dmd as composed alone: DiT patch 2 on the 4x codec's 16x16 latents, 8x8 tokens per frame
_TINY = ModelConfig(
    flavor="tiny",
    layout="wan_i2v",
    track_channels=32,
    track_embed_dim=64,
    text_encoder="minilm",
    overrides={"text_len": 64, "num_heads": 2},
)
# the shipped student (assets/tiny-student, make run's): 4 layers, DiT patch 1, 16x16 4-px tokens per frame
_TINY_STUDENT = dataclasses.replace(
    _TINY, overrides={**_TINY.overrides, "patch_size": [1, 1, 1], "num_layers": 4}, track_splat="bilinear"
)
# the small world model (conf/model/small.yaml with small_teacher's overrides; a test holds them equal)
_SMALL = dataclasses.replace(
    _TINY,
    overrides={"dim": 384, "ffn_dim": 1152, "num_heads": 6, "num_layers": 8, "text_len": 64, "patch_size": [1, 1, 1]},
)
_TINY_AE = {"width": 128, "num_res_blocks": 1, "temporal_kernel": 2, "patch": 4}
SETUPS = {
    "wan1.3b-480p-taehv": Setup("dmd_wan1.3b_480p", _WAN13, "taehv-wan2.1", {}, 4096),
    "wan1.3b-480p-wanvae": Setup("dmd_wan1.3b_480p", _WAN13, "wan2.1-vae", {}, 4096),
    "wan5b-704p-taehv": Setup("dmd_wan2.2_5b_704p", _WAN5, "taehv-wan2.2", {}, 4096),
    "wan5b-704p-wanvae": Setup("dmd_wan2.2_5b_704p", _WAN5, "wan2.2-vae", {}, 4096),
    "tiny": Setup("tiny_dmd", _TINY, "tiny-ae", {"width": 128, "patch": 4}, 384),
    "tiny-student": Setup("tiny_dmd", _TINY_STUDENT, "tiny-ae", _TINY_AE, 384),
    "small": Setup("small_dmd", _SMALL, "tiny-ae", _TINY_AE, 384),
}
CPU_SETUPS = ("tiny", "tiny-student", "small")  # the embedded world's students: 64x64, the tiny codec
REAL_SETUPS = [name for name in SETUPS if name not in CPU_SETUPS]


def build(
    setup: Setup,
    *,
    device: torch.device,
    dtype: torch.dtype,
    layers: Optional[int] = None,
    dim: Optional[int] = None,
    seed: int = 0,
):
    """Random-weight student (real flavors built on meta, materialised on the device; the zero-init head
    randomised so the latents are not all zero) and codec, cast as ``models.conditioner.load_export`` casts.
    ``dim`` re-sizes an embedded-world student as conf/model/small.yaml sizes one: FFN 3x, heads of 64."""
    model = setup.model
    if layers is not None:
        model = dataclasses.replace(model, overrides={**model.overrides, "num_layers": layers})
    if dim is not None:
        sized = {"dim": dim, "ffn_dim": 3 * dim, "num_heads": dim // 64}
        model = dataclasses.replace(model, overrides={**model.overrides, **sized})
    torch.manual_seed(seed)
    real = not model.flavor.startswith("tiny")
    net = build_motion_wan(model, text_encoder_dim=setup.text_dim, device="meta" if real else None)
    if real:
        net.to_empty(device=device)
        net.init_weights()
    with torch.no_grad():
        torch.nn.init.normal_(net.dit.head.head.weight, std=0.02)
    net = net.to(device).eval().requires_grad_(False)
    codec = build_codec(setup.codec, **setup.codec_options).to(device).eval().requires_grad_(False)
    if dtype != torch.float32:
        net.dit.cast_for_inference(dtype)
        codec.to(dtype)
    return net, codec
