"""One registry of Wan model flavors: real Wan 2.1 configs and the CPU-sized ``tiny`` ones.

Real flavors build on the ``meta`` device by default (no memory is allocated), to be
materialised after sharding or filled by ``models.wan_io.load_wan``.
"""

from __future__ import annotations

import copy

import torch

from trackstream.models.wan import WanModel

_WAN_COMMON = dict(patch_size=(1, 2, 2), freq_dim=256, text_dim=4096, text_len=512, out_dim=16, eps=1e-6)
_WAN_1_3B = dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)
_WAN_14B = dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)

# name -> WanModel keyword arguments (official config.json keys).
FLAVORS: dict[str, dict] = {
    "wan2.1-t2v-1.3b": dict(_WAN_COMMON, **_WAN_1_3B, model_type="t2v", in_dim=16),
    "wan2.1-t2v-14b": dict(_WAN_COMMON, **_WAN_14B, model_type="t2v", in_dim=16),
    "wan2.1-i2v-14b": dict(_WAN_COMMON, **_WAN_14B, model_type="i2v", in_dim=36),
    "wan2.1-flf2v-14b": dict(_WAN_COMMON, **_WAN_14B, model_type="flf2v", in_dim=36),
    # Alibaba-PAI Fun models: i2v-type 1.3B DiTs (CLIP branch present).
    # InP: [noisy 16, mask 4, masked-video latent 16]; Control: [noisy 16, control 16, start image 16].
    "wan2.1-fun-1.3b-inp": dict(_WAN_COMMON, **_WAN_1_3B, model_type="i2v", in_dim=36),
    "wan2.1-fun-1.3b-control": dict(_WAN_COMMON, **_WAN_1_3B, model_type="i2v", in_dim=48),
    # their 14B siblings (alibaba-pai/Wan2.1-Fun-14B-InP / -Control): the I2V-14B DiT, same channel layouts
    "wan2.1-fun-14b-inp": dict(_WAN_COMMON, **_WAN_14B, model_type="i2v", in_dim=36),
    "wan2.1-fun-14b-control": dict(_WAN_COMMON, **_WAN_14B, model_type="i2v", in_dim=48),
    # Wan 2.2 TI2V-5B (dense): 48-channel latents of the Wan 2.2 VAE (16x16 spatial, 4x temporal),
    # image conditioning as the clean first latent frame at t = 0; 1280x704, 24 fps, shift 5.
    "wan2.2-ti2v-5b": dict(
        _WAN_COMMON, dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, model_type="ti2v", in_dim=48, out_dim=48
    ),
    # CPU-sized flavors for the embedded synthetic world and the tests. head_dim 32 keeps the
    # 3D RoPE split meaningful (6/5/5 pairs); a short text_len keeps cross-attention cheap.
    "tiny": dict(
        patch_size=(1, 2, 2),
        freq_dim=64,
        text_dim=64,
        text_len=32,
        out_dim=16,
        eps=1e-6,
        dim=128,
        ffn_dim=384,
        num_heads=4,
        num_layers=2,
        model_type="t2v",
        in_dim=16,
    ),
    "tiny-i2v": dict(
        patch_size=(1, 2, 2),
        freq_dim=64,
        text_dim=64,
        text_len=32,
        out_dim=16,
        eps=1e-6,
        dim=128,
        ffn_dim=384,
        num_heads=4,
        num_layers=2,
        model_type="i2v",
        in_dim=36,
    ),
}

# Official figures (the Fun models': counted from the published architecture), asserted by the tests:
# (parameters, state-dict tensors).
OFFICIAL_COUNTS = {
    "wan2.1-t2v-1.3b": (1_418_996_800, 825),
    "wan2.1-t2v-14b": (14_288_491_584, 1095),
    "wan2.1-i2v-14b": (16_394_878_784, 1303),
    "wan2.1-flf2v-14b": (16_395_536_704, 1304),
    "wan2.1-fun-1.3b-inp": (1_564_428_608, None),
    "wan2.1-fun-1.3b-control": (1_564_502_336, None),
    # not published: the I2V-14B architecture at in_dim 48 (36 for InP = I2V-14B's own count), counted
    "wan2.1-fun-14b-inp": (16_394_878_784, 1303),
    "wan2.1-fun-14b-control": (16_395_124_544, 1303),
    # the official TI2V-5B config.json built by diffusers' WanTransformer3DModel (tests/test_wan_parity.py)
    "wan2.2-ti2v-5b": (4_999_787_712, 825),
}


def flavor_config(name: str, **overrides) -> dict:
    """The constructor kwargs of a flavor, with overrides (e.g. ``in_dim`` for extra conditioning)."""
    if name not in FLAVORS:
        raise ValueError(f"unknown model flavor {name!r}; choose one of {sorted(FLAVORS)}")
    cfg = copy.deepcopy(FLAVORS[name])
    unknown = set(overrides) - set(cfg) - {"window_size", "qk_norm", "cross_attn_norm"}
    if unknown:
        raise ValueError(f"unknown WanModel fields {sorted(unknown)} for flavor {name!r}")
    cfg.update(overrides)
    for key in ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim", "freq_dim", "text_dim", "text_len"):
        v = cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(
                f"model.overrides.{key}={v!r} must be an int >= 1 (flavor {name!r} has {FLAVORS[name][key]})"
            )
    if cfg["dim"] % cfg["num_heads"] or (cfg["dim"] // cfg["num_heads"]) % 2:
        raise ValueError(
            f"model dim {cfg['dim']} / num_heads {cfg['num_heads']}: the head size must be a whole, even number "
            "(RoPE rotates pairs of channels); change model.overrides.dim or num_heads"
        )
    return cfg


def build_wan(name: str, *, device: str | torch.device | None = None, **overrides) -> WanModel:
    """Build a flavor. Real flavors default to ``meta`` (no allocation); ``tiny*`` to CPU."""
    cfg = flavor_config(name, **overrides)
    if device is None:
        device = "cpu" if name.startswith("tiny") else "meta"
    with torch.device(device):
        return WanModel(**cfg)


def main() -> None:
    """``trackstream flavors``: list flavors with their parameter counts (built on meta)."""
    for name in FLAVORS:
        m = build_wan(name, device="meta")
        n = sum(p.numel() for p in m.parameters())
        print(f"{name:26s} {m.model_type:6s} dim={m.dim:5d} layers={m.num_layers:3d} in_dim={m.in_dim:3d} params={n:,}")


if __name__ == "__main__":
    main()
