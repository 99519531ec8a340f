"""Per-chunk pieces of the causal student, shared by the streaming engine and Self-Forcing DMD.

Both the inference engine (``stream.engine``) and the DMD rollout (``train.dmd.objective``) call exactly
these functions, so training simulates inference step for step (MotionStream §3.2: "Our
inference procedure identically follows the training process"):

* ``StreamConfig`` (``models.streaming``): chunking (c3s1w1 by default), the K-step
  list on the shared step grid of ``diffusion.schedule`` (one shift for teacher, ODE pairs, ODE
  init, DMD and inference), the one streaming type from the config to the export to the engine.
* ``VideoCondition``: what is fixed for one video: the projected text context, the first-frame
  channels of the I2V layout (a training clip's tensor, or a stream's on-demand source,
  ``models.first_frame_stream``), the clean image latent, the track IDs.
* ``chunk_condition``: the DiT's ``y`` for one chunk from that chunk's track features only.
* ``denoise_chunk``: K-step sampling of one chunk through the rolling KV cache, optionally
  stopping at an exit step with gradient (Self-Forcing's gradient truncation).
* ``commit_chunk``: the clean re-run at t = 0 whose K/V enter the cache (no gradient).

Chunk layout, two kinds (given / sampled chunk 0): ``models.streaming``.
Legend: B batch, C channels, F latent frames, h/w latent size, T pixel frames, N tracks, D embed dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

from trackstream.diffusion.schedule import add_noise, sigma_to_t, x0_from_velocity
from trackstream.models.causal import KVCache, new_cache, stream_step
from trackstream.models.channel_layouts import compose_condition
from trackstream.models.first_frame_stream import FirstFrameChannels, first_frame_channels
from trackstream.models.stream_buffers import StepBuffers
from trackstream.models.streaming import CausalConfig
from trackstream.models.tracks import (
    TEMPORAL_FACTOR,
    check_convention,
    fastvideo_id_embedding,
    rasterize_tracks,
    rasterize_tracks_fastvideo,
    track_id_embedding,
)

__all__ = [
    "whole_chunks",
    "VideoCondition",
    "build_video_condition",
    "chunk_pixel_frames",
    "chunk_condition",
    "track_features",
    "denoise_chunk",
    "commit_chunk",
    "start_cache",
]


def whole_chunks(cfg: CausalConfig, num_latents: int) -> int:
    """Chunks that fit entirely in ``num_latents`` latent frames (0 if not even chunk 0 does)."""
    n = 0
    while cfg.chunk_start(n) + cfg.chunk_len(n) <= num_latents:
        n += 1
    return n


def chunk_pixel_frames(cfg: CausalConfig, index: int) -> tuple[int, int]:
    """[start, stop) pixel frames of chunk ``index`` (Wan grouping: latent 0 = frame 0, latent j = 4j-3..4j)."""
    s, f = cfg.chunk_start(index), cfg.chunk_len(index)
    lo = 0 if s == 0 else TEMPORAL_FACTOR * s - (TEMPORAL_FACTOR - 1)
    hi = TEMPORAL_FACTOR * (s + f - 1) + 1
    return lo, hi


@dataclass(frozen=True, eq=False)
class VideoCondition:
    """Per-video constants. ``image_cond``: the I2V layout's first-frame channels, either a clip's own
    [B, C_img, F, h, w] (training: the whole clip was encoded) or a stream's ``FirstFrameChannels``, which
    encodes them exactly for any latent as the stream goes on; None for layouts without them."""

    context: torch.Tensor  # [B, L, text_dim] projected text (MotionWan.project_text)
    image_latent: torch.Tensor  # [B, C, 1, h, w] clean latent of the first frame (chunk 0, the sink)
    image_cond: Union[torch.Tensor, FirstFrameChannels, None]
    track_ids: Optional[torch.Tensor]  # [B, N] long, fixed for the whole video
    height: int  # pixels
    width: int
    image_features: Optional[torch.Tensor] = None  # [B, 257, 1280] CLIP tokens (flavors with the image branch)

    def image_channels(self, start: int, frames: int) -> Optional[torch.Tensor]:
        """[B, C_img, frames, h, w] of latents [start, start + frames), None for layouts without them."""
        if self.image_cond is None:
            return None
        if isinstance(self.image_cond, FirstFrameChannels):
            return self.image_cond.span(start, frames)
        if start + frames > self.image_cond.shape[2]:
            raise ValueError(
                f"latents [{start}, {start + frames}) run past the clip's {self.image_cond.shape[2]} latents of "
                "image channels; encode the clip as long as the span (or stream: build_video_condition)"
            )
        return self.image_cond[:, :, start : start + frames]


def build_video_condition(
    network,
    codec,
    image: torch.Tensor,
    text: torch.Tensor,
    text_lengths: torch.Tensor,
    *,
    track_ids: Optional[torch.Tensor],
    image_features: Optional[torch.Tensor] = None,
) -> VideoCondition:
    """First frame [B, 3, H, W] in [-1, 1] + frozen-encoder text -> ``VideoCondition``.

    The I2V channels come from ``first_frame_channels``: for any span, exactly what the network's
    convention gives a clip that long (wan_i2v: the causal VAE's encode of [image, grey frames...];
    fun_control: the image's latent at frame 0, zeros after), encoded as the stream asks. The frozen
    codec runs under no_grad; the text projection runs under the caller's grad mode (it is trained in DMD).
    ``image_features``: the first frame's CLIP tokens, required by networks with the image branch.
    """
    if network.needs_image_features and image_features is None:
        raise ValueError(
            "this network has the I2V image branch: pass image_features (Conditioner.image_features of the first frame)"
        )
    _, _, H, W = image.shape
    with torch.no_grad():
        image_latent = codec.encode(image[:, :, None]).float()  # [B, C, 1, h, w]: causal, = frame 0 of any clip
    image_cond = None
    if network.layout in ("wan_i2v", "fun_control"):
        image_cond = first_frame_channels(codec, image, network.layout, image_latent=image_latent)
    return VideoCondition(
        context=network.project_text(text, text_lengths),
        image_latent=image_latent,
        image_cond=image_cond,
        track_ids=track_ids,
        height=H,
        width=W,
        image_features=image_features,
    )


def track_features(
    cond: VideoCondition,
    tracks: Optional[torch.Tensor],
    visibility: Optional[torch.Tensor],
    *,
    embed_dim: int,
    splat: str = "nearest",
    convention: str = "trackstream",
) -> Optional[torch.Tensor]:
    """Tracks of a span of pixel frames [B, T, N, 2] + visibility [B, T, N] -> c_m [B, D, T, h, w] (eq. 1).

    ``convention``: the network's track convention (``TrackEncoder.convention``): its ID embedding and
    rasterisation (FastVideo's rounds each point onto the grid). Each frame is rasterised alone, so a span
    equals the slice of the whole video's map. None (no tracks supplied) stays None: the empty motion condition."""
    if tracks is None:
        return None
    if cond.track_ids is None:
        raise ValueError("tracks were given but the VideoCondition has no track_ids; pass track_ids when starting")
    if tracks.shape[2] != cond.track_ids.shape[1]:
        raise ValueError(
            f"tracks have {tracks.shape[2]} points but the video was started with "
            f"{cond.track_ids.shape[1]} track IDs; keep the same N for the whole stream"
        )
    factor = cond.height // cond.image_latent.shape[-2]  # the codec's spatial factor
    if check_convention(convention) == "fastvideo":
        emb = fastvideo_id_embedding(cond.track_ids.to(tracks.device), embed_dim)
        return rasterize_tracks_fastvideo(
            tracks, visibility, emb, height=cond.height, width=cond.width, spatial_factor=factor
        )
    emb = track_id_embedding(cond.track_ids.to(tracks.device), embed_dim)
    return rasterize_tracks(
        tracks, visibility, emb, height=cond.height, width=cond.width, spatial_factor=factor, splat=splat
    )


def chunk_condition(
    network, cond: VideoCondition, cfg: CausalConfig, index: int, motion: Optional[torch.Tensor]
) -> Optional[torch.Tensor]:
    """y [B, C_y, f, h, w] of chunk ``index`` from ITS track features only (c_m of its pixel frames,
    [B, D, T_chunk, h, w], or None for the empty motion). The track head folds 4 pixel frames per
    latent and chunk 0 is the single first frame, so chunk-wise heads equal the full-video head."""
    s, f = cfg.chunk_start(index), cfg.chunk_len(index)
    image = cond.image_channels(s, f)
    track = None
    if network.track_encoder is not None:
        if motion is None:
            B, (h, w) = cond.image_latent.shape[0], cond.image_latent.shape[-2:]
            track = cond.image_latent.new_zeros(B, network.track_encoder.out_channels, f, h, w)
        else:
            lo, hi = chunk_pixel_frames(cfg, index)
            if motion.shape[2] != hi - lo:
                raise ValueError(
                    f"chunk {index} spans pixel frames [{lo}, {hi}) = {hi - lo} frames; "
                    f"its track features have {motion.shape[2]}"
                )
            track = network.track_encoder.head(motion, has_first_frame=index == 0)
    elif motion is not None:
        raise ValueError("the network has no track head (model.track_channels=0) but tracks were given")
    return compose_condition(network.layout, first_frame=image, track=track)


def start_cache(network, cond: VideoCondition, cfg: CausalConfig) -> KVCache:
    """Empty rolling cache with the prompt's (and the image's CLIP tokens') cross-attention K/V,
    built under the caller's grad mode."""
    return new_cache(network.dit, cfg, cond.context, cond.image_features)


def denoise_chunk(
    network,
    cache: KVCache,
    noise: torch.Tensor,
    y: Optional[torch.Tensor],
    sigmas: torch.Tensor,
    *,
    fresh_noise: Callable[[], torch.Tensor],
    exit_step: Optional[int] = None,
    grad: bool = False,
    buffers: Optional[StepBuffers] = None,
    on_input: Optional[Callable[[int, torch.Tensor], torch.Tensor]] = None,
    on_x0: Optional[Callable[[int, torch.Tensor], torch.Tensor]] = None,
    input_at: Optional[int] = None,
    grad_step: Optional[int] = None,
) -> torch.Tensor:
    """K-step sampling of chunk ``cache.next_chunk`` from ``noise`` [B, C, f, h, w] -> x0 [B, C, f, h, w].

    Each step predicts x0 from the step's input and re-noises it to the next level with FRESH noise
    (``fresh_noise()``; the few-step consistency sampler of Self-Forcing/DMD). ``exit_step`` stops
    after that step and returns its x0 (gradient truncation); only that step runs with grad when
    ``grad`` is set, every earlier one under no_grad. The cache is read, never written.
    ``buffers``: the stream's static step buffers (inference, ``models.stream_buffers``), else the reference step.
    The one sampler loop of the project; DragStream steers it through hooks, called outside the pass's
    grad mode: ``on_input(k, x)`` may replace step k's input (the latent optimisation at step T'),
    ``on_x0(k, x0)`` step k's prediction (ADSR's rectification); ``input_at``: return step k's input
    without running it (the reference chunk's latent at T', the same noise draws). ``grad_step``: the one
    step that runs with grad when ``grad`` is set (default: the last one run); AR-Drag's Self-Rollout takes
    its loss there through ``on_x0`` and samples on to the clean latent without grad.
    """
    K = len(sigmas) - 1
    last = K - 1 if exit_step is None else exit_step
    if not 0 <= last < K:
        raise ValueError(f"exit_step={exit_step} must be in [0, {K - 1}]")
    if input_at is not None and not 0 <= input_at <= last:
        raise ValueError(f"input_at={input_at} must be in [0, {last}]")
    grad_step = last if grad_step is None else grad_step
    if not 0 <= grad_step <= last:
        raise ValueError(f"grad_step={grad_step} must be in [0, {last}]")
    x, B = noise, noise.shape[0]
    for k in range(last + 1):
        if k == input_at:
            return x
        if on_input is not None:
            x = on_input(k, x)
        sigma = sigmas[k].float().expand(B).to(noise.device)
        with torch.set_grad_enabled(grad and k == grad_step):
            v = stream_step(network.dit, cache, x, sigma_to_t(sigma), y=y, buffers=buffers).pred
            x0 = x0_from_velocity(x, v, sigma)
        if on_x0 is not None:
            x0 = on_x0(k, x0)
        if k < last:
            x = add_noise(x0.detach(), fresh_noise(), sigmas[k + 1].float().expand(B).to(noise.device))
    return x0


@torch.no_grad()
def commit_chunk(
    network, cache: KVCache, x0: torch.Tensor, y: Optional[torch.Tensor], *, buffers: Optional[StepBuffers] = None
) -> KVCache:
    """The clean re-run at t = 0 (no noise added): its K/V enter the cache, which rolls."""
    B = x0.shape[0]
    out = stream_step(network.dit, cache, x0.detach(), torch.zeros(B, device=x0.device), y=y, buffers=buffers)
    return cache.append(out.kv)
