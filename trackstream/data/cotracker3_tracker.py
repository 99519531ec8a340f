"""CoTracker3 (offline and online predictors) from a local checkpoint, behind the ``Tracker`` interface.

co-tracker is not on PyPI, so a missing package raises an ImportError that says how to install it.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from trackstream.data.tracker_base import Tracker


def cotracker_install_hint(checkpoint: str, cpu: str) -> str:
    """What to do when the ``cotracker`` package is missing, in the spelling of the command at hand: ``checkpoint``
    gives the checkpoint (``tracker.checkpoint=<path>`` on a Hydra command), ``cpu`` picks a CPU tracker."""
    return (
        "the `cotracker` package is not installed (it is not on PyPI). Install it from source: "
        "`pip install -c constraints.txt git+https://github.com/facebookresearch/co-tracker.git` or "
        "`pip install -e <clone of facebookresearch/co-tracker>`, download scaled_offline.pth / "
        f"scaled_online.pth from huggingface.co/facebook/cotracker3 and give its local path as {checkpoint}; "
        f"or use a CPU tracker: {cpu}"
    )


# the class does not know the command that built it: both spellings
COTRACKER_INSTALL_HINT = cotracker_install_hint(
    "tracker.checkpoint=<path> (prepare, eval) or --tracker-checkpoint <path> (transfer, drag-bench)",
    "tracker=lk (prepare), tracker=lk_plain (eval's EPE) or --tracker lk",
)


class CoTracker3Tracker(Tracker):
    """CoTracker3 (offline or online predictor) from a local checkpoint.

    The model takes float frames 0..255 [B, T, 3, H, W] and (t, x, y) queries in input pixels and
    resizes internally to its model resolution; offline visibility is sigmoid > 0.9, online is
    vis * confidence > 0.6 (the predictors' own thresholds).
    """

    def __init__(self, checkpoint: str, *, mode: str = "offline", device: str = "auto", window_len: int | None = None):
        if mode not in ("offline", "online"):
            raise ValueError(f"CoTracker3Tracker mode must be 'offline' or 'online', got {mode!r}")
        try:
            from cotracker.predictor import CoTrackerOnlinePredictor, CoTrackerPredictor
        except ImportError as e:
            raise ImportError(f"CoTracker3Tracker: {COTRACKER_INSTALL_HINT}") from e
        if not checkpoint or not os.path.isfile(checkpoint):
            raise FileNotFoundError(
                f"CoTracker3Tracker: checkpoint={checkpoint!r} does not exist; download "
                f"scaled_{mode}.pth from huggingface.co/facebook/cotracker3 and pass its local path"
            )
        from trackstream.models.precision import resolve_device

        self.mode, self.device = mode, resolve_device(device, field="tracker.device")
        if mode == "offline":
            model = CoTrackerPredictor(checkpoint=checkpoint, offline=True, v2=False, window_len=window_len or 60)
        else:
            model = CoTrackerOnlinePredictor(checkpoint=checkpoint, window_len=window_len or 16)
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def _track(self, frames, queries):
        t_total = frames.shape[0]
        video = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2)[None].float()  # [1, T, 3, H, W]
        q = torch.from_numpy(queries).to(self.device)[None]  # [1, N, 3]
        if self.mode == "offline":
            tracks, vis = self.model(video, queries=q, backward_tracking=bool((q[..., 0] > 0).any()))
        else:
            step = int(self.model.step)
            # Windows of 2*step frames advance by step; pad with the last frame so they cover all T.
            padded_len = max(2 * step, math.ceil(t_total / step) * step)
            pad = video[:, -1:].expand(-1, padded_len - t_total, -1, -1, -1)
            video = torch.cat([video, pad], dim=1)
            self.model(video_chunk=video, is_first_step=True, queries=q, add_support_grid=True)
            tracks = vis = None
            for start in range(0, padded_len - step, step):
                tracks, vis = self.model(video_chunk=video[:, start : start + 2 * step])
            if tracks is None or tracks.shape[1] < t_total:
                raise RuntimeError(
                    f"CoTracker3 online returned {None if tracks is None else tracks.shape[1]} frames, expected {t_total}"
                )
        tracks = tracks[0, :t_total].float().cpu().numpy()  # [T, N, 2]
        vis = vis[0, :t_total].bool().cpu().numpy()  # [T, N]
        return tracks.astype(np.float32), vis
