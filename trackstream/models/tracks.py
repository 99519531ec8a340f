"""Point-track conditioning (MotionStream §3.1): sinusoidal track-ID embeddings written on the
latent grid, a light learnable track head, and the stochastic mid-frame masking transform.

Representation (pixel rate, shared by data/, train/ and stream/):
  tracks      [B, T, N, 2]  float pixel coordinates (x, y) of N points in T pixel frames,
                            T = 1 + 4k (Wan's causal-VAE frame convention);
  visibility  [B, T, N]     bool; invisible, out-of-frame and non-finite points write nothing.

Pipeline: ``sample_track_ids`` -> ``track_id_embedding`` (phi_n, d = 64) -> ``rasterize_tracks``
(MotionStream eq. 1, c_m [B, d, T, H/8, W/8]) -> ``TrackHead`` (4x temporal fold + 1x1x1 conv ->
[B, C_track, 1 + k, H/8, W/8]), which the DiT receives on its input channels through ``y``
(see ``models.channel_layouts.expand_patch_embedding`` and ``compose_condition``).

Legend: B batch, T pixel frames, N tracks, D embedding dim, F = 1 + (T-1)/4 latent frames,
h/w latent height/width (pixels / spatial factor).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

__all__ = [
    "TRACK_EMBED_DIM",
    "TEMPORAL_FACTOR",
    "latent_frames",
    "SPLATS",
    "drop_region",
    "sample_track_ids",
    "track_id_embedding",
    "rasterize_tracks",
    "TrackHead",
    "TrackEncoder",
    "mask_mid_frames",
    "TRACK_CONVENTIONS",
    "FASTVIDEO_ID_RANGE",
    "fastvideo_id_embedding",
    "rasterize_tracks_fastvideo",
]

TRACK_EMBED_DIM = 64  # d in MotionStream (appendix D)
# IDs are drawn without replacement from [0, DEFAULT_ID_RANGE): unique per sample up to 4096
# tracks, which covers the 50x50 CoTracker grids and the 1000-2500 tracks sampled in training.
DEFAULT_ID_RANGE = 4096
TEMPORAL_FACTOR = 4  # Wan VAE: first frame alone, then groups of 4 pixel frames per latent


def latent_frames(num_frames: int, temporal_factor: int = TEMPORAL_FACTOR) -> int:
    """Latent frames of a ``num_frames`` pixel clip: the first frame alone, then one per group."""
    return 1 + (num_frames - 1) // temporal_factor


SPATIAL_FACTOR = 8
# How a point writes its embedding on the latent grid: "nearest" is MotionStream's eq. 1 (the cell it falls
# in); "bilinear" spreads it over the 4 cells around it by its sub-cell position, so a latent frame's 4
# pixel-frame slots say where a point is to a fraction of a cell. Where a latent cell is a large share of
# the frame (4 px of a 64-px world against 8 px of 832), nearest cells hide the motion inside a group.
SPLATS = ("nearest", "bilinear")


# How the whole track encoding is done: "trackstream" is ours (above); "fastvideo" is FastVideo's WanTrack
# (the Track-v0 student and its teacher): embeddings [cos | sin] in float32 for IDs up to FASTVIDEO_ID_RANGE,
# points on the normalised frame rounded onto the latent grid and clamped to its border (never dropped),
# visibility a float weight, and frame 0 seen by the last slot of its group only (the other 3 are zeros).
TRACK_CONVENTIONS = ("trackstream", "fastvideo")
FASTVIDEO_ID_RANGE = 100000


def check_convention(convention: str, *, field: str = "track convention") -> str:
    if convention not in TRACK_CONVENTIONS:
        raise ValueError(f"{field}={convention!r}; choose one of {TRACK_CONVENTIONS}")
    return convention


def check_splat(splat: str, *, field: str = "model.track_splat") -> str:
    if splat not in SPLATS:
        raise ValueError(f"{field}={splat!r}; choose one of {SPLATS}")
    return splat


def _check_tracks(tracks: torch.Tensor, visibility: torch.Tensor) -> None:
    if tracks.ndim != 4 or tracks.shape[-1] != 2:
        raise ValueError(f"tracks must be [B, T, N, 2] pixel (x, y), got {tuple(tracks.shape)}")
    if visibility.shape != tracks.shape[:3]:
        raise ValueError(f"visibility must be [B, T, N] = {tuple(tracks.shape[:3])}, got {tuple(visibility.shape)}")


def _grid_inputs(tracks, visibility, embeddings, height: int, width: int, s: int):
    """The checked inputs of a track map: B, T, N, the latent grid h x w and the embeddings as [B, N, D]."""
    _check_tracks(tracks, visibility)
    if height % s or width % s:
        raise ValueError(f"height={height}, width={width} must be multiples of spatial_factor={s}")
    B, T, N, _ = tracks.shape
    if embeddings.ndim == 2:
        embeddings = embeddings.unsqueeze(0).expand(B, -1, -1)
    if embeddings.shape[:2] != (B, N):
        raise ValueError(f"embeddings must be [B, N, D] = [{B}, {N}, D], got {tuple(embeddings.shape)}")
    return B, T, N, height // s, width // s, embeddings


def sample_track_ids(
    batch: int,
    num_tracks: int,
    *,
    id_range: int = DEFAULT_ID_RANGE,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random integer IDs [B, N] (long), distinct within each sample, resampled per sample.

    Resampling per sample is what makes the ID an identity tag rather than a learnable index:
    the model can only use it to tell tracks apart, never to attach meaning to one ID.
    Drawn on the CPU from ``generator`` so results do not depend on the device.
    """
    if num_tracks > id_range:
        raise ValueError(f"num_tracks={num_tracks} exceeds id_range={id_range}; raise id_range")
    keys = torch.rand(batch, id_range, generator=generator)  # CPU generator, CPU draw
    ids = keys.argsort(dim=1)[:, :num_tracks]  # a random permutation prefix: distinct IDs
    return ids.to(device) if device is not None else ids


def track_id_embedding(ids: torch.Tensor, dim: int = TRACK_EMBED_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding phi_n of integer IDs: [...] -> [..., dim] float32, [sin | cos].

    Frequencies omega_i = max_period^(-i / (dim/2)) as in transformer position encodings; the
    highest frequency (1 rad per ID) keeps neighbouring IDs far apart, the lowest ones
    (period ~ max_period > id_range) keep every ID in the range distinct.
    """
    if dim % 2:
        raise ValueError(f"track embedding dim={dim} must be even (sin and cos halves)")
    half = dim // 2
    omega = torch.pow(max_period, -torch.arange(half, dtype=torch.float64, device=ids.device) / half)
    args = ids.to(torch.float64)[..., None] * omega
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1).float()


def rasterize_tracks(
    tracks: torch.Tensor,
    visibility: torch.Tensor,
    embeddings: torch.Tensor,
    *,
    height: int,
    width: int,
    spatial_factor: int = SPATIAL_FACTOR,
    splat: str = "nearest",
) -> torch.Tensor:
    """MotionStream eq. 1: c_m[t, floor(y/s), floor(x/s)] = v[t, n] * phi_n -> [B, D, T, h, w].

    tracks [B, T, N, 2] pixel (x, y); visibility [B, T, N] bool; embeddings [B, N, D] (or
    [N, D], shared by the batch); ``height``/``width`` are the PIXEL sizes of the video.

    Collisions (several visible tracks in one latent cell at one frame) are SUMMED. Eq. 1 is
    written as an assignment, which leaves collisions undefined (in practice "last write wins",
    which depends on scatter order and is nondeterministic on GPU). Summing is what Motion
    Prompting, whose track encoding MotionStream adopts, specifies; it is order-independent
    (up to float rounding of GPU atomics), keeps every colliding ID recoverable (a sum of distinct sinusoids, not
    an average that shrinks each one), and gives denser cells a larger magnitude, i.e. it
    encodes how many points landed there. Mean would hide that count and make one isolated
    track look like a cluster of identical tracks.

    ``splat="bilinear"`` (``SPLATS``) writes phi_n into the 4 cells around the point, weighted by its
    sub-cell position (weights sum to 1 per point); ``"nearest"`` is eq. 1 as written.
    """
    check_splat(splat, field="splat")
    s = spatial_factor
    B, T, N, h, w, embeddings = _grid_inputs(tracks, visibility, embeddings, height, width, s)
    D = embeddings.shape[-1]
    # One extra "dump" row receives every point that writes nothing (invisible, out of frame,
    # NaN): no data-dependent nonzero()/any(), so no host sync on GPU and a fixed-size scatter.
    dump = B * T * h * w
    out = torch.zeros(dump + 1, D, device=tracks.device, dtype=embeddings.dtype)

    x, y = tracks[..., 0], tracks[..., 1]  # [B, T, N]
    # Bounds are checked in pixels (x < width), so floor(x/s) < w follows; NaN fails every test.
    valid = visibility.bool() & (x >= 0) & (x < width) & (y >= 0) & (y < height)
    b_idx = torch.arange(B, device=tracks.device).view(B, 1, 1)
    t_idx = torch.arange(T, device=tracks.device).view(1, T, 1)
    src = embeddings[:, None].expand(B, T, N, D)  # phi_n for every (b, t, n)

    def write(cx: torch.Tensor, cy: torch.Tensor, weight: torch.Tensor | None) -> None:
        flat = torch.where(valid, ((b_idx * T + t_idx) * h + cy) * w + cx, dump)  # [B, T, N]
        val = src if weight is None else src * weight[..., None].to(src.dtype)
        out.index_add_(0, flat.reshape(-1), val.reshape(-1, D))  # sum on collisions

    if splat == "nearest":
        write(torch.where(valid, x, 0.0).div(s).floor().long(), torch.where(valid, y, 0.0).div(s).floor().long(), None)
    else:
        # cell i holds pixels i*s .. i*s + s - 1 (centres at integers): its centre is at i*s + (s - 1) / 2;
        # the weight of a cell beyond the border goes to the border cell (a point there writes in full)
        u = (torch.where(valid, x, 0.0) - (s - 1) / 2) / s
        v = (torch.where(valid, y, 0.0) - (s - 1) / 2) / s
        u0, v0 = u.floor(), v.floor()
        fu, fv = u - u0, v - v0
        for du, wu in ((0, 1 - fu), (1, fu)):
            for dv, wv in ((0, 1 - fv), (1, fv)):
                cx = (u0.long() + du).clamp(0, w - 1)
                cy = (v0.long() + dv).clamp(0, h - 1)
                write(cx, cy, wu * wv)
    out = out[:dump]
    return out.view(B, T, h, w, D).permute(0, 4, 1, 2, 3)  # [B, D, T, h, w]


def fastvideo_id_embedding(ids: torch.Tensor, dim: int = TRACK_EMBED_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """FastVideo's phi_n: [...] -> [..., dim] float32, [cos | sin], computed in float32 as they do (at IDs
    near 1e5 the float32 argument differs from a float64 one by ~1e-2 rad, so the precision is part of the
    convention); a zero column when ``dim`` is odd."""
    half = dim // 2
    omega = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=ids.device) / half)
    args = ids.float()[..., None] * omega
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 else emb


def rasterize_tracks_fastvideo(
    tracks: torch.Tensor,
    visibility: torch.Tensor,
    embeddings: torch.Tensor,
    *,
    height: int,
    width: int,
    spatial_factor: int = SPATIAL_FACTOR,
) -> torch.Tensor:
    """FastVideo's rasterisation -> [B, D, T, h, w]: pixel (x, y) normalised by the frame (x / width, the
    full-image convention of their inference), clamped to [0, 1], rounded (half to even) onto the h x w
    latent grid scaled by (w - 1) / (h - 1); every point writes visibility * phi_n (float weight, summed on
    collisions), out-of-frame points on the border cell."""
    B, T, N, h, w, embeddings = _grid_inputs(tracks, visibility, embeddings, height, width, spatial_factor)
    D = embeddings.shape[-1]
    xn, yn = tracks[..., 0].float() / width, tracks[..., 1].float() / height
    cx = torch.round(xn.clamp(0, 1) * (w - 1)).long()
    cy = torch.round(yn.clamp(0, 1) * (h - 1)).long()
    b_idx = torch.arange(B, device=tracks.device).view(B, 1, 1)
    t_idx = torch.arange(T, device=tracks.device).view(1, T, 1)
    flat = ((b_idx * T + t_idx) * h + cy) * w + cx  # [B, T, N]
    val = embeddings[:, None].float() * visibility.float()[..., None]  # [B, T, N, D]
    out = torch.zeros(B * T * h * w, D, device=tracks.device, dtype=torch.float32)
    out.index_add_(0, flat.reshape(-1), val.reshape(-1, D))
    return out.view(B, T, h, w, D).permute(0, 4, 1, 2, 3)  # [B, D, T, h, w]


class TrackHead(nn.Module):
    """Learnable track head: 4x temporal compression then a 1x1x1 conv (MotionStream §3.1).

    Temporal grouping matches the Wan VAE (1 + 4k pixel frames -> 1 + k latents): latent 0
    sees pixel frame 0 alone, latent j >= 1 sees pixel frames 4j-3 .. 4j. The compression folds
    each group of 4 frames into channels ([B, D, 4F, h, w] -> [B, 4D, F, h, w], channel index
    d*4 + slot) and the conv mixes them. Frame 0 is REPLICATED into its group's 4 slots (the
    same trick as Wan's I2V mask), so the first latent gets the same weights and the same
    magnitude as a group of 4 identical frames instead of a group padded with 3 empty frames,
    which would look like "track released" to the model. Each latent depends only on its own
    group, so the head runs chunk-wise for streaming.

    ``bias=False`` by default: no tracks (or a masked chunk) then gives exactly zero features,
    the same "empty motion" input for masking, motion-CFG's unconditional branch and the
    zero-initialised patch-embedding channels.

    ``convention="fastvideo"`` pads frame 0's group with zeros before it (slot r-1 holds frame 0), as
    FastVideo's WanTrack left-pads time; their temporal conv + 1x1x1 proj compose into this one conv.
    """

    def __init__(
        self,
        embed_dim: int = TRACK_EMBED_DIM,
        out_channels: int = 16,
        *,
        temporal_factor: int = TEMPORAL_FACTOR,
        bias: bool = False,
        convention: str = "trackstream",
    ):
        super().__init__()
        self.embed_dim, self.out_channels, self.temporal_factor = embed_dim, out_channels, temporal_factor
        self.convention = check_convention(convention)
        self.proj = nn.Conv3d(embed_dim * temporal_factor, out_channels, kernel_size=1, bias=bias)

    def forward(self, feats: torch.Tensor, *, has_first_frame: bool = True) -> torch.Tensor:
        """feats [B, D, T, h, w] (T = 1 + 4k) -> [B, C_track, 1 + k, h, w].

        Streaming: a later chunk that does not start at frame 0 has T = 4k frames; pass
        ``has_first_frame=False`` to get its k latents. Heads of consecutive chunks concatenate
        to exactly the head of the whole sequence.
        """
        r = self.temporal_factor
        if feats.ndim != 5 or feats.shape[1] != self.embed_dim:
            raise ValueError(f"track features must be [B, {self.embed_dim}, T, h, w], got {tuple(feats.shape)}")
        B, D, T, h, w = feats.shape
        if has_first_frame:
            if (T - 1) % r:
                raise ValueError(f"track features have T={T} frames; expected 1 + {r}k (Wan frame grouping)")
            if self.convention == "fastvideo":  # zeros, then frame 0 in the group's last slot
                first = torch.cat([feats.new_zeros(B, D, r - 1, h, w), feats[:, :, :1]], dim=2)
            else:
                first = feats[:, :, :1].expand(B, D, r, h, w)  # frame 0 fills its whole group
            feats = torch.cat([first, feats[:, :, 1:]], dim=2)  # [B, D, r*F, h, w]
        elif T % r:
            raise ValueError(f"a chunk without the first frame must have a multiple of {r} frames, got T={T}")
        nf = feats.shape[2] // r
        x = feats.reshape(B, D, nf, r, h, w).transpose(2, 3).reshape(B, D * r, nf, h, w)  # [B, D*r, F, h, w]
        return self.proj(x.to(self.proj.weight.dtype))


class TrackEncoder(nn.Module):
    """IDs -> embeddings -> rasterisation -> ``TrackHead``: tracks to DiT conditioning channels.

    Only ``head`` has parameters. Pass ``ids`` to keep the same IDs across calls (streaming:
    sample once per video and reuse for every chunk), or a ``generator`` for reproducible draws.
    """

    def __init__(
        self,
        out_channels: int = 16,
        *,
        embed_dim: int = TRACK_EMBED_DIM,
        id_range: int | None = None,
        spatial_factor: int = SPATIAL_FACTOR,
        temporal_factor: int = TEMPORAL_FACTOR,
        bias: bool = False,
        splat: str = "nearest",
        convention: str = "trackstream",
    ):
        super().__init__()
        check_convention(convention)
        if convention == "fastvideo" and splat != "nearest":
            raise ValueError(f"track splat={splat!r}: the fastvideo convention rounds each point to one cell")
        if id_range is None:
            id_range = FASTVIDEO_ID_RANGE if convention == "fastvideo" else DEFAULT_ID_RANGE
        self.embed_dim, self.id_range, self.spatial_factor = embed_dim, id_range, spatial_factor
        self.splat, self.convention = check_splat(splat), convention
        self.head = TrackHead(
            embed_dim, out_channels, temporal_factor=temporal_factor, bias=bias, convention=convention
        )

    @property
    def out_channels(self) -> int:
        return self.head.out_channels

    def rasterize(
        self,
        tracks: torch.Tensor,
        visibility: torch.Tensor,
        *,
        height: int,
        width: int,
        ids: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The non-learnable part: -> c_m [B, D, T, h, w]."""
        _check_tracks(tracks, visibility)
        B, _, N, _ = tracks.shape
        if ids is None:
            ids = sample_track_ids(B, N, id_range=self.id_range, generator=generator, device=tracks.device)
        if self.convention == "fastvideo":
            emb = fastvideo_id_embedding(ids.to(tracks.device), self.embed_dim)
            return rasterize_tracks_fastvideo(
                tracks, visibility, emb, height=height, width=width, spatial_factor=self.spatial_factor
            )
        emb = track_id_embedding(ids.to(tracks.device), self.embed_dim)
        return rasterize_tracks(
            tracks, visibility, emb, height=height, width=width, spatial_factor=self.spatial_factor, splat=self.splat
        )

    def forward(
        self,
        tracks: torch.Tensor,
        visibility: torch.Tensor,
        *,
        height: int,
        width: int,
        ids: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        has_first_frame: bool = True,
    ) -> torch.Tensor:
        """tracks [B, T, N, 2], visibility [B, T, N] -> [B, C_track, 1 + (T-1)/4, h, w]
        (or [B, C_track, T/4, h, w] for a later streaming chunk, ``has_first_frame=False``)."""
        feats = self.rasterize(tracks, visibility, height=height, width=width, ids=ids, generator=generator)
        return self.head(feats, has_first_frame=has_first_frame)


def mask_mid_frames(
    tracks: torch.Tensor,
    visibility: torch.Tensor,
    *,
    p: float = 0.2,
    unit: int = TEMPORAL_FACTOR,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stochastic mid-frame masking (MotionStream §3.1): c_m[t_rand] = 0 for a random middle chunk.

    Data-time transform on one sample ([T, N, 2], [T, N]) or a batch ([B, T, N, 2], [B, T, N];
    independent draws per sample). With probability ``p`` a sample gets ONE contiguous chunk of
    frames hidden: visibility is set False there, so every track writes nothing and the encoded
    track signal is exactly zero on that chunk. Coordinates are left untouched (they remain
    ground truth for metrics; rasterisation ignores invisible points).

    Frames are split like the codec: group 0 = frame 0, then groups of ``unit`` frames (unit 4:
    one group per latent frame, so whole latent frames go silent, as when a streaming user
    releases the controls for a while). The chunk is a random run of whole groups strictly
    between the first and the last group: the first frame anchors the motion and the tracks
    come back afterwards, which is the ambiguity (occlusion vs. "unspecified") the masking
    teaches. Samples with fewer than 3 groups are left unchanged. Returns (tracks, a new
    visibility tensor); ``tracks`` is returned as given.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"mask probability p={p} must be in [0, 1]")
    given = tracks
    unbatched = tracks.ndim == 3
    if unbatched:
        tracks, visibility = tracks.unsqueeze(0), visibility.unsqueeze(0)
    _check_tracks(tracks, visibility)
    B, T = visibility.shape[:2]
    if unit < 1 or (T - 1) % unit:
        raise ValueError(f"T={T} frames cannot be grouped as 1 + {unit}k; pick unit dividing T-1")
    num_groups = 1 + (T - 1) // unit
    visibility = visibility.clone()
    if num_groups >= 3:
        middle = num_groups - 2  # groups 1 .. num_groups-2
        for b in range(B):
            if torch.rand((), generator=generator).item() >= p:
                continue
            start = 1 + int(torch.randint(middle, (), generator=generator))
            max_len = num_groups - 1 - start  # keep the last group
            length = 1 + int(torch.randint(max_len, (), generator=generator))
            f0 = 1 + (start - 1) * unit  # first pixel frame of group `start`
            f1 = 1 + (start + length - 1) * unit  # one past the last hidden frame
            visibility[b, f0:f1] = False
    return given, (visibility[0] if unbatched else visibility)


def drop_region(
    tracks: torch.Tensor,
    visibility: torch.Tensor,
    *,
    p: float,
    size: tuple[float, float] = (0.3, 0.6),
    height: int,
    width: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Region dropout of tracks: with probability ``p`` per sample, every track whose first visible
    position lies in a random box (sides ``size`` fractions of the frame, uniform) is hidden for the
    whole clip. A user who pins the background and leaves an object free gives exactly that: a region
    with no tracks, whose content the model must keep coherent on its own (uniformly random subsets of
    tracks almost never leave such a hole). Batch [B, T, N, 2] / [B, T, N] -> a new visibility."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"region dropout p={p} must be in [0, 1]")
    lo, hi = size
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"region dropout size={size} must be fractions 0 < lo <= hi <= 1")
    _check_tracks(tracks, visibility)
    B, T, N = visibility.shape
    out = visibility.clone()
    first = visibility.float().argmax(dim=1)  # [B, N]: first visible frame (0 if never visible)
    start = torch.gather(tracks, 1, first[:, None, :, None].expand(B, 1, N, 2))[:, 0]  # [B, N, 2]
    for b in range(B):
        if torch.rand((), generator=generator).item() >= p:
            continue
        wh = lo + (hi - lo) * torch.rand(2, generator=generator)  # box sides as fractions
        x0 = torch.rand((), generator=generator).item() * (1 - wh[0].item()) * width
        y0 = torch.rand((), generator=generator).item() * (1 - wh[1].item()) * height
        x, y = start[b, :, 0].cpu(), start[b, :, 1].cpu()
        inside = (x >= x0) & (x < x0 + wh[0] * width) & (y >= y0) & (y < y0 + wh[1] * height)
        out[b, :, inside.to(out.device)] = False
    return out
