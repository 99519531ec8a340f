"""The student-scoring protocol: exported students scored on a distillation run's teacher, codec and world.

A distillation run directory (make run's layout: ``teacher/`` with its config and export, ``dmd/config.yaml``
with the distilled world and codec) fixes what every student is compared on. ``StudentScorer`` loads the
teacher's codec and text encoder and the held-out clips once; each call scores one exported network exactly
as make run's stream stage evaluates its students (``eval.stream_eval``):
* at the training horizon: ``clips`` held-out clips of the run's world with the teacher's ``eval.num_tracks``
  input tracks, EPE with and without tracks by the one protocol (``eval.metrics.motion_epe``), PSNR and SSIM
  against the ground truth;
* at ``long_factor`` x the horizon: ``long_clips`` long clips streamed with the input tracks and the attention
  sink: the whole rollout's EPE, PSNR and SSIM, and drift = the last chunks' latent error relative to an
  unrelated video's (make run's drift figure, ``drift_summary``);
* beside them the quality columns (``eval.quality``, ``QUALITY_FIGURES``): at the horizon the no-hold EPE
  over the frozen first frame's, the share of points lost, the late brightness gap and texture ratio; the
  same over the long rollouts.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from trackstream.models.tracks import latent_frames

__all__ = ["SCORE_FIGURES", "QUALITY_FIGURES", "StudentScorer"]

# every figure a call returns, with its label (besides ``seconds``, the call's wall time)
SCORE_FIGURES: tuple[tuple[str, str], ...] = (
    ("epe_with_tracks", "EPE with tracks (px)"),
    ("epe_without_tracks", "EPE without tracks (px)"),
    ("psnr_with_tracks", "PSNR (dB)"),
    ("ssim_with_tracks", "SSIM"),
    ("long_epe", "EPE at 10x (px)"),
    ("long_psnr", "PSNR at 10x (dB)"),
    ("long_ssim", "SSIM at 10x"),
    ("drift", "drift at 10x (late latent error, rel.)"),
)
# the quality columns a call returns too (eval.quality), kept apart from SCORE_FIGURES so tables and
# curves written from earlier calls (lab/dmd_curve.py reads every SCORE_FIGURES key) still read
QUALITY_FIGURES: tuple[tuple[str, str], ...] = (
    ("no_hold_epe_with_tracks", "no-hold EPE with tracks (px)"),
    ("no_hold_ratio_with_tracks", "no-hold EPE / frozen frame's"),
    ("lost_share_with_tracks", "points lost (share)"),
    ("motion_amplitude_with_tracks", "motion amplitude with tracks (1 = as asked)"),
    ("late_brightness_gap_with_tracks", "late brightness gap (/255)"),
    ("late_texture_ratio_with_tracks", "late texture ratio"),
    ("long_no_hold_ratio", "no-hold EPE / frozen at 10x"),
    ("long_late_brightness_gap", "late brightness gap at 10x (/255)"),
    ("long_late_texture_ratio", "late texture ratio at 10x"),
)


class StudentScorer:
    """The run's teacher codec, text encoder and held-out clips, loaded once; ``__call__`` scores one network.

    ``protocol`` records what the figures were measured on (clip counts, lengths, tracks, tracker)."""

    def __init__(
        self,
        run_dir: Path | str,
        *,
        clips: int = 16,
        long_clips: int = 4,
        long_factor: int = 10,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        from trackstream.data.batching import derive_seed
        from trackstream.data.clips import ClipPool, DataConfig, heldout_clips, make_world
        from trackstream.eval.stream_scoring import StreamEvalConfig
        from trackstream.models.network import Network
        from trackstream.models.precision import resolve_precision

        run_dir = Path(run_dir)
        self.device, self.dtype = resolve_precision(device, dtype)
        student = Network.open(run_dir / "dmd", "run")  # its world, grid and clips
        teacher = Network.open(run_dir / "teacher", "run")  # its codec and encoders serve every student
        _, self.codec, self.conditioner = teacher.for_inference(device=self.device, dtype=self.dtype)
        self.data = DataConfig(**{**student.recorded("data"), "eval_samples": clips})
        if self.data.source != "synthetic":  # the long clips below are rendered from the synthetic world
            raise ValueError(
                f"{run_dir}: this protocol scores students of the synthetic world (data.source={self.data.source!r}); "
                "evaluate shard-trained students with `trackstream eval benchmark.name=shards`"
            )
        self.clips = heldout_clips(self.data).clips
        self.cfg = StreamEvalConfig(num_tracks=teacher.recorded("eval.num_tracks"), preview_clips=0)
        horizon = latent_frames(self.data.num_frames)
        self.long_latents = 1 + long_factor * (horizon - 1)
        long_frames = 1 + 4 * (self.long_latents - 1)
        world = make_world(dataclasses.replace(self.data, num_frames=long_frames))
        self.long = ClipPool(world, [derive_seed(self.data.eval_seed, "long", i) for i in range(long_clips)]).clips
        self.horizon = horizon
        self.protocol = {
            "clips": clips,
            "long_clips": long_clips,
            "long_factor": long_factor,
            "num_frames": self.data.num_frames,
            "long_frames": long_frames,
            "input_tracks_per_clip": self.cfg.num_tracks,
            "tracker": self.cfg.tracker,
        }

    def __call__(self, network_dir: Path | str) -> dict[str, float]:
        from trackstream.eval.stream_eval import student_network
        from trackstream.eval.stream_scoring import drift_summary, evaluate_stream_motion, long_rollout
        from trackstream.stream.engine import StreamingGenerator

        net = student_network(network_dir, device=self.device, dtype=self.dtype)
        stream_cfg = net.conventions.stream_config(str(network_dir))
        engine = StreamingGenerator(
            net, self.codec, config=stream_cfg, image_features_fn=self.conditioner.image_features
        )
        t0 = time.perf_counter()
        sf = evaluate_stream_motion(
            engine, clips=self.clips, text_fn=self.conditioner.text, cfg=self.cfg, out_dir=None, fps=self.data.fps
        )
        roll = long_rollout(
            engine,
            clips=self.long,
            codec=self.codec,
            text_fn=self.conditioner.text,
            seed=self.cfg.seed,
            num_tracks=self.cfg.num_tracks,
            tracker=self.cfg.tracker,
        )
        horizon_chunks = stream_cfg.causal.num_chunks(self.horizon) - 1
        # make run's drift figure: the last chunks' latent error relative to an unrelated video's (1 = as far
        # from the ground truth as a random plausible video; past 1: out of distribution)
        drift = drift_summary(roll["per_chunk"], horizon_chunks=horizon_chunks)["latent_err_rel"]["late"]
        return {
            **{k: sf[k] for k in ("epe_with_tracks", "epe_without_tracks", "psnr_with_tracks", "ssim_with_tracks")},
            "long_epe": roll["epe_whole"],
            "long_psnr": roll["psnr_whole"],
            "long_ssim": roll["ssim_whole"],
            "drift": drift,
            **{k: sf[k] for k, _ in QUALITY_FIGURES if k in sf},
            **{f"long_{k}": roll[f"{k}_whole"] for k in ("no_hold_ratio", "late_brightness_gap", "late_texture_ratio")},
            "seconds": round(time.perf_counter() - t0, 1),
        }
