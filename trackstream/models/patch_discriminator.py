"""A PatchGAN discriminator (pix2pix's ``NLayerDiscriminator``, Isola et al. 2017, as taming-transformers uses it
for VQGAN): strided 4x4 convs that score overlapping patches of an image as real or fake, one logit per patch.

The tiny decoder stage (``train.tiny_decoder.objective``) scores every decoded frame with it, as a second trained network
beside the decoder. A pure module: the losses and their weighting live in the objective.

Layout for ``layers`` = n (3 = pix2pix's default, a 70x70 receptive field): conv(3 -> w, stride 2) + LeakyReLU,
then n - 1 stride-2 convs doubling the width (capped at 8 w) with a norm, one stride-1 conv, and a stride-1 conv to
one channel. Legend: N images (frames), C channels.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["PatchDiscriminator", "NORMS"]

NORMS = ("group", "batch", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    # GroupNorm is the default: a discriminator without batch statistics scores a crop the same whatever the
    # per-rank batch size and in eval mode (BatchNorm, pix2pix's choice, is kept for comparison).
    if kind == "group":
        return nn.GroupNorm(min(32, channels // 4), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class PatchDiscriminator(nn.Module):
    """[N, 3, H, W] images in [-1, 1] -> [N, 1, h, w] patch logits (h, w ~ H / 2^layers - 2)."""

    def __init__(self, *, width: int = 64, layers: int = 3, norm: str = "group", in_channels: int = 3):
        super().__init__()
        if width < 4 or layers < 1:
            raise ValueError(f"PatchDiscriminator width={width} must be >= 4 and layers={layers} >= 1")
        if norm not in NORMS:
            raise ValueError(f"PatchDiscriminator norm={norm!r}: choose one of {', '.join(NORMS)}")
        mods: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < layers else 1  # the last hidden conv keeps the resolution (pix2pix)
            mods += [
                nn.Conv2d(width * prev, width * mult, 4, stride, 1, bias=norm == "none"),
                _norm(norm, width * mult),
                nn.LeakyReLU(0.2, True),
            ]
        mods.append(nn.Conv2d(width * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*mods)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """pix2pix's init: conv weights N(0, 0.02), norm scales N(1, 0.02), biases 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"PatchDiscriminator takes images [N, C, H, W], got shape {tuple(images.shape)}")
        return self.main(images)
