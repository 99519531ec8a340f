"""Score videos on a benchmark with every requested metric; reference rows; table, plots, JSON.

Rows: each (run, mode) generated or read by trackstream/eval/generate.py, plus the references ``ground_truth``
(the benchmark's own videos: the tracker's noise floor for EPE, the target of every distribution
metric), ``frozen`` (the first frame held still: no motion at all) and, given the run's codec, the floors
of trackstream/eval/floors.py: ``codec_round_trip`` (the ground truth encoded and decoded: the best any
generator in that latent space can score) and ``oracle_copier`` (frame 0 moved in pixels by the true
camera motion, through the codec). Metrics (each protocol in its
function's docstring):

  epe        eval.metrics.motion_epe, the project's one EPE protocol (make run's report uses it too),
             with ``tracker`` (lk_plain on CPU; cotracker3_offline with a local checkpoint); the frozen
             row by eval.metrics.frozen_epe; per video, mean over videos; also the EPE per frame (plot).
             With it the quality columns of eval.quality: ``no_hold_epe`` (the same tracking, lost
             points not held), ``no_hold_ratio`` (over the frozen first frame's no-hold EPE on the same
             samples, eval.metrics.frozen_motion, whether or not the frozen row is shown),
             ``lost_share``, ``motion_amplitude`` (the re-tracked points' displacement over the asked one,
             eval.metrics.motion_amplitude; per video, mean over videos; the frozen row 0), and against the ground truth per 12-frame chunk and over the last 8 frames
             the brightness gap and texture ratio (eval.metrics.frame_stats: ``late_brightness_gap``,
             ``late_texture_ratio``, ``brightness_gap_per_chunk``, ``texture_ratio_per_chunk``)
  psnr/ssim  eval.metrics.video_psnr / video_ssim against the ground truth, frames 1..
  lpips      eval.lpips (AlexNet or VGG backbone + v0.1 heads from local files), per frame 1.., mean
  fid        Inception pool3 features of frames 1.. of all videos vs the ground truth's (local weights)
  fvd        I3D TorchScript features of the first 16 frames of each video vs the ground truth's
  proxy_fvd  the labelled stand-in where no I3D file exists: Fréchet distance on the run's own codec
             features (eval.video_features.codec_video_features); NOT comparable with published FVDs
Distribution metrics need at least 2 videos (and, to mean anything, many more than feature dims).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from trackstream.data.progress import progress_bar
from trackstream.data.video_io import video_tensor
from trackstream.eval.frechet import frechet_from_features
from trackstream.eval.metrics import frozen_motion
from trackstream.eval.sample import Sample
from trackstream.eval.scorebook import ScoreBook

__all__ = ["METRICS", "REFERENCES", "CODEC_REFERENCES", "WeightsConfig", "RowScorer", "score_rows"]

METRICS = ("epe", "psnr", "ssim", "lpips", "fid", "fvd", "proxy_fvd", "flow_epe")
# reference rows (``eval.floors.reference_rows``); the last two are the codec's floors (``eval.floors``) and need the codec
REFERENCES = ("ground_truth", "frozen", "codec_round_trip", "oracle_copier")
CODEC_REFERENCES = ("codec_round_trip", "oracle_copier")


@dataclass
class WeightsConfig:
    """Local feature-network files (nothing is downloaded); a metric whose file is missing is an error."""

    lpips_net: str = "alex"  # alex | vgg
    lpips_backbone: Optional[str] = None  # alexnet-owt-7be5be79.pth / vgg16-397923af.pth (torchvision format)
    lpips_heads: Optional[str] = None  # alex.pth / vgg.pth of the lpips package (weights/v0.1)
    inception: Optional[str] = None  # pt_inception-2015-12-05-6726825d.pth (pytorch-fid)
    i3d: Optional[str] = None  # i3d_torchscript.pt (StyleGAN-V)
    raft: Optional[str] = None  # raft-things.pth (princeton-vl/RAFT): flow_epe, MoveBench's motion metric

    def require(self, metric: str, *names: str) -> None:
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            raise ValueError(
                f"metric {metric!r} needs weights.{', weights.'.join(missing)} (local files; see "
                "trackstream/eval/harness.py WeightsConfig): set them or drop the metric"
            )


@dataclass
class Extractors:
    """Feature networks built once per evaluation."""

    weights: WeightsConfig = field(default_factory=WeightsConfig)
    codec: object = None
    device: str = "auto"  # where RAFT runs (the evaluation's generate.device; auto: CUDA when present)
    _cache: dict = field(default_factory=dict)

    def get(self, name: str):
        if name not in self._cache:
            w = self.weights
            if name == "lpips":
                from trackstream.eval.lpips import load_lpips

                w.require("lpips", "lpips_backbone", "lpips_heads")
                self._cache[name] = load_lpips(w.lpips_net, backbone=w.lpips_backbone, heads=w.lpips_heads).eval()
            elif name == "fid":
                from trackstream.eval.inception import load_fid_inception

                w.require("fid", "inception")
                self._cache[name] = load_fid_inception(w.inception)
            elif name == "fvd":
                from trackstream.eval.video_features import load_i3d

                w.require("fvd", "i3d")
                self._cache[name] = load_i3d(w.i3d)
            elif name == "flow_epe":
                from trackstream.models.precision import resolve_device
                from trackstream.models.raft import RAFT

                w.require("flow_epe", "raft")
                self._cache[name] = RAFT.from_checkpoint(w.raft, device=resolve_device(self.device))
            elif name == "proxy_fvd":
                if self.codec is None:
                    raise ValueError("proxy_fvd uses the run's codec: set generate.codec.checkpoint")
                self._cache[name] = self.codec
        return self._cache[name]


def _lpips(model, video: np.ndarray, gt: np.ndarray) -> float:
    import torch

    def to(v):  # [T, H, W, 3] uint8 -> [T - 1, 3, H, W] in [-1, 1], frame 0 (given) left out
        return video_tensor(v[1:])[0].transpose(0, 1)

    with torch.no_grad():
        return float(model(to(video), to(gt)).mean())


def _cached(ext: Extractors, name: str, items: list[np.ndarray], compute) -> np.ndarray:
    """Features of ``items`` (frames or videos), each computed once per evaluation: rows share the
    ground truth's frames and the frozen row repeats one frame, so this halves FID's forwards."""
    import hashlib

    cache = ext._cache.setdefault(f"{name}/features", {})
    keys = [hashlib.blake2b(np.ascontiguousarray(x).tobytes(), digest_size=16).digest() for x in items]
    todo = {k: x for k, x in zip(keys, items) if k not in cache}
    if todo:
        for k, f in zip(todo, compute(list(todo.values()))):
            cache[k] = f
    return np.stack([cache[k] for k in keys])


def _features(name: str, ext: Extractors, videos: dict[str, np.ndarray]) -> np.ndarray:
    if name == "fid":
        from trackstream.eval.inception import inception_features

        frames = [f for v in videos.values() for f in v[1:]]
        return _cached(ext, name, frames, lambda xs: inception_features(ext.get("fid"), np.stack(xs)))
    if name == "fvd":
        from trackstream.eval.video_features import i3d_features

        return _cached(ext, name, list(videos.values()), lambda xs: i3d_features(ext.get("fvd"), xs))
    from trackstream.eval.video_features import codec_video_features

    return _cached(ext, name, list(videos.values()), lambda xs: codec_video_features(ext.get("proxy_fvd"), xs))


class RowScorer:
    """The one per-video scoring loop: ``add(sample, {row: video})`` per sample (as a generator makes them, so no
    row need be held whole), ``results()`` at the end: {row: figures}. The per-video measures are
    ``eval.scorebook.ScoreBook``'s; LPIPS and flow EPE are added per video here, the distribution metrics over
    each row's videos at the end. ``frozen_row``: the row whose videos are the first frame held (scored by the
    protocol's frozen answer, no tracker); ``self_rows``: rows that are the samples' own frames, not compared
    with themselves (no PSNR, SSIM, brightness or texture); ``still_no_hold``: the frozen first frame's no-hold
    EPE every row's ``no_hold_ratio`` divides by, where no frozen row is scored."""

    def __init__(
        self,
        tracker,
        *,
        metrics=("epe", "psnr", "ssim"),
        extractors: Extractors | None = None,
        frozen_row: str = "frozen",
        self_rows: tuple[str, ...] = (),
    ):
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown:
            raise ValueError(f"metrics {unknown} are unknown; choose from {list(METRICS)}")
        self.metrics, self.extractors = list(metrics), extractors or Extractors()
        self.frozen_row, self.self_rows = frozen_row, tuple(self_rows)
        self.book = ScoreBook(
            tracker, frozen_row=frozen_row, psnr="psnr" in metrics, ssim="ssim" in metrics, motion="epe" in metrics
        )
        self.extra: dict[str, dict[str, list[float]]] = {}  # row -> lpips / flow_epe per video
        self.kept: dict[str, list[np.ndarray]] = {}  # row -> its videos, for the distribution metrics only
        self.truth: list[np.ndarray] = []
        for m in ("lpips", "flow_epe", "fid", "fvd", "proxy_fvd"):
            if m in self.metrics:  # a missing weights file is said now, before any video is scored
                self.extractors.get(m)

    def add(self, s: Sample, videos: dict[str, np.ndarray]) -> None:
        """Score ``videos`` (row -> uint8 [T, H, W, 3]) of one sample against its frames and tracks."""
        book, distribution = self.book, [m for m in ("fid", "fvd", "proxy_fvd") if m in self.metrics]
        if distribution:
            self.truth.append(s.frames)
        for row, v in videos.items():
            if row == self.frozen_row:  # a still video: the protocol's answer without running the tracker
                book.add_frozen(s.frames, s.tracks, s.visibility, row=row, still=v)
            else:
                book.add(row, v, s.frames, s.tracks, s.visibility, quality=row not in self.self_rows)
            extra = self.extra.setdefault(row, {m: [] for m in ("lpips", "flow_epe") if m in self.metrics})
            if "lpips" in extra:
                extra["lpips"].append(_lpips(self.extractors.get("lpips"), v, s.frames))
            if "flow_epe" in extra:
                from trackstream.eval.flow_epe import flow_epe

                extra["flow_epe"].append(flow_epe(v, s.frames, self.extractors.get("flow_epe")))
            if distribution:
                self.kept.setdefault(row, []).append(v)

    def results(self, still_no_hold: float | None = None) -> dict[str, dict]:
        """{row: {metric: mean, ..., "per_sample": {metric: [...]}, "epe_per_frame": [...]}} (the rows in the
        order they were first added): ``ScoreBook.row_figures`` with LPIPS, flow EPE and the distribution
        metrics beside them."""
        ext = self.extractors
        gt = {
            m: _features(m, ext, dict(enumerate(self.truth))) for m in ("fid", "fvd", "proxy_fvd") if m in self.metrics
        }
        out = self.book.rows(still_no_hold)
        for row, extra in self.extra.items():
            res = out.setdefault(row, {"per_sample": {}})
            res.update({m: float(np.nanmean(vals)) for m, vals in extra.items()})
            res["per_sample"].update({m: [float(x) for x in vals] for m, vals in extra.items()})
            for m, ref in gt.items():
                res[m] = frechet_from_features(_features(m, ext, dict(enumerate(self.kept[row]))), ref)
        return {row: out[row] for row in self.extra}


def score_rows(
    rows: dict[str, dict[str, np.ndarray]],
    samples: list[Sample],
    *,
    metrics: list[str],
    tracker,
    extractors: Extractors,
    progress: bool = True,
) -> dict:
    """``RowScorer``'s results for rows of videos ({row: {sample id: video}}), every row on every sample; with
    ``epe``, the quality columns too (the module docstring). A row named ``frozen`` is the first frame held;
    without it every row's ``no_hold_ratio`` divides by the frozen first frame's no-hold EPE over ``samples``."""
    scorer = RowScorer(tracker, metrics=metrics, extractors=extractors, frozen_row="frozen")
    still_no_hold = None
    if "epe" in metrics and "frozen" not in rows:
        still_no_hold = float(
            np.nanmean([frozen_motion(s.frames, s.tracks, s.visibility, tracker).no_hold_epe for s in samples])
        )
    for s in progress_bar(samples, desc="scoring", disable=not progress, leave=False):
        scorer.add(s, {row: videos[s.id] for row, videos in rows.items()})
    return scorer.results(still_no_hold)
