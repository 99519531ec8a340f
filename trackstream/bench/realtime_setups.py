"""The setups of the realtime benchmark: each a student as a real recipe trains it, with the codec it streams
with, and the random-weight build of one (``bench.realtime`` streams it)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Optional

import torch

from trackstream.models.codecs import build_codec
from trackstream.models.formats.wantrack import preset_stream_config
from trackstream.models.motion_wan import ModelConfig, build_motion_wan
from trackstream.models.precision import working_dtype
from trackstream.models.streaming import CausalConfig, StreamConfig

__all__ = ["Setup", "SETUPS", "CPU_SETUPS", "REAL_SETUPS", "build", "network_setup"]


@dataclass(frozen=True)
class Setup:
    """A student as a real recipe trains it (``recipe``: its conf/experiment) with the codec it streams with.
    Its size, chunking, steps and shift are the recipe's (composed once: conf/family for the real ones);
    ``size`` replaces the pixel size (--height / --width). A student no recipe of ours trains (FastVideo's
    Track-v0) gives its ``stream`` and ``size`` instead; ``network``: a folder whose own weights are streamed
    (``--network``) instead of random ones."""

    recipe: Optional[str]
    model: ModelConfig
    codec: str
    codec_options: dict
    text_dim: int  # the frozen text encoder's output width
    size: Optional[tuple[int, int]] = None
    stream: Optional[StreamConfig] = None
    network: Optional[str] = None

    @property
    def height(self) -> int:
        return self.size[0] if self.size else _recipe(self.recipe).data.height

    @property
    def width(self) -> int:
        return self.size[1] if self.size else _recipe(self.recipe).data.width

    @property
    def stream_config(self) -> StreamConfig:
        """How the student streams: ``stream``, else the recipe's chunking, steps and shift."""
        if self.stream is not None:
            return self.stream
        typed = _recipe(self.recipe)
        return typed.schedule.streaming(typed.stage.causal)

    @property
    def causal(self) -> CausalConfig:
        return self.stream_config.causal

    @property
    def shift(self) -> float:
        return self.stream_config.shift

    @property
    def steps(self) -> int:
        return self.stream_config.steps


def network_setup(path: str) -> Setup:
    """The setup of an exported student or a FastVideo bundle at ``path``: its architecture, size and stream from
    its ``network.json`` (or the bundle's files), its own weights, the tiny decoder of its latent space."""
    from trackstream.models.motion_wan import latent_channels
    from trackstream.models.network import Network

    network = Network.open(path, "--network")
    meta, conv = network.meta, network.conventions
    stream = conv.stream_config(str(path))
    if conv.height is None or conv.width is None:
        raise ValueError(
            f"{path}/network.json records no frame size (conventions.height / width): give --height/--width"
        )
    model = ModelConfig(**meta["model"])
    codec = "taehv-wan2.2" if latent_channels(model.flavor, model.overrides) == 48 else "taehv-wan2.1"
    return Setup(None, model, codec, {}, int(meta["text_encoder_dim"]), (conv.height, conv.width), stream, str(path))


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
    overrides={"dim": 384, "ffn_dim": 1152, "num_heads": 6, "num_layers": 6, "text_len": 64, "patch_size": [1, 1, 1]},
)
# FastVideo's Track-v0 (H1yori233/Track-v0): the Fun-1.3B-InP DiT with their 64-wide biased track encoder
# (52 input channels), streamed as their pipeline streams it; no recipe of ours trains it
_TRACKV0 = ModelConfig(
    flavor="wan2.1-fun-1.3b-inp",
    layout="wan_i2v",
    track_channels=16,
    track_embed_dim=64,
    track_convention="fastvideo",
    track_bias=True,
    text_encoder="umt5",
)
_TINY_AE = {"width": 128, "num_res_blocks": 1, "temporal_kernel": 2, "patch": 4}
SETUPS = {
    "wan1.3b-480p-taehv": Setup("dmd_wan1.3b_480p", _WAN13, "taehv-wan2.1", {}, 4096),
    "wan1.3b-480p-wanvae": Setup("dmd_wan1.3b_480p", _WAN13, "wan2.1-vae", {}, 4096),
    "trackv0-480p-taehv": Setup(None, _TRACKV0, "taehv-wan2.1", {}, 4096, (480, 832), preset_stream_config()),
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
    if setup.network is not None:  # its own weights, cast as Network.for_inference casts them
        from trackstream.models.network import Network

        if layers is not None or dim is not None:
            raise ValueError("--layers / --dim cut a random-weight setup; --network streams the network as it is")
        net = Network.open(setup.network, "--network").load(device).eval().requires_grad_(False)
        codec = build_codec(setup.codec, **setup.codec_options).to(device).eval().requires_grad_(False)
        if dtype != torch.float32:
            net.dit.cast_for_inference(dtype)
            codec.to(working_dtype(dtype))
        return net, codec
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
        codec.to(working_dtype(dtype))
    return net, codec
