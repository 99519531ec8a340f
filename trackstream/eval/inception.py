"""The Inception-v3 that FID is defined with (pytorch-fid 0.3.0's port of TF ``inception-2015-12-05``),
written here so FID needs no torchvision, and loading the official ``pt_inception-2015-12-05-6726825d.pth``.

Protocol (pytorch-fid, block index 3): images in [0, 1] are resized bilinearly to 299x299
(align_corners=False), mapped to [-1, 1] by 2x - 1, run through the network and read out after the
final adaptive average pool ("pool3", 2048-d). The weights are the TF graph's, so the architecture
differs from torchvision's inception_v3 in the ways TF's graph does (see `_MixedA`, `_MixedE`);
using torchvision's blocks with these weights would give different features and incomparable FIDs.

Module attribute names are exactly torchvision's (``Conv2d_1a_3x3.conv.weight``,
``Mixed_5b.branch1x1.bn.running_mean``, ..., ``fc.weight`` [1008, 2048]) because the official file is
a state dict of torchvision's ``inception_v3(num_classes=1008, aux_logits=False)``: pytorch-fid loads
it strictly into that model, so the file has no ``AuxLogits.*`` keys and a 1008-class fc.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trackstream.data.progress import progress_bar

__all__ = [
    "FID_WEIGHTS_FILE",
    "FID_WEIGHTS_URL",
    "OFFICIAL_FID_INCEPTION_PARAMS",
    "OFFICIAL_FID_INCEPTION_TENSORS",
    "FIDInceptionV3",
    "inception_features",
    "load_fid_inception",
]

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILE}"
# Parameters of torchvision's inception_v3(num_classes=1008, aux_logits=False) = what the file holds.
# Cross-check: torchvision documents 27,161,264 for the 1000-class model with the aux head; the aux head
# is 3,326,696 of those and 8 more classes add 8 * 2048 + 8, giving 23,850,960.
OFFICIAL_FID_INCEPTION_PARAMS = 23_850_960
# Tensors in the module's state dict: 94 conv+BN blocks x 6 (conv.weight, bn.weight/bias/running_mean/
# running_var/num_batches_tracked) + fc.weight + fc.bias. A file written without num_batches_tracked
# (older torch) has 94 fewer; `load_fid_inception` accepts both since that counter is unused in eval.
OFFICIAL_FID_INCEPTION_TENSORS = 566
INPUT_SIZE = 299


class _ConvBN(nn.Module):
    """Conv without bias, then BatchNorm (TF's epsilon 0.001), then ReLU: every conv in the network."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TF's 3x3 "SAME" average pool divides by the number of real pixels under the window, not 9:
    # count_include_pad=False. torchvision's default (True) darkens every border pixel of the branch.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _MixedA(nn.Module):
    """35x35 block (Mixed_5b/5c/5d): 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 64, 1)
        self.branch5x5_1 = _ConvBN(cin, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([a, b, c, d], 1)  # [B, 224 + pool_features, 35, 35]


class _ReduceB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a): strided 3x3 | 1x1 -> 3x3 -> strided 3x3 | strided max pool."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, kernel_size=3, stride=2)], 1)  # [B, 480 + cin, 17, 17]


class _MixedC(nn.Module):
    """17x17 block (Mixed_6b..6e): 7x7 convolutions factorised into 1x7 and 7x1; c7 = inner width."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 192, 1)
        self.branch7x7_1 = _ConvBN(cin, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = layer(c)
        d = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([a, b, c, d], 1)  # [B, 768, 17, 17]


class _ReduceD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _ConvBN(cin, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([a, b, F.max_pool2d(x, kernel_size=3, stride=2)], 1)  # [B, 512 + cin, 8, 8]


class _MixedE(nn.Module):
    """8x8 block (Mixed_7b, Mixed_7c) with the 3x3s split into parallel 1x3 and 3x1 outputs.

    `max_pool`: TF's graph pools with a max in its last block (Mixed_7c) and an average in Mixed_7b;
    pytorch-fid reproduces that (FIDInceptionE_2), so FID's features need it too.
    """

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _ConvBN(cin, 320, 1)
        self.branch3x3_1 = _ConvBN(cin, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat([a, b, c, self.branch_pool(pooled)], 1)  # [B, 320 + 768 + 768 + 192 = 2048, 8, 8]


class FIDInceptionV3(nn.Module):
    """FID's Inception-v3 up to pool3. `forward(images [B, 3, H, W] in [0, 1]) -> [B, 2048]` float32.

    Always in eval mode (`train()` is a no-op) with frozen parameters: a feature extractor whose
    BatchNorm statistics moved would silently change every FID computed afterwards.
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _MixedA(192, pool_features=32)
        self.Mixed_5c = _MixedA(256, pool_features=64)
        self.Mixed_5d = _MixedA(288, pool_features=64)
        self.Mixed_6a = _ReduceB(288)
        self.Mixed_6b = _MixedC(768, c7=128)
        self.Mixed_6c = _MixedC(768, c7=160)
        self.Mixed_6d = _MixedC(768, c7=160)
        self.Mixed_6e = _MixedC(768, c7=192)
        self.Mixed_7a = _ReduceD(768)
        self.Mixed_7b = _MixedE(1280, max_pool=False)
        self.Mixed_7c = _MixedE(2048, max_pool=True)
        # Not on the feature path; kept so the official file (which has it) loads with strict=True.
        self.fc = nn.Linear(2048, 1008)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FIDInceptionV3:
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(
                f"FIDInceptionV3 needs float images [B, 3, H, W] in [0, 1]; got {images.dtype} "
                f"{tuple(images.shape)} (use inception_features for uint8 [N, H, W, 3] frames)"
            )
        x = images.float()
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # the TF graph was trained on [-1, 1]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # [B, 64, 147, 147]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [B, 64, 73, 73]
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # [B, 192, 71, 71]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [B, 192, 35, 35]
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # [B, 2048, 8, 8] -> [B, 2048]


def load_fid_inception(path: str | Path) -> FIDInceptionV3:
    """Build `FIDInceptionV3` and load the official weights from a local file (strict; nothing is downloaded)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"FID Inception weights not found at {path}: expected the file {FID_WEIGHTS_FILE}, published in "
            f"the github.com/mseitzer/pytorch-fid releases (tag fid_weights): {FID_WEIGHTS_URL}. Nothing is "
            "downloaded here; fetch it ahead of time and pass its local path."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickled module or other non-tensor content is refused by weights_only
        raise ValueError(f"{path} is not a plain tensor state dict like {FID_WEIGHTS_FILE}: {e}") from e
    if not isinstance(state, dict):  # a wrong file is a user error here (ValueError), not a type bug
        raise ValueError(  # noqa: TRY004
            f"{path} holds a {type(state).__name__}, not a state dict like {FID_WEIGHTS_FILE}"
        )
    model = FIDInceptionV3()
    expected = model.state_dict()
    state = dict(state)
    for key in expected:
        # A file written before torch 0.4.1 has no BatchNorm batch counter; it is unused in eval mode.
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the FID Inception-v3 ({FID_WEIGHTS_FILE}): {len(missing)} missing keys "
            f"(first: {missing[:5]}), {len(unexpected)} unexpected keys (first: {unexpected[:5]})"
        )
    bad = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape
    ]
    if bad:
        raise ValueError(f"{path}: {len(bad)} tensors have the wrong shape (file vs model, first: {bad[:5]})")
    model.load_state_dict(state, strict=True)
    return model


def inception_features(
    model: FIDInceptionV3, frames, *, batch_size: int = 50, progress: bool | None = None
) -> np.ndarray:
    """Pool3 features [N, 2048] float64 of `frames`: uint8 [N, H, W, 3] (0..255) or float [N, 3, H, W] in [0, 1].

    numpy or torch input; converted one batch at a time so N video frames never exist as float at
    once. `progress=None` shows a bar (plain lines off a terminal) only for more than 1000 frames. Batch 50 is
    pytorch-fid's default; the features do not depend on it beyond float rounding.
    """
    if batch_size < 1:
        raise ValueError(f"inception_features: batch_size must be >= 1, got {batch_size}")
    x = frames if torch.is_tensor(frames) else torch.from_numpy(np.asarray(frames))
    if x.dtype == torch.uint8:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"inception_features: uint8 frames must be [N, H, W, 3]; got {tuple(x.shape)}")
    elif x.is_floating_point():
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"inception_features: float frames must be [N, 3, H, W] in [0, 1]; got {tuple(x.shape)}")
    else:
        raise ValueError(f"inception_features: frames must be uint8 [N, H, W, 3] or float [N, 3, H, W]; got {x.dtype}")
    n = x.shape[0]
    device = next(model.parameters()).device
    starts = range(0, n, batch_size)
    if progress or (progress is None and n > 1000):
        starts = progress_bar(starts, desc="inception", unit="batch")
    out = np.empty((n, 2048), np.float64)
    with torch.no_grad():
        for s in starts:
            chunk = x[s : s + batch_size].to(device)
            if chunk.dtype == torch.uint8:
                chunk = chunk.permute(0, 3, 1, 2).float() / 255  # [b, H, W, 3] -> [b, 3, H, W] in [0, 1]
            out[s : s + batch_size] = model(chunk.float()).double().cpu().numpy()
    return out
