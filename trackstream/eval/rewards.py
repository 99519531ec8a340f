"""Rewards of generated videos for the RL stage (train/rl/objective.py): one interface, each a black box to GRPO.

A reward is called as ``reward(frames, condition) -> tensor [B]`` (float32, CPU), where ``frames`` are
either float videos [B, 3, T, H, W] in [-1, 1] (what the codec decodes) or uint8 videos [B, T, H, W, 3],
and ``condition`` holds ``tracks`` [B, T, N, 2] (pixels of the frames), ``visibility`` [B, T, N] and
``first_frame`` uint8 [B, 3, H, W] (the user's image). Each has a ``name``, counts its own time
(``seconds``, ``last_seconds``) and may leave per-sample diagnostics in ``extras`` ([B] tensors, logged).

* ``MotionReward`` (AR-Drag's R_motion = lambda * max(0, alpha - err^2)): the frames are re-tracked from the
  input tracks' query points by the EPE protocol (``eval.metrics.motion_epe``: ``lk_plain`` on CPU,
  CoTracker3 from a local checkpoint); err^2 is the squared L2 distance between re-tracked and input
  position of every scored entry (each (frame, point) the input shows), averaged per video: a mean squared
  error in pixels^2, measured at ``reference_width`` pixels (832, MotionStream's EPE resolution; null: the
  frames' own). ``alpha`` (pixels^2) is the error at which the reward reaches 0, ``scale`` = lambda.
* ``AestheticReward``: the LAION aesthetic predictor (models/aesthetic.py, AVA scale ~1..10) on ``frames``
  evenly spaced frames, averaged (AR-Drag's R_quality).
* ``AppearanceReward``: an embedded-world quality term the evaluation does not report: how well each
  generated frame keeps the first frame's appearance, from colour statistics and sharpness only (no
  ground truth, no learned features): -(total-variation distance of the per-channel colour histograms
  to the first frame's) - w * |log(gradient energy / the first frame's)|, averaged over frames 1... The
  tiny student's failure modes are colour drift and blur accumulating over chunks; the gradient term
  also penalises added noise (energy above the first frame's). A still video maximises it, so it only
  makes sense beside the motion reward.
* ``CombinedReward``: the weighted sum (weights from ``RewardsConfig``) and each part.
"""

from __future__ import annotations

import abc
import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from trackstream.data.video_io import from_uint8
from trackstream.eval.metrics import check_epe_tracker, motion_epe

__all__ = [
    "Reward",
    "MotionReward",
    "AestheticReward",
    "AppearanceReward",
    "CombinedReward",
    "MotionRewardConfig",
    "AestheticRewardConfig",
    "AppearanceRewardConfig",
    "RewardsConfig",
    "build_rewards",
    "as_uint8",
]


def as_uint8(frames) -> np.ndarray:
    """Videos -> uint8 [B, T, H, W, 3]: uint8 input is taken as [B, T, H, W, 3], float as [B, 3, T, H, W] in [-1, 1]."""
    if isinstance(frames, np.ndarray) or frames.dtype == torch.uint8:
        out = np.asarray(frames.cpu() if torch.is_tensor(frames) else frames)
        if out.ndim != 5 or out.shape[-1] != 3:
            raise ValueError(f"uint8 videos must be [B, T, H, W, 3], got {out.shape}")
        return out
    if frames.ndim != 5 or frames.shape[1] != 3:
        raise ValueError(f"float videos must be [B, 3, T, H, W] in [-1, 1], got {tuple(frames.shape)}")
    x = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 4, 1).cpu().numpy()


def _as_float(frames) -> torch.Tensor:
    """Videos -> float [B, 3, T, H, W] in [-1, 1]."""
    if isinstance(frames, np.ndarray) or frames.dtype == torch.uint8:
        return from_uint8(as_uint8(frames)).permute(0, 4, 1, 2, 3)
    return frames.float()


class Reward(abc.ABC):
    name: str = "reward"

    def __init__(self) -> None:
        self.seconds, self.last_seconds = 0.0, 0.0
        self.extras: dict[str, torch.Tensor] = {}

    def __call__(self, frames, condition: dict) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.score(frames, condition).detach().float().cpu()
        self.last_seconds = time.perf_counter() - t0
        self.seconds += self.last_seconds
        return out

    @abc.abstractmethod
    def score(self, frames, condition: dict) -> torch.Tensor:
        """[B] rewards of the videos under their conditions."""


class MotionReward(Reward):
    name = "motion"

    def __init__(
        self, tracker, *, alpha: float, scale: float, reference_width: Optional[int] = 832, object_weight: float = 0.0
    ):
        super().__init__()
        self.tracker, self.alpha, self.scale, self.reference_width = tracker, alpha, scale, reference_width
        self.object_weight = object_weight

    def score(self, frames, condition: dict) -> torch.Tensor:
        videos = as_uint8(frames)
        tracks = np.asarray(torch.as_tensor(condition["tracks"]).float().cpu(), np.float64)
        vis = np.asarray(torch.as_tensor(condition["visibility"]).bool().cpu())
        factor = 1.0 if self.reference_width is None else self.reference_width / videos.shape[3]
        mse, epe = [], []
        for b in range(len(videos)):
            value, _, pred = motion_epe(videos[b], tracks[b], vis[b], self.tracker)
            seen = vis[b].any(axis=0)  # the tracks motion_epe scores, in its order
            t, v = tracks[b][:, seen], vis[b][:, seen]
            sq = ((np.asarray(pred, np.float64) - t) ** 2).sum(-1) * factor**2  # [T, N'] pixels^2
            w = np.broadcast_to(1.0 + self.object_weight * object_points(t, v), sq.shape)[v]
            mse.append(float((sq[v] * w).sum() / w.sum()) if w.size else 0.0)
            epe.append(value * factor if math.isfinite(value) else 0.0)
        mse_t = torch.tensor(mse)
        self.extras = {"motion_mse_px2": mse_t, "motion_epe_px": torch.tensor(epe)}
        return self.scale * (self.alpha - mse_t).clamp(min=0)


OBJECT_DEPARTURE_PX = 4.0  # an input track whose displacement departs this far from the clip's median one


def object_points(tracks: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    """[N] 1.0 for input tracks [T, N, 2] that move otherwise than most of the clip (an object against the
    camera): their displacement from first to last visible frame departs from the median displacement by more
    than ``OBJECT_DEPARTURE_PX``; else 0.0. The median is the camera's motion wherever the background holds
    most of the points."""
    n = tracks.shape[1]
    if n == 0:
        return np.zeros(0)
    cols = np.arange(n)
    first = np.argmax(visibility, axis=0)
    last = visibility.shape[0] - 1 - np.argmax(visibility[::-1], axis=0)
    disp = tracks[last, cols] - tracks[first, cols]  # [N, 2]
    return (np.linalg.norm(disp - np.median(disp, axis=0), axis=-1) > OBJECT_DEPARTURE_PX).astype(np.float64)


class AestheticReward(Reward):
    name = "aesthetic"

    def __init__(self, predictor: torch.nn.Module, *, frames: int = 4):
        super().__init__()
        self.predictor, self.frames = predictor, frames

    def score(self, frames, condition: dict) -> torch.Tensor:
        video = _as_float(frames)  # [B, 3, T, H, W]
        B, _, T = video.shape[:3]
        idx = torch.linspace(0, T - 1, min(self.frames, T)).round().long()
        images = video[:, :, idx].permute(0, 2, 1, 3, 4).reshape(-1, 3, *video.shape[-2:])  # [B * n, 3, H, W]
        return self.predictor(images).view(B, -1).mean(dim=1)


class AppearanceReward(Reward):
    name = "appearance"

    def __init__(self, *, bins: int = 16, sharpness_weight: float = 1.0):
        super().__init__()
        self.bins, self.sharpness_weight = bins, sharpness_weight

    def _hist(self, frame: np.ndarray) -> np.ndarray:  # [H, W, 3] uint8 -> [3, bins], each row sums to 1
        q = (frame.reshape(-1, 3).astype(np.int32) * self.bins) >> 8
        return np.stack([np.bincount(q[:, c], minlength=self.bins) for c in range(3)]) / len(q)

    @staticmethod
    def _energy(frame: np.ndarray) -> float:  # [H, W, 3] uint8 -> mean |horizontal| + |vertical| grey gradient
        g = frame.astype(np.float32).mean(axis=-1)
        return float(np.abs(np.diff(g, axis=1)).mean() + np.abs(np.diff(g, axis=0)).mean())

    def score(self, frames, condition: dict) -> torch.Tensor:
        videos = as_uint8(frames)  # [B, T, H, W, 3]
        first = condition.get("first_frame")
        refs = videos[:, 0] if first is None else np.asarray(torch.as_tensor(first).cpu()).transpose(0, 2, 3, 1)
        tv, drift = np.zeros(len(videos)), np.zeros(len(videos))
        for b, (video, ref) in enumerate(zip(videos, refs)):  # one video at a time: 480p clips are large
            h0, e0 = self._hist(ref), self._energy(ref)
            # total variation of the colour histograms (in [0, 1]) and |log| of the sharpness ratio, frames 1..
            tv[b] = np.mean([0.5 * np.abs(self._hist(f) - h0).sum(-1).mean() for f in video[1:]])
            drift[b] = np.mean([abs(math.log((self._energy(f) + 1e-3) / (e0 + 1e-3))) for f in video[1:]])
        self.extras = {"appearance_colour_tv": torch.tensor(tv), "appearance_sharpness_drift": torch.tensor(drift)}
        return torch.tensor(-(tv + self.sharpness_weight * drift))


class CombinedReward:
    """sum_i w_i r_i over the rewards with a non-zero weight; ``parts`` keeps each r_i of the last call."""

    def __init__(self, rewards: list[tuple[Reward, float]]):
        if not rewards:
            raise ValueError("no reward has a non-zero weight: set stage.rewards.<name>.weight")
        self.rewards = rewards
        self.parts: dict[str, torch.Tensor] = {}

    def __call__(self, frames, condition: dict) -> torch.Tensor:
        self.parts = {r.name: r(frames, condition) for r, _ in self.rewards}
        return sum(w * self.parts[r.name] for r, w in self.rewards)

    @property
    def last_seconds(self) -> float:
        return sum(r.last_seconds for r, _ in self.rewards)

    @property
    def extras(self) -> dict[str, torch.Tensor]:
        return {k: v for r, _ in self.rewards for k, v in r.extras.items()}


@dataclass
class MotionRewardConfig:
    weight: float = 1.0
    tracker: str = "lk_plain"  # the EPE protocol's trackers: lk_plain (CPU) | cotracker3_offline | cotracker3_online
    checkpoint: Optional[str] = None  # CoTracker3 .pth (scaled_offline.pth / scaled_online.pth)
    alpha: float = 400.0  # pixels^2 at reference_width: the squared error where the reward reaches 0 (20 px RMS)
    scale: float = 0.0025  # lambda: 1 / alpha puts a perfect re-tracking at 1
    reference_width: Optional[int] = 832  # errors measured at this frame width; null: the frames' own pixels
    # > 0: entries of tracks that move otherwise than most of the clip (objects against the camera,
    # rewards.object_points) count 1 + object_weight times in the mean squared error, so the reward sees the
    # motion a student gets wrong where the camera's motion dominates the points
    object_weight: float = 0.0


@dataclass
class AestheticRewardConfig:
    weight: float = 0.0
    clip: Optional[str] = None  # openai/clip-vit-large-patch14 folder, or an OpenAI / open_clip ViT-L-14 state dict
    head: Optional[str] = None  # sac+logos+ava1-l14-linearMSE.pth
    frames: int = 4  # evenly spaced frames scored per video


@dataclass
class AppearanceRewardConfig:
    weight: float = 0.0
    bins: int = 16
    sharpness_weight: float = 1.0


@dataclass
class RewardsConfig:
    motion: MotionRewardConfig = field(default_factory=MotionRewardConfig)
    aesthetic: AestheticRewardConfig = field(default_factory=AestheticRewardConfig)
    appearance: AppearanceRewardConfig = field(default_factory=AppearanceRewardConfig)

    def __post_init__(self) -> None:
        for name, cls in (
            ("motion", MotionRewardConfig),
            ("aesthetic", AestheticRewardConfig),
            ("appearance", AppearanceRewardConfig),
        ):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls(**getattr(self, name)))
        if not any(getattr(self, n).weight for n in ("motion", "aesthetic", "appearance")):
            raise ValueError("stage.rewards: every weight is 0; give at least one reward a weight")
        m = self.motion
        check_epe_tracker(m.tracker, field="stage.rewards.motion.tracker")
        if not (m.alpha > 0 and m.scale > 0):
            raise ValueError(f"stage.rewards.motion.alpha={m.alpha} / scale={m.scale} must both be > 0")
        if m.object_weight < 0:
            raise ValueError(f"stage.rewards.motion.object_weight={m.object_weight} must be >= 0")
        if m.reference_width is not None and m.reference_width < 1:
            raise ValueError(f"stage.rewards.motion.reference_width={m.reference_width} must be >= 1 or null")
        if self.aesthetic.frames < 1 or self.appearance.bins < 2:
            raise ValueError("stage.rewards.aesthetic.frames must be >= 1 and stage.rewards.appearance.bins >= 2")


def build_rewards(cfg: RewardsConfig, *, device: str | torch.device = "cpu") -> CombinedReward:
    """The weighted rewards of ``cfg`` (a weight of 0 leaves a reward out, its weights never loaded)."""
    from trackstream.data.trackers import build_tracker

    parts: list[tuple[Reward, float]] = []
    m = cfg.motion
    if m.weight:
        tracker = build_tracker(m.tracker, checkpoint=m.checkpoint, device=str(device))
        reward = MotionReward(
            tracker, alpha=m.alpha, scale=m.scale, reference_width=m.reference_width, object_weight=m.object_weight
        )
        parts.append((reward, m.weight))
    if cfg.aesthetic.weight:
        from trackstream.models.aesthetic import load_aesthetic_predictor

        if not (cfg.aesthetic.clip and cfg.aesthetic.head):  # checked here: recipes leave the paths to the user
            raise ValueError(
                "stage.rewards.aesthetic.weight is set but stage.rewards.aesthetic.clip / .head are not: give the "
                "CLIP ViT-L/14 weights and the sac+logos+ava1-l14-linearMSE.pth head (or weight=0)"
            )

        predictor = load_aesthetic_predictor(cfg.aesthetic.clip, cfg.aesthetic.head, device=device)
        parts.append((AestheticReward(predictor, frames=cfg.aesthetic.frames), cfg.aesthetic.weight))
    if cfg.appearance.weight:
        ap = cfg.appearance
        parts.append((AppearanceReward(bins=ap.bins, sharpness_weight=ap.sharpness_weight), ap.weight))
    return CombinedReward(parts)
