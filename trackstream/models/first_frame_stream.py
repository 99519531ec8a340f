"""The first-frame channels of the I2V layouts (``models.channel_layouts``) for a stream of ANY length.

``wan_i2v`` (official Wan 2.1 I2V, Fun-InP, FastVideo's WanTrack): a clip's image channels are
[mask 4, latent 16], the latents being the VAE encode of the whole clip [image, then zero (mid-grey in
[-1, 1]) frames] (``i2v_condition``). The Wan VAE encoder is causal, each causal conv carrying its last input
frames from group to group, so frame 0 reaches latents far past any short reference length (its stacked
convolutions at every temporal scale reach back tens of latents: with the Wan 2.1 architecture the encode
state stops changing only after latent 29): latent j depends on j, not on the clip's length. Here they are encoded as a stream needs them: the image, then 4 grey frames per latent,
through the codec's streaming encoder (``VideoCodec.encode_chunk``), which is the whole-clip encode's
own group-by-group loop with its cache carried over, so latent j equals latent j of any longer clip.

``fun_control`` (VideoX-Fun): the image encoded alone at latent 0, zeros after (``start_image_latents``):
exact for any span with nothing more to encode.

Memory stays bounded however long the stream: the codec's encode state (fixed size: the last frames of
each causal conv; about 2.2 GB per sample for the released Wan 2.1 VAE at 480x832 in float32, measured at
64x64 and scaled by area) and the last ``keep`` latents, enough for a consumer that asks increasing spans and
looks back a few chunks (DragStream's reference chunk, a replayed state). A span older than those is
encoded again from the image: exact (the same ops in the same order), one encoder pass per latent up
to it. One latent of image channels is small (16 x 60 x 104 floats, 0.4 MB, at 480p): the kept ones
cost far less than the encoder state; keeping every latent of an hour-long stream would not.
When one grey group leaves the encode state unchanged, the state is a fixed point: every later latent
equals this one, so the state is dropped and no more encoding is done. The receptive field being finite, that
point comes at a fixed latent for an architecture whatever its weights: a stream's encoding cost ends there.

Legend: B batch, C latent channels, F latent frames, h/w latent size, H/W pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Optional

import torch

from trackstream.models.channel_layouts import MASK_CHANNELS

__all__ = ["FirstFrameChannels", "KEEP_LATENTS", "first_frame_channels", "same_state"]

KEEP_LATENTS = 32  # latents kept: 10 chunks of 3 back, 0.4 MB each per sample at 480p


def _leaves(state: Any) -> list:
    """A codec state (tensors inside tuples, lists, dicts and dataclasses) flattened, its structure kept as
    leaves too (types, keys), so two states flatten alike only if they are built alike."""
    if isinstance(state, (tuple, list)):
        return [type(state), len(state)] + [x for item in state for x in _leaves(item)]
    if isinstance(state, dict):
        return [dict, tuple(state)] + [x for v in state.values() for x in _leaves(v)]
    if is_dataclass(state) and not isinstance(state, type):
        return [type(state)] + [x for f in fields(state) for x in _leaves(getattr(state, f.name))]
    return [state]


def same_state(a: Any, b: Any) -> bool:
    """Whether two codec states are identical, bit for bit; one device sync however many tensors."""
    la, lb = _leaves(a), _leaves(b)
    if len(la) != len(lb):
        return False
    equal = []
    for x, y in zip(la, lb):
        if torch.is_tensor(x) != torch.is_tensor(y):
            return False
        if not torch.is_tensor(x):
            if x is not y and x != y:
                return False
        elif x.shape != y.shape or x.device != y.device:
            return False
        else:
            equal.append((x == y).all())
    return not equal or bool(torch.stack(equal).all())


@dataclass(eq=False)
class FirstFrameChannels:
    """Image channels of latent spans, encoded on demand (a memo of a pure function of the latent index:
    states that share it, replayed or branched, read the same values)."""

    codec: Any  # a ``VideoCodec`` with a streaming encoder (wan_i2v)
    image: torch.Tensor  # [B, 3, H, W] in [-1, 1]
    layout: str  # "wan_i2v" or "fun_control"
    image_latent: Optional[torch.Tensor] = None  # [B, C, 1, h, w], the image encoded alone (fun_control)
    keep: int = KEEP_LATENTS
    encoder: Any = None  # the codec's encode state after the groups fed so far; None before the image
    done: int = 0  # latents encoded so far
    # the last <= keep of them, latents [done - len(kept), done), each [B, C, h, w]; a list, not a buffer
    # written in place, so a stream started under inference_mode may go on outside it
    kept: list = field(default_factory=list)
    steady: bool = False  # the encode state reached a fixed point: every latent from done - 1 on is the same

    def span(self, start: int, frames: int) -> torch.Tensor:
        """Channels of latents [start, start + frames) -> [B, C_img, frames, h, w] (float32)."""
        if start < 0 or frames < 1:
            raise ValueError(f"a span of image channels needs start >= 0 and frames >= 1, got {start}, {frames}")
        if self.layout == "fun_control":
            out = self.image_latent.new_zeros(*self.image_latent.shape[:2], frames, *self.image_latent.shape[3:])
            if start == 0:
                out[:, :, :1] = self.image_latent
            return out
        latents = self._latents(start, frames)
        mask = latents.new_zeros(latents.shape[0], MASK_CHANNELS, *latents.shape[2:])
        if start == 0:
            mask[:, :, 0] = 1  # the official mask: latent 0 given, every later latent not
        return torch.cat([mask, latents], dim=1)

    def _latents(self, start: int, frames: int) -> torch.Tensor:
        stop = start + frames
        self.keep = max(self.keep, frames)  # a span wider than the memo widens it
        if start < self.done - len(self.kept):  # older than the memo: encode again from the image
            self._restart()
        while self.done < stop and not self.steady:
            self._advance()
        first = self.done - len(self.kept)
        assert start >= first, f"span [{start}, {stop}) fell out of the memo (latents [{first}, {self.done}))"
        # past a fixed point every latent is the last one encoded
        picked = [self.kept[min(j, self.done - 1) - first] for j in range(start, stop)]
        return torch.stack(picked, dim=2)  # frames x [B, C, h, w] -> [B, C, frames, h, w]

    def _restart(self) -> None:
        self.encoder, self.done, self.kept, self.steady = None, 0, [], False

    @torch.no_grad()
    def _advance(self) -> None:
        """Feed the next group: the image at the start, then 4 grey frames (one latent, or none yet for
        an encoder that completes a latent only with the next group's frames)."""
        if self.encoder is None:
            before, video = self.codec.init_encode_state(), self.image[:, :, None]
        else:
            B, _, H, W = self.image.shape
            before, video = self.encoder, self.image.new_zeros(B, 3, self.codec.temporal_factor, H, W)
        z, after = self.codec.encode_chunk(video, before)  # [B, C, 0 or 1, h, w]
        assert z.shape[2] <= 1, f"one group gave {z.shape[2]} latents"
        if z.shape[2]:
            self.kept = (self.kept + [z[:, :, 0].float()])[-self.keep :]  # the newest keep latents
            self.done += 1
        # the same grey input from the same state: the state and the latent repeat from here on
        self.steady = self.encoder is not None and z.shape[2] == 1 and same_state(before, after)
        self.encoder = None if self.steady else after


def first_frame_channels(
    codec, image: torch.Tensor, layout: str, *, image_latent: torch.Tensor, keep: int = KEEP_LATENTS
) -> FirstFrameChannels:
    """The stream source of ``layout``'s image channels for ``image`` [B, 3, H, W] in [-1, 1]; its
    ``image_latent`` [B, C, 1, h, w] is ``codec.encode`` of the image alone."""
    if layout not in ("wan_i2v", "fun_control"):
        raise ValueError(f"layout {layout!r} has no first-frame channels (wan_i2v and fun_control have)")
    if keep < 1:
        raise ValueError(f"keep={keep} must be >= 1 latent")
    if layout == "wan_i2v":
        try:
            codec.init_encode_state()
        except NotImplementedError as e:
            raise ValueError(
                f"layout 'wan_i2v' conditions a stream on the encode of [image, grey frames...] of any length: the "
                f"codec needs a streaming encoder (VideoCodec.encode_chunk) ({e})"
            ) from None
    return FirstFrameChannels(codec=codec, image=image, layout=layout, image_latent=image_latent, keep=keep)
