"""RAFT-large optical flow (Teed & Deng, "RAFT: Recurrent All-Pairs Field Transforms for Optical Flow",
ECCV 2020), written against princeton-vl/RAFT (core/raft.py, extractor.py, update.py, corr.py,
utils/utils.py) so that its ``raft-things.pth`` loads strictly into it and gives the same flow.

Why our own copy: MoveBench's EPE is a RAFT flow metric, torchvision (which ships a RAFT) is not a
dependency here, and the reference repo is a script tree, not a package. Every parameter name below is the
reference's (``fnet.layer1.0.conv1.weight``, ``update_block.gru.convz1.bias``, ...), which is the whole
contract with the checkpoint; module classes are ours.

The maths, as the reference's test mode runs it (``model(im1, im2, iters=12, test_mode=True)``):

* images in [0, 255] -> 2 * (x / 255) - 1; padded by replication to multiples of 8, split evenly
  (InputPadder's default "sintel" mode), unpadded at the end;
* feature encoder (instance norm, 256 channels) on both frames, context encoder (batch norm, 128 + 128
  channels: tanh -> GRU hidden state, relu -> GRU input), both at 1/8 resolution;
* all-pairs correlation <f1(p), f2(q)> / sqrt(256), average-pooled into a 4-level pyramid; each iteration
  samples a 9x9 window (radius 4) around the current match at every level (4 * 81 = 324 channels);
* BasicUpdateBlock: motion encoder, separable ConvGRU (1x5 then 5x1), flow head (delta flow) and a
  0.25-scaled mask head whose softmax gives the convex 3x3 combination that upsamples flow by 8.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from trackstream.models.formats.files import read_torch_file

__all__ = ["RAFT", "pad_to_8", "CORR_LEVELS", "CORR_RADIUS", "DEFAULT_ITERS"]

CORR_LEVELS = 4
CORR_RADIUS = 4
DEFAULT_ITERS = 12  # the reference forward's default; MoveBench's iteration count is not published (docs)
HIDDEN, CONTEXT = 128, 128  # the large model's GRU state and context widths


def _norm(kind: str, channels: int) -> nn.Module:
    # instance norm carries no parameters (affine=False, no running stats), exactly as the reference
    return nn.InstanceNorm2d(channels) if kind == "instance" else nn.BatchNorm2d(channels)


class _Residual(nn.Module):
    """Two 3x3 convs with norm + relu; a strided block also projects the shortcut (1x1 conv + norm3)."""

    def __init__(self, cin: int, cout: int, norm: str, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm1, self.norm2 = _norm(norm, cout), _norm(norm, cout)
        self.downsample = None
        if stride != 1:
            # the reference registers the same norm twice (``norm3`` and ``downsample.1``): the checkpoint
            # holds both key sets, so the module must too
            self.norm3 = _norm(norm, cout)
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride), self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


class _Encoder(nn.Module):
    """BasicEncoder: 7x7/2 conv, three stages of two residual blocks (64, 96/2, 128/2), 1x1 out: 1/8 res."""

    def __init__(self, out_dim: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.norm1 = _norm(norm, 64)
        self.layer1 = nn.Sequential(_Residual(64, 64, norm, 1), _Residual(64, 64, norm, 1))
        self.layer2 = nn.Sequential(_Residual(64, 96, norm, 2), _Residual(96, 96, norm, 1))
        self.layer3 = nn.Sequential(_Residual(96, 128, norm, 2), _Residual(128, 128, norm, 1))
        self.conv2 = nn.Conv2d(128, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


class _MotionEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        planes = CORR_LEVELS * (2 * CORR_RADIUS + 1) ** 2  # 324 correlation channels
        self.convc1 = nn.Conv2d(planes, 256, 1)
        self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
        self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
        self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv = nn.Conv2d(64 + 192, 128 - 2, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc2(F.relu(self.convc1(corr))))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        out = F.relu(self.conv(torch.cat([cor, flo], dim=1)))
        return torch.cat([out, flow], dim=1)  # 126 + 2 = 128 channels


class _SepConvGRU(nn.Module):
    """A ConvGRU step with 1x5 kernels, then another with 5x1: a large receptive field at low cost."""

    def __init__(self, hidden: int, inp: int) -> None:
        super().__init__()
        c = hidden + inp
        for name in ("convz1", "convr1", "convq1"):
            setattr(self, name, nn.Conv2d(c, hidden, (1, 5), padding=(0, 2)))
        for name in ("convz2", "convr2", "convq2"):
            setattr(self, name, nn.Conv2d(c, hidden, (5, 1), padding=(2, 0)))

    @staticmethod
    def _step(h, x, convz, convr, convq):
        hx = torch.cat([h, x], dim=1)
        z, r = torch.sigmoid(convz(hx)), torch.sigmoid(convr(hx))
        q = torch.tanh(convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self._step(h, x, self.convz1, self.convr1, self.convq1)
        return self._step(h, x, self.convz2, self.convr2, self.convq2)


class _FlowHead(nn.Module):
    def __init__(self, inp: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class _UpdateBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = _MotionEncoder()
        self.gru = _SepConvGRU(HIDDEN, 128 + HIDDEN)
        self.flow_head = _FlowHead(HIDDEN, 256)
        # 64 * 9: for each of the 8x8 sub-pixels, weights over the 3x3 coarse neighbours
        self.mask = nn.Sequential(nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(256, 64 * 9, 1))

    def forward(self, net, inp, corr, flow):
        inp = torch.cat([inp, self.encoder(flow, corr)], dim=1)
        net = self.gru(net, inp)
        return net, 0.25 * self.mask(net), self.flow_head(net)  # the 0.25 balances gradients in training


def _coords_grid(b: int, h: int, w: int, device) -> torch.Tensor:
    """[B, 2, h, w] pixel coordinates, channel 0 = x, channel 1 = y."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs, ys], dim=0).float()[None].repeat(b, 1, 1, 1)


def _corr_pyramid(f1: torch.Tensor, f2: torch.Tensor) -> list[torch.Tensor]:
    b, c, h, w = f1.shape
    # [B, h*w, c] @ [B, c, h*w] -> [B, h*w, h*w]: one correlation map over frame 2 per frame-1 pixel
    corr = torch.matmul(f1.view(b, c, h * w).transpose(1, 2), f2.view(b, c, h * w))
    corr = corr.view(b * h * w, 1, h, w) / torch.sqrt(torch.tensor(c).float())
    levels = [corr]
    for _ in range(CORR_LEVELS - 1):
        levels.append(F.avg_pool2d(levels[-1], 2, stride=2))
    return levels


def _corr_lookup(levels: list[torch.Tensor], coords: torch.Tensor) -> torch.Tensor:
    """Sample a (2r+1)^2 window of every pyramid level around ``coords`` [B, 2, h, w] -> [B, 4*81, h, w]."""
    r = CORR_RADIUS
    b, _, h, w = coords.shape
    centre = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
    d = torch.linspace(-r, r, 2 * r + 1, device=coords.device)
    # the reference stacks meshgrid(dy, dx) ("ij") as (first, second) and adds it to (x, y): offset [i, j] is
    # (+d[i] in x, +d[j] in y); the window is symmetric, so only the channel order depends on it, and the
    # checkpoint's convc1 was trained on that order
    delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1).view(1, 2 * r + 1, 2 * r + 1, 2)
    out = []
    for i, corr in enumerate(levels):
        pts = centre / 2**i + delta  # [B*h*w, 9, 9, 2] pixel coordinates at this level
        hh, ww = corr.shape[-2:]
        gx, gy = pts.split([1, 1], dim=-1)
        grid = torch.cat([2 * gx / (ww - 1) - 1, 2 * gy / (hh - 1) - 1], dim=-1)
        out.append(F.grid_sample(corr, grid, align_corners=True).view(b, h, w, -1))
    return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous().float()


def _upsample(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Convex upsampling: [B, 2, h, w] flow + [B, 576, h, w] mask -> [B, 2, 8h, 8w]."""
    b, _, h, w = flow.shape
    mask = torch.softmax(mask.view(b, 1, 9, 8, 8, h, w), dim=2)
    nb = F.unfold(8 * flow, [3, 3], padding=1).view(b, 2, 9, 1, 1, h, w)  # 3x3 neighbours, flow in full-res px
    up = torch.sum(mask * nb, dim=2)  # [B, 2, 8, 8, h, w]
    return up.permute(0, 1, 4, 2, 5, 3).reshape(b, 2, 8 * h, 8 * w)


def pad_to_8(h: int, w: int) -> list[int]:
    """InputPadder's default ("sintel") padding: F.pad order [left, right, top, bottom], split evenly."""
    ph, pw = (-h) % 8, (-w) % 8
    return [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]


class RAFT(nn.Module):
    """RAFT-large. ``flow(a, b)``: [B, 3, H, W] images in [0, 255] (any size) -> flow a->b [B, 2, H, W] px."""

    def __init__(self, iters: int = DEFAULT_ITERS) -> None:
        super().__init__()
        self.iters = iters
        self.fnet = _Encoder(256, "instance")
        self.cnet = _Encoder(HIDDEN + CONTEXT, "batch")
        self.update_block = _UpdateBlock()

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device="cpu", dtype: torch.dtype = torch.float32, iters: int = DEFAULT_ITERS
    ) -> "RAFT":
        """princeton-vl/RAFT's ``raft-things.pth`` (``module.``-prefixed from DataParallel, or not), strictly."""
        fix = "give princeton-vl/RAFT's raft-things.pth (the large model)"
        state = read_torch_file(path, fix=fix)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path} is not a RAFT state dict (a mapping of names to tensors); {fix}")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        model = cls(iters=iters)
        own = model.state_dict()
        # num_batches_tracked only counts training steps: older saves may lack it, eval never reads it
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            what = f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"
            n = len(missing) + len(unexpected)
            raise ValueError(f"{path} is not a RAFT-large checkpoint: {what} ({n} mismatched keys); {fix}")
        for k, v in state.items():
            if v.shape != own[k].shape:
                raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, RAFT-large has {tuple(own[k].shape)}")
        model.load_state_dict(state, strict=False)  # strictness checked above, num_batches_tracked aside
        return model.to(device=device, dtype=dtype).eval()

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, iters: int | None = None):
        """The reference's test mode on images already padded to multiples of 8: (flow at 1/8, flow at full)."""
        dtype = self.cnet.conv1.weight.dtype
        image1 = (2 * (image1 / 255.0) - 1.0).to(dtype).contiguous()
        image2 = (2 * (image2 / 255.0) - 1.0).to(dtype).contiguous()
        b = image1.shape[0]
        fmap1, fmap2 = self.fnet(torch.cat([image1, image2], dim=0)).float().split([b, b], dim=0)
        levels = _corr_pyramid(fmap1, fmap2)  # fp32 as under the reference's autocast

        net, inp = torch.split(self.cnet(image1), [HIDDEN, CONTEXT], dim=1)
        net, inp = torch.tanh(net), torch.relu(inp)

        _, _, h, w = fmap1.shape
        coords0 = _coords_grid(b, h, w, image1.device)
        coords1 = coords0.clone()
        iters = self.iters if iters is None else iters
        if iters < 1:
            raise ValueError(f"RAFT: iters={iters}; at least one refinement is needed")
        for _ in range(iters):
            corr = _corr_lookup(levels, coords1)
            flow = coords1 - coords0
            net, mask, delta = self.update_block(net, inp, corr.to(dtype), flow.to(dtype))
            coords1 = coords1 + delta.float()
        # the reference upsamples every iteration; only the last one is returned in test mode
        flow_up = _upsample(coords1 - coords0, mask.float())
        return coords1 - coords0, flow_up

    @torch.no_grad()
    def flow(self, frame_a: torch.Tensor, frame_b: torch.Tensor, iters: int | None = None) -> torch.Tensor:
        """Optical flow a -> b: [B, 3, H, W] (uint8 or float in [0, 255]) -> float32 [B, 2, H, W] pixels."""
        if frame_a.shape != frame_b.shape or frame_a.ndim != 4 or frame_a.shape[1] != 3:
            raise ValueError(
                f"RAFT.flow takes two [B, 3, H, W] images, got {tuple(frame_a.shape)}, {tuple(frame_b.shape)}"
            )
        device = self.cnet.conv1.weight.device
        h, w = frame_a.shape[-2:]
        pad = pad_to_8(h, w)
        if min(h + pad[2] + pad[3], w + pad[0] + pad[1]) < 128:
            # below 16 feature pixels the coarsest pyramid level is 1 px wide: its sampling divides by zero
            raise ValueError(f"RAFT.flow: {h}x{w} images are too small; the correlation pyramid needs >= 128 px a side")
        a, b = (F.pad(x.to(device).float(), pad, mode="replicate") for x in (frame_a, frame_b))
        _, up = self.forward(a, b, iters)
        return up[..., pad[2] : pad[2] + h, pad[0] : pad[0] + w].float()
