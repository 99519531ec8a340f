"""DiT input-channel conditioning: first-frame (I2V) layouts and patch-embedding growth.

The Wan DiT concatenates ``y`` after the noisy latent x on channels before the patch embedding
(``WanModel.patchify``). Layouts of y supported here (C = track-head channels, 0 without tracks):

  layout          y channels                                          DiT in_dim
  ``t2v``         [track C]                                           16 + C
  ``wan_i2v``     [mask 4, image latent 16, track C]                  36 + C   (official I2V, Fun-InP)
  ``fun_control`` [control 16 (= track features), start latent 16]    48       (Wan2.1-Fun-Control)
  ``ti2v``        [track C]                                           48 + C   (Wan 2.2 TI2V-5B)

``ti2v`` carries the image the Wan 2.2 way: no channels at all; latent frame 0 of x IS the clean
first-frame latent at timestep 0 (per-frame timesteps, the ``clean_first_frame`` convention of
models.motion_wan.Conventions), so only the tracks are concatenated.

``wan_i2v`` follows the official Wan 2.1 I2V pipeline exactly (image + mid-grey frames VAE-encoded, mask
built at pixel rate and folded 4x). ``fun_control`` follows VideoX-Fun: the start image is
encoded ALONE (one latent frame, identical to frame 0 of a longer encode since the VAE is
causal) and placed in latent frame 0, zeros elsewhere. MotionStream initialises its teacher
from (partial) VideoX-Fun control weights; putting the 16 track channels in the control slot
is our reading of that, not a published detail. Track channels beyond a base checkpoint's
in_dim are added by ``expand_patch_embedding`` with zero weights, so the expanded model starts
as exactly (bitwise) the base model.

Codecs are passed in (any object with ``encode(video [B, 3, T, H, W] in [-1, 1]) ->
normalised latents [B, C_lat, 1 + (T-1)/4, H/s, W/s]``, 16 channels at s = 8 for Wan 2.1, 48 at
s = 16 for Wan 2.2); nothing here loads weights.
Legend: B batch, T pixel frames, F latent frames, H/W pixels, h/w latent height/width.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from trackstream.models.tracks import latent_frames

__all__ = [
    "LatentEncoder",
    "LAYOUTS",
    "IMAGE_IN_LATENT",
    "condition_channels",
    "i2v_mask",
    "i2v_condition",
    "start_image_latents",
    "fun_control_condition",
    "compose_condition",
    "expand_patch_embedding",
    "SplitPatchEmbedding",
]

LAYOUTS = ("t2v", "wan_i2v", "fun_control", "ti2v")
IMAGE_IN_LATENT = ("ti2v",)  # layouts whose image is latent frame 0 of x (clean, t = 0), not channels of y
MASK_CHANNELS = 4  # = the codec's temporal factor: one mask channel per pixel frame of a group
FUN_CONTROL_CHANNELS = 16


class LatentEncoder(Protocol):
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] pixels in [-1, 1] -> normalised latents [B, C, 1 + (T-1)/4, H/8, W/8]."""
        ...


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; choose one of {LAYOUTS}")


def condition_channels(layout: str, track_channels: int = 0, *, latent_channels: int = 16) -> int:
    """Channels of y for a layout; the DiT's in_dim is ``latent_channels`` more."""
    _check_layout(layout)
    if layout in ("t2v", "ti2v"):
        return track_channels
    if layout == "wan_i2v":
        return MASK_CHANNELS + latent_channels + track_channels
    if track_channels not in (0, FUN_CONTROL_CHANNELS):
        raise ValueError(
            f"layout 'fun_control' puts tracks in its {FUN_CONTROL_CHANNELS}-channel control slot; "
            f"got track_channels={track_channels} (set the track head's out_channels to 16)"
        )
    return FUN_CONTROL_CHANNELS + latent_channels


def _check_image(image: torch.Tensor) -> None:
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be [B, 3, H, W] in [-1, 1], got {tuple(image.shape)}")


def _check_num_frames(num_frames: int) -> int:
    if num_frames < 1 or (num_frames - 1) % 4:
        raise ValueError(f"num_frames={num_frames} must be 1 + 4k (the Wan VAE's frame grouping)")
    return latent_frames(num_frames)


def _resize(image: torch.Tensor, height: int | None, width: int | None) -> torch.Tensor:
    """Bicubic resize without keeping aspect (official ``F.interpolate(..., 'bicubic')``)."""
    if height is None and width is None:
        return image
    size = (height or image.shape[2], width or image.shape[3])
    if tuple(image.shape[2:]) == size:
        return image
    return F.interpolate(image.float(), size=size, mode="bicubic", align_corners=False).to(image.dtype)


def i2v_mask(
    num_frames: int,
    latent_height: int,
    latent_width: int,
    *,
    batch: int = 1,
    last_frame: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Wan I2V mask [B, 4, F, h, w]: latent frame 0 all ones, the others zero.

    Built as the official: a pixel-rate mask (1 = frame given), frame 0 repeated 4 times so
    that 1 + 4k frames become 4(1 + k), then each group of 4 folded into channels (channel j of
    latent t >= 1 is pixel frame 4(t-1) + 1 + j). ``last_frame`` also marks the last pixel frame
    (FLF2V: its bit lands in channel 3 of the last latent).
    """
    nf = _check_num_frames(num_frames)
    m = torch.zeros(batch, num_frames, latent_height, latent_width, device=device, dtype=dtype)
    m[:, 0] = 1
    if last_frame:
        m[:, -1] = 1
    m = torch.cat([m[:, :1].expand(-1, MASK_CHANNELS - 1, -1, -1), m], dim=1)  # [B, 4F, h, w]
    return m.view(batch, nf, MASK_CHANNELS, latent_height, latent_width).transpose(1, 2)  # [B, 4, F, h, w]


def i2v_condition(
    codec: LatentEncoder,
    image: torch.Tensor,
    *,
    num_frames: int,
    last_image: torch.Tensor | None = None,
    height: int | None = None,
    width: int | None = None,
) -> torch.Tensor:
    """Official Wan I2V y: [mask 4, latent 16] -> [B, 20, F, h, w].

    image [B, 3, H, W] in [-1, 1] (bicubic-resized to ``height`` x ``width`` if given) is put at
    frame 0 of a ``num_frames`` video whose other frames are 0 (mid-grey), and the whole video
    is encoded: the "empty" latents are real encodings of grey, not zeros. ``last_image``
    (FLF2V) goes to the last frame and is marked in the mask.
    """
    _check_image(image)
    _check_num_frames(num_frames)
    image = _resize(image, height, width)
    B, _, H, W = image.shape
    video = image.new_zeros(B, 3, num_frames, H, W)
    video[:, :, 0] = image
    if last_image is not None:
        _check_image(last_image)
        video[:, :, -1] = _resize(last_image, H, W)
    lat = codec.encode(video)  # [B, 16, F, h, w]
    mask = i2v_mask(
        num_frames,
        lat.shape[3],
        lat.shape[4],
        batch=B,
        last_frame=last_image is not None,
        device=lat.device,
        dtype=lat.dtype,
    )
    if mask.shape[2] != lat.shape[2]:
        raise ValueError(
            f"codec gave {lat.shape[2]} latent frames for {num_frames} pixel frames; expected {mask.shape[2]}"
        )
    return torch.cat([mask, lat], dim=1)


def start_image_latents(
    codec: LatentEncoder,
    image: torch.Tensor,
    *,
    num_frames: int,
    height: int | None = None,
    width: int | None = None,
) -> torch.Tensor:
    """Fun-Control start-image channels [B, 16, F, h, w]: the image's latent at frame 0, zeros after."""
    _check_image(image)
    nf = _check_num_frames(num_frames)
    image = _resize(image, height, width)
    lat0 = codec.encode(image[:, :, None])  # [B, 16, 1, h, w]
    out = lat0.new_zeros(lat0.shape[0], lat0.shape[1], nf, *lat0.shape[3:])
    out[:, :, :1] = lat0
    return out


def compose_condition(
    layout: str,
    *,
    first_frame: torch.Tensor | None = None,
    track: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Assemble y for ``layout`` (see the module table); None when there is nothing to add.

    first_frame: ``i2v_condition`` output (wan_i2v) or ``start_image_latents`` output
    (fun_control); track: TrackHead output [B, C, F, h, w] or None. In ``fun_control`` a
    missing track (or control video) is a zero control slot, as VideoX-Fun does.
    """
    _check_layout(layout)
    if layout in ("t2v", "ti2v"):
        if first_frame is not None:
            raise ValueError(
                f"layout {layout!r} takes no first_frame channels (ti2v: the image is latent frame 0 "
                "of x); use 'wan_i2v' or 'fun_control' for channel conditioning"
            )
        return track
    if first_frame is None:
        raise ValueError(f"layout {layout!r} needs first_frame (i2v_condition / start_image_latents output)")
    if track is not None and (track.shape[0] != first_frame.shape[0] or track.shape[2:] != first_frame.shape[2:]):
        raise ValueError(
            f"track {tuple(track.shape)} and first_frame {tuple(first_frame.shape)} differ outside channels"
        )
    if layout == "wan_i2v":
        return first_frame if track is None else torch.cat([first_frame, track.to(first_frame.dtype)], dim=1)
    if track is None:
        track = first_frame.new_zeros(first_frame.shape[0], FUN_CONTROL_CHANNELS, *first_frame.shape[2:])
    condition_channels("fun_control", track.shape[1])  # validates the control-slot width
    return torch.cat([track.to(first_frame.dtype), first_frame], dim=1)


def fun_control_condition(
    codec: LatentEncoder,
    image: torch.Tensor,
    *,
    num_frames: int,
    control: torch.Tensor | None = None,
    height: int | None = None,
    width: int | None = None,
) -> torch.Tensor:
    """Fun-Control y [B, 32, F, h, w] = [control 16 (zeros if None), start-image latent 16]."""
    start = start_image_latents(codec, image, num_frames=num_frames, height=height, width=width)
    return compose_condition("fun_control", first_frame=start, track=control)


class SplitPatchEmbedding(nn.Conv3d):
    """A patch-embedding Conv3d that convolves channel groups separately and sums them in order.

    Parameters and state-dict keys are those of a plain ``nn.Conv3d`` with all the channels
    (``patch_embedding.weight`` / ``.bias``), so checkpoints stay official-format. Why split:
    one conv over more input channels may reduce in a different order (oneDNN blocks the
    channel reduction by size), so even with zero weights on the new channels its output can
    differ from the base conv in the last bit. Group 0 is the base channels, convolved exactly
    as the base conv did (same shapes, same values, same kernel), and each later group adds
    ``conv(x_group, w_group)`` which is exactly +0 while its weights are zero: the expanded
    model reproduces the base model bit for bit. The extra cost is one small conv per group.
    """

    channel_groups: list[list[tuple[int, int]]]  # per group, [start, stop) input-channel ranges

    @staticmethod
    def _take(t: torch.Tensor, ranges: list[tuple[int, int]]) -> torch.Tensor:
        if len(ranges) == 1 and ranges[0] == (0, t.shape[1]):
            return t
        return torch.cat([t[:, a:b] for a, b in ranges], dim=1).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for i, ranges in enumerate(self.channel_groups):
            y = F.conv3d(
                self._take(x, ranges),
                self._take(self.weight, ranges),
                self.bias if i == 0 else None,
                self.stride,
                self.padding,
                self.dilation,
                self.groups,
            )
            out = y if out is None else out + y
        return out


def _insert_ranges(groups: list[list[tuple[int, int]]], pos: int, extra: int) -> list[list[tuple[int, int]]]:
    """Renumber channel ranges after inserting ``extra`` channels at ``pos``; append the new group."""
    moved = []
    for ranges in groups:
        new = []
        for a, b in ranges:
            if b <= pos:
                new.append((a, b))
            elif a >= pos:
                new.append((a + extra, b + extra))
            else:  # the insertion point falls inside this range: split it around the new channels
                new += [(a, pos), (pos + extra, b + extra)]
        moved.append(new)
    return moved + [[(pos, pos + extra)]]


@torch.no_grad()
def expand_patch_embedding(model: nn.Module, extra_in: int, *, position: str | int = "end") -> nn.Module:
    """Grow ``model.patch_embedding`` by ``extra_in`` ZERO-initialised input channels, in place.

    Load the base checkpoint first, then expand: the new channels' weights are exactly zero,
    so the model's output is exactly (bitwise, see ``SplitPatchEmbedding``) the base output
    whatever those channels carry (tracks or zeros), and training starts from the base model
    (a zero-conv, as in ControlNet). ``position`` is "end" (after every existing channel: the
    layouts above append tracks) or a channel index to insert at. Updates ``model.in_dim``
    when present. Expand before FSDP wrapping or optimizer construction: the conv is replaced.
    """
    old = model.patch_embedding
    if not isinstance(old, nn.Conv3d):
        raise ValueError(f"model.patch_embedding must be an nn.Conv3d, got {type(old).__name__}")
    if extra_in < 0:
        raise ValueError(f"extra_in={extra_in} must be >= 0")
    if extra_in == 0:
        return model
    c_in = old.in_channels
    pos = c_in if position == "end" else position
    if not isinstance(pos, int) or not 0 <= pos <= c_in:
        raise ValueError(f"position={position!r} must be 'end' or a channel index in [0, {c_in}]")
    w = old.weight  # [dim, C_in, pt, ph, pw]
    new = SplitPatchEmbedding(
        c_in + extra_in,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        bias=old.bias is not None,
        device=w.device,
        dtype=w.dtype,
    )
    base_groups = getattr(old, "channel_groups", [[(0, c_in)]])
    new.channel_groups = _insert_ranges(base_groups, pos, extra_in)
    zeros = w.new_zeros(w.shape[0], extra_in, *w.shape[2:])
    new.weight.copy_(torch.cat([w[:, :pos], zeros, w[:, pos:]], dim=1))
    if old.bias is not None:
        new.bias.copy_(old.bias)
    new.weight.requires_grad_(w.requires_grad)
    if new.bias is not None:
        new.bias.requires_grad_(old.bias.requires_grad)
    model.patch_embedding = new
    if hasattr(model, "in_dim"):
        model.in_dim = c_in + extra_in
    return model
