"""LPIPS v0.1 (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), written here so that it loads the official weight files without torchvision or the
`lpips` package (both would pull a different torch).

Pipeline for images x, y [B, 3, H, W] in [-1, 1]:
  1. ScalingLayer: (x - shift) / scale per channel, which maps [-1, 1] roughly onto ImageNet
     mean/std normalisation (the v0.0 release skipped this step; v0.1 is the one in use).
  2. Backbone: torchvision's AlexNet or VGG16 `features`, tapped after five ReLUs.
  3. Each tap is unit-normalised along channels (eps 1e-10), the two images' taps are subtracted
     and squared, a 1x1 conv without bias (a head, weights >= 0 in the release) maps channels to 1.
  4. Spatial mean per tap, sum over the five taps -> one distance per image pair.

Weights come from two files, never downloaded here:
  backbone  torchvision's `alexnet-owt-7be5be79.pth` / `vgg16-397923af.pth`: the full classifier
            state dict; only its `features.*` keys are used, with torchvision's layer indices.
  heads     the lpips package's `weights/v0.1/alex.pth` / `vgg.pth`: keys `lin{k}.model.1.weight`
            (index 1 because a Dropout sits at index 0 of each head's Sequential).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "BACKBONE_FEATURE_PARAMS",
    "BACKBONE_FILES",
    "CHANNELS",
    "HEAD_FILES",
    "HEAD_PARAMS",
    "LPIPS",
    "MIN_SIDE",
    "SCALING_SCALE",
    "SCALING_SHIFT",
    "TAPS",
    "ScalingLayer",
    "load_lpips",
    "normalize_tensor",
]

NETS = ("alex", "vgg")

# Per-channel constants of the lpips ScalingLayer (inputs in [-1, 1]).
SCALING_SHIFT = (-0.030, -0.088, -0.188)
SCALING_SCALE = (0.458, 0.448, 0.450)

# Indices into torchvision's `features` Sequential whose outputs are tapped (AlexNet relu1..relu5;
# VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3), and the channel count of each tap.
TAPS = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}

# Parameter counts of the official files: torchvision `features` (AlexNet total 61,100,840 and
# VGG16 138,357,544 minus their classifiers) and the five heads (sum of CHANNELS).
BACKBONE_FEATURE_PARAMS = {"alex": 2_469_696, "vgg": 14_714_688}
HEAD_PARAMS = {"alex": 1_152, "vgg": 1_472}

BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
HEAD_FILES = {"alex": "alex.pth", "vgg": "vgg.pth"}

# Smallest H and W for which the deepest tap is still at least 1x1 (AlexNet: stride-4 conv and two
# 3/2 max-pools; VGG16: four 2/2 max-pools before relu5_3).
MIN_SIDE = {"alex": 31, "vgg": 16}

# VGG16 configuration "D" up to conv5_3: ints are 3x3 convs (each followed by a ReLU), "M" 2x2 pools.
_VGG16_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def normalize_tensor(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide each spatial position's channel vector [B, C, H, W] by its L2 norm (+ eps, so an
    all-zero vector stays zero instead of becoming NaN)."""
    norm = torch.sqrt(torch.sum(feat**2, dim=1, keepdim=True))
    return feat / (norm + eps)


class ScalingLayer(nn.Module):
    """(x - shift) / scale per RGB channel for x in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        # Not persistent: neither official file stores them, so they stay out of state_dict().
        self.register_buffer("shift", torch.tensor(SCALING_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALING_SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class NetLinLayer(nn.Module):
    """One head: Dropout then a bias-free 1x1 conv C -> 1. The Dropout has no weights but keeps the
    conv at index 1, which is what the released files' `lin{k}.model.1.weight` keys expect."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _alexnet_features() -> nn.Sequential:
    # torchvision AlexNet ("one weird trick" variant) `features` up to relu5, indices 0..11; the
    # final max-pool (index 12) is not tapped and has no weights, so it is left out.
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(),
    )  # fmt: skip


def _vgg16_features() -> nn.Sequential:
    # torchvision VGG16 `features` up to relu5_3, indices 0..29 (the last pool, 30, is not tapped).
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _VGG16_D:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU()]
            in_ch = v
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance; `forward(x, y)` takes images [B, 3, H, W] in [-1, 1] and returns [B]
    float32. Randomly initialised: use `load_lpips` for the official weights."""

    def __init__(self, net: str = "alex", *, spatial: bool = False) -> None:
        super().__init__()
        if net not in NETS:
            raise ValueError(f"LPIPS net={net!r} is unknown; use one of {NETS}")
        if spatial:
            raise ValueError("LPIPS spatial=True (per-pixel distance maps) is not implemented; use spatial=False")
        self.net = net
        self.taps = TAPS[net]
        self.scaling_layer = ScalingLayer()
        self.features = _alexnet_features() if net == "alex" else _vgg16_features()
        # Attributes lin0..lin4 (no ModuleList alias) so state_dict() holds each head exactly once,
        # under the released names.
        for k, ch in enumerate(CHANNELS[net]):
            setattr(self, f"lin{k}", NetLinLayer(ch))
        self.requires_grad_(False)  # a fixed metric; gradients still flow to the inputs
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        # A metric must not be stochastic: keep the heads' Dropout off even when a parent module
        # that holds this one (e.g. a training loss) is switched to train mode.
        return super().train(False)

    @property
    def heads(self) -> list[NetLinLayer]:
        return [getattr(self, f"lin{k}") for k in range(len(self.taps))]

    def tap_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Scaled input through the backbone; the five tapped ReLU outputs, shallow first."""
        h = self.scaling_layer(x)
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise ValueError(
                f"LPIPS needs x and y as images [B, 3, H, W] of equal shape; got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        side = MIN_SIDE[self.net]
        if min(x.shape[-2:]) < side:
            raise ValueError(f"LPIPS net={self.net!r} needs H and W >= {side}; got {tuple(x.shape[-2:])}: resize first")
        dtype = self.features[0].weight.dtype
        # Two separate passes (not one concatenated batch) so that identical images give
        # bit-identical features and LPIPS(x, x) is exactly 0.
        fx, fy = self.tap_features(x.to(dtype)), self.tap_features(y.to(dtype))
        total = torch.zeros(x.shape[0], dtype=dtype, device=x.device)
        for head, a, b in zip(self.heads, fx, fy):
            diff = (normalize_tensor(a) - normalize_tensor(b)) ** 2  # [B, C, h, w]
            total = total + head(diff).mean(dim=(1, 2, 3))  # 1 channel -> mean over h, w
        return total.float()


def _check_and_load(module: nn.Module, sd: Mapping[str, torch.Tensor], what: str, path: Path, prefix: str = "") -> None:
    """Strict load that reports a mismatch as a ValueError naming the first few keys (as they are
    spelled in the file, i.e. with `prefix`)."""
    own = module.state_dict()
    missing = [prefix + k for k in own if k not in sd]
    unexpected = [prefix + k for k in sd if k not in own]
    shapes = [
        f"{prefix}{k} {tuple(sd[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label} {len(items)}: {items[:5]}{more}")
        raise ValueError(f"{what} file {path} does not match: " + "; ".join(parts))
    module.load_state_dict(dict(sd), strict=True)


def _read(path: str | Path, field: str, expected: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"load_lpips {field}={str(path)!r} does not exist; expected {expected}. "
            "Nothing is downloaded: copy the file there and pass its path."
        )
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, Mapping):
        raise ValueError(
            f"load_lpips {field}={str(path)!r} holds a {type(sd).__name__}, not a state dict; expected {expected}"
        )
    return dict(sd)


def load_lpips(net: str, *, backbone: str | Path, heads: str | Path) -> LPIPS:
    """LPIPS v0.1 with official weights: `backbone` torchvision's ImageNet file (its `features.*`
    keys, loaded strictly; `classifier.*` and other keys are ignored), `heads` the lpips package's
    weights/v0.1 file (loaded strictly). Returned in eval mode with frozen parameters."""
    if net not in NETS:
        raise ValueError(f"load_lpips net={net!r} is unknown; use one of {NETS}")
    # Both files are read before anything is loaded, so a missing one is reported first.
    sd = _read(backbone, "backbone", f"torchvision's {BACKBONE_FILES[net]}")
    head_sd = _read(heads, "heads", f"{HEAD_FILES[net]} from the lpips package's weights/v0.1")
    model = LPIPS(net)
    features = {k[len("features.") :]: v for k, v in sd.items() if k.startswith("features.")}
    _check_and_load(model.features, features, f"backbone ({BACKBONE_FILES[net]})", Path(backbone), "features.")
    head_modules = nn.ModuleDict({f"lin{k}": h for k, h in enumerate(model.heads)})
    _check_and_load(head_modules, head_sd, f"heads ({HEAD_FILES[net]})", Path(heads))
    return model.eval()
