"""A drag as point tracks: the trajectories of an instruction's objects and the static points pinned off its
editable area (MotionStream's static points), for students that take tracks.

Legend as in ``stream.chunks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from trackstream.models.tracks import sample_track_ids
from trackstream.stream.drag.adsr import mask_tokens
from trackstream.stream.drag.instructions import DragInstruction, frame_positions
from trackstream.stream.engine import StreamingGenerator

__all__ = ["Pins", "drag_tracks", "pins_for", "track_ids_for"]


def drag_tracks(
    instr: DragInstruction,
    *,
    token: int,
    height: int,
    width: int,
    num_frames: int,
    static_points: int = 128,
    objects: bool = True,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The drag as point tracks over the ``num_frames`` pixel frames after the reference frame (frame 0 =
    the reference): first up to ``static_points`` grid points outside the editable area held still
    (MotionStream's static points: what must not move is pinned), then, with ``objects``, every
    object's token centres following its trajectory. Returns tracks [T, N, 2] and visibility [T, N]."""
    grid = mask_tokens(~np.asarray(instr.editable, bool), token)  # token centres off the editable area
    if len(grid) > static_points:
        grid = grid[np.sort(np.random.default_rng(seed).choice(len(grid), static_points, replace=False))]
    parts = [np.repeat(grid[None], num_frames, axis=0)]
    if objects:
        parts += [
            frame_positions(instr, traj, mask_tokens(m, token), num_frames)
            for traj, m in zip(instr.trajectories, instr.object_masks)
        ]
    tracks = np.concatenate(parts, axis=1).astype(np.float32)  # [T, N, 2]
    vis = (tracks[..., 0] >= 0) & (tracks[..., 0] <= width - 1) & (tracks[..., 1] >= 0) & (tracks[..., 1] <= height - 1)
    return tracks, vis


@dataclass(frozen=True, eq=False)
class Pins:
    """Static points off an instruction's editable area, for a stream that pins its background from its
    first frame on (so the pins' IDs are in the cache before any drag)."""

    points: np.ndarray  # [N, 2] pixels
    visible: np.ndarray  # [N] bool
    ids: torch.Tensor  # [1, N] track IDs

    def over(self, engine: StreamingGenerator, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tracks [1, T, N, 2] and visibility [1, T, N] over ``chunk``'s pixel frames."""
        lo, hi = engine.pixel_range(chunk)
        return (
            torch.from_numpy(np.repeat(self.points[None], hi - lo, axis=0))[None],
            torch.from_numpy(np.repeat(self.visible[None], hi - lo, axis=0))[None],
        )


def pins_for(
    engine: StreamingGenerator, instr: DragInstruction, image: torch.Tensor, *, seed: int = 0
) -> Optional[Pins]:
    """The pins ``DragEditor.drag`` uses for ``instr`` (same points, same IDs), for the stream's first frame
    [1, 3, H, W]; None for a student without a track head."""
    if engine.network.track_encoder is None:
        return None
    H, W = image.shape[-2:]
    with torch.no_grad():
        token = (
            H // engine.codec.encode(image[:, :, None].to(engine.device)).shape[-2] * engine.network.dit.patch_size[1]
        )
    tracks, vis = drag_tracks(instr, token=token, height=H, width=W, num_frames=1, objects=False, seed=seed)
    ids = sample_track_ids(
        1, tracks.shape[1], id_range=engine.network.track_id_range, generator=torch.Generator().manual_seed(seed)
    )
    return Pins(points=tracks[0], visible=vis[0], ids=ids)


def track_ids_for(have: Optional[torch.Tensor], n: int, *, seed: int, device, id_range: int) -> torch.Tensor:
    """IDs [1, n] for a drag's ``n`` points. Track IDs are per video and index: the stream's own ``have``
    [1, N_have] are kept for the first points and new distinct ones are drawn (from ``seed``, in the network's
    ``id_range``) for the rest."""
    if have is None or have.shape[1] < n:
        fresh = sample_track_ids(
            1,
            n + (0 if have is None else have.shape[1]),
            id_range=id_range,
            generator=torch.Generator().manual_seed(seed),
        ).to(device)
        if have is not None:  # keep the old IDs first, then new ones distinct from them
            extra = fresh[0][~torch.isin(fresh[0], have[0])][: n - have.shape[1]]
            fresh = torch.cat([have, extra[None]], dim=1)
        return fresh[:, :n]
    return have[:, :n]
