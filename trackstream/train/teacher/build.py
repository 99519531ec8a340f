"""Wiring of ``stage=teacher``: frozen parts, data, network, objective, hooks, evaluation, export.

Order matters: seeds first (identical random init on every rank), then the frozen parts (the
codec may have to be fitted first, in ``<run_dir>/codec``), the data stream (the synthetic pool
encoded once through the frozen codec), the network (built on meta for real flavors and
materialised after sharding by ``prepare_network``), and the objective, which receives the
wrapped network. ``finish`` evaluates EPE with and without tracks on held-out clips using the
EMA weights and exports the teacher (official Wan format + heads) to ``<run_dir>/export``.
The held-out clips (``data.clips.heldout_clips``: the synthetic world's, or with ``source=shards``
those of ``data.eval_shards``) are read first of all, so a missing or unfit held-out set fails before
the text encoder loads or the codec is fitted, not at the first evaluation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from trackstream.data.batching import derive_seed
from trackstream.data.clips import ClipPool, DataConfig, check_heldout, heldout_clips
from trackstream.diffusion.samplers import SamplerConfig
from trackstream.eval.teacher_eval import EvalConfig, evaluate_motion
from trackstream.models.conditioner import Conditioner
from trackstream.models.motion_wan import Conventions, ModelConfig, build_motion_wan
from trackstream.train.codec import obtain_codec
from trackstream.train.encoders import load_text_encoder, training_data
from trackstream.train.plan import StagePlan, trained_network
from trackstream.train.stage import ENCODERS, Cost, CostInputs, Stage, Trained
from trackstream.train.teacher.objective import FlowMatchingObjective, TeacherConfig
from trackstream.trainer.dist import Runtime
from trackstream.trainer.ema import EMAConfig
from trackstream.trainer.loop import Hook, TrainerConfig, TrainResult
from trackstream.trainer.metrics import MetricLogger
from trackstream.trainer.optim import OptimConfig
from trackstream.trainer.parallel import ParallelConfig, unwrap
from trackstream.trainer.weights import export_network, initialise

if TYPE_CHECKING:
    from trackstream.train.train_config import TrainConfig

__all__ = ["STAGE", "build_teacher", "teacher_objective"]

log = logging.getLogger(__name__)


def _heldout(eval_cfg: EvalConfig, data: DataConfig, *, evaluates: bool) -> ClipPool | None:
    """The held-out clips of the evaluation (None with ``eval.enabled`` false or on a rank that does not
    evaluate; every rank checks the config, so all fail alike)."""
    if not eval_cfg.enabled:
        return None
    held = dataclasses.replace(data, num_frames=eval_cfg.num_frames or data.num_frames)
    check_heldout(held, disable="eval.enabled=false")
    return heldout_clips(held) if evaluates else None


def _trained_teacher(
    model: ModelConfig,
    runtime: Runtime,
    text_dim: int,
    *,
    clean_first_frame: bool,
    trainer: TrainerConfig,
    parallel: ParallelConfig,
    optim: OptimConfig,
    ema: EMAConfig,
):
    """The DiT to train: built with the same seed on every rank (``trainer.seed``: identical random init
    everywhere), then initialised from ``model.init_from`` (and a LoRA adapter) when it is on meta or asks for
    weights; trained for ``trainer.max_steps``."""
    torch.manual_seed(trainer.seed)
    net = build_motion_wan(model, text_encoder_dim=text_dim)
    net.conventions = Conventions(clean_first_frame=clean_first_frame)
    init_fn = None
    if any(p.is_meta for p in net.parameters()) or model.init_from or model.lora.enabled:
        init_fn = partial(
            initialise,
            init_from=model.init_from,
            adapter=model.adapter,
            sharded=parallel.strategy == "fsdp",
            is_main=runtime.is_main,
        )
    return trained_network(
        parallel,
        runtime,
        "dit",
        net,
        optim=optim,
        ema=ema,
        total_steps=trainer.max_steps,
        lora=model.lora,
        init_fn=init_fn,
    )


def _collective(strategy: str, runtime: Runtime) -> bool:
    """Whether every rank runs the network's forward in evaluation (FSDP gathers, SP all-to-alls)."""
    return strategy == "fsdp" or runtime.sequence_parallel > 1


class _Evaluation:
    """EPE with and without tracks on the held-out clips, with the EMA weights (``eval.use_ema``), sampled by
    ``sampler`` on the grid of ``shift``. Every rank runs the sampler under FSDP or sequence parallelism
    (collective forwards); otherwise rank 0 only. ``periodic_clips``: the clips of a periodic evaluation."""

    def __init__(
        self,
        eval_cfg: EvalConfig,
        runtime: Runtime,
        heldout: ClipPool | None,
        trained,
        conditioner: Conditioner,
        run_dir: Path,
        *,
        sampler: SamplerConfig,
        shift: float,
        fps: int,
        clean_first_frame: bool,
        strategy: str,
        periodic_clips: int,
    ):
        self.eval_cfg, self.runtime, self.heldout, self.trained = eval_cfg, runtime, heldout, trained
        self.conditioner, self.sampler, self.shift, self.fps = conditioner, sampler, shift, fps
        self.clean_first_frame, self.periodic_clips = clean_first_frame, periodic_clips
        self.out = run_dir / "samples"
        self.sharded = strategy == "fsdp"
        self.collective = _collective(strategy, runtime)

    def __call__(self, tag: str, *, logger: MetricLogger, step: int, max_clips: int | None = None) -> dict:
        runtime, trained = self.runtime, self.trained
        figures: dict = {}
        if runtime.is_main or self.collective:
            clips = self.heldout.head(max_clips) if max_clips is not None else self.heldout
            module = trained.module if self.sharded else trained.raw
            ema = trained.ema if (self.eval_cfg.use_ema and trained.ema is not None) else None
            ctx = ema.swapped(unwrap(module)) if ema is not None else contextlib.nullcontext()
            was_training = module.training
            with ctx, runtime.autocast():
                figures = evaluate_motion(
                    module,
                    conditioner=self.conditioner,
                    clips=clips,
                    sampler=self.sampler,
                    shift=self.shift,
                    cfg=self.eval_cfg,
                    embed_dim=unwrap(module).track_embed_dim,
                    device=runtime.device,
                    out_dir=self.out if runtime.is_main else None,
                    fps=self.fps,
                    tag=tag,
                    clean_first_frame=self.clean_first_frame,
                )
            module.train(was_training)
            for v in figures.get("videos", []):  # W&B (if enabled) gets them by file path
                logger.log_video(step, f"samples/{v['mode']}/{v['clip']:03d}", Path(v["path"]), caption=tag)
        runtime.barrier()
        return figures

    def periodic(self, step: int, logger: MetricLogger) -> None:
        figures = self(f"step_{step:08d}", logger=logger, step=step, max_clips=self.periodic_clips)
        # eval.jsonl and, with W&B, eval/* scalars at this step (rank 0 only)
        logger.log_eval(step, {"num_samples": figures.get("num_samples"), **_scalars(figures)})

    def final(self, step: int, logger: MetricLogger, run_dir: Path) -> dict:
        figures = self("final", logger=logger, step=step)
        if self.runtime.is_main:
            (run_dir / "eval.json").write_text(json.dumps(figures, indent=2))
            log.info(
                "EPE with tracks %.3f px, without tracks %.3f px (ratio %.3f); tracker on ground truth %.3f px",
                figures["epe_with_tracks"],
                figures["epe_without_tracks"],
                figures["epe_ratio_with_over_without"],
                figures["epe_ground_truth_video"],
            )
        # the final evaluation in the history under the periodic one's prefix (eval/*, the last step)
        logger.log_eval(step, {"num_samples": figures.get("num_samples"), **_scalars(figures)}, periodic=False)
        return {k: v for k, v in figures.items() if k.startswith("epe_")}


def teacher_objective(
    st: TeacherConfig,
    net,
    *,
    shift: float,
    null_text: tuple,
    height: int,
    width: int,
    seed: int,
    device,
    conditioner=None,
) -> FlowMatchingObjective:
    """The stage's objective on the (possibly wrapped) network ``net`` (the builder's, and the training-step
    benchmark's with random weights): how it embeds, splats and orders its tracks is read from the network;
    ``null_text``: the empty prompt's (embedding, lengths); ``conditioner``: encodes raw clips (None: the batches
    arrive encoded)."""
    module = unwrap(net)
    return FlowMatchingObjective(
        net,
        cfg=st,
        shift=shift,
        conditioner=conditioner,
        null_text=null_text[0],
        null_lengths=null_text[1],
        embed_dim=module.track_embed_dim,
        splat=module.track_splat,
        convention=module.track_convention,
        height=height,
        width=width,
        seed=seed,
        device=device,
    )


def build_teacher(cfg: "TrainConfig", runtime: Runtime, run_dir: Path) -> StagePlan:
    st: TeacherConfig = cfg.stage
    # the held-out clips are read first: a missing or unfit set fails before the encoders load
    heldout = _heldout(cfg.eval, cfg.data, evaluates=runtime.is_main or _collective(cfg.parallel.strategy, runtime))
    text_encoder = load_text_encoder(cfg.model, runtime)
    pool = ClipPool.training(cfg.data) if cfg.data.pool_size else None
    codec = obtain_codec(
        runtime,
        run_dir,
        pool,
        codec=cfg.codec,
        data=cfg.data,
        trainer=cfg.trainer,
        parallel=cfg.parallel,
        logger=cfg.logger,
    )
    conditioner = Conditioner.for_network(cfg.model, codec=codec, text_encoder=text_encoder, device=runtime.device)
    data = training_data(cfg.data, runtime, pool, conditioner)
    trained = _trained_teacher(
        cfg.model,
        runtime,
        text_encoder.dim,
        clean_first_frame=st.clean_first_frame,
        trainer=cfg.trainer,
        parallel=cfg.parallel,
        optim=cfg.optim,
        ema=cfg.ema,
    )
    objective = teacher_objective(
        st,
        trained.module,
        shift=cfg.schedule.shift,
        null_text=(conditioner.null_text, conditioner.null_lengths),
        height=cfg.data.height,
        width=cfg.data.width,
        seed=derive_seed(cfg.trainer.seed, "objective", runtime.data_rank) % 2**62,  # one noise per sample
        device=runtime.device,
        conditioner=conditioner,
    )
    evaluation = None
    if cfg.eval.enabled:
        evaluation = _Evaluation(
            cfg.eval,
            runtime,
            heldout,
            trained,
            conditioner,
            run_dir,
            sampler=cfg.sampler,
            shift=cfg.schedule.shift,
            fps=cfg.data.fps,
            clean_first_frame=st.clean_first_frame,
            strategy=cfg.parallel.strategy,
            periodic_clips=min(cfg.eval.periodic_clips, cfg.data.eval_samples),
        )
    hooks = [Hook(cfg.trainer.sample_every, evaluation.periodic)] if evaluation and cfg.trainer.sample_every > 0 else []

    def finish(result: TrainResult, logger: MetricLogger) -> dict:
        out = evaluation.final(result.step, logger, run_dir) if evaluation else {}
        conventions = Conventions(
            clean_first_frame=st.clean_first_frame,
            schedule_shift=cfg.schedule.shift,
            num_frames=cfg.data.num_frames,
            height=cfg.data.height,
            width=cfg.data.width,
        )
        export = export_network(
            trained,
            run_dir / "export" / "teacher",
            model_cfg=asdict(cfg.model),
            runtime=runtime,
            text_encoder_dim=text_encoder.dim,
            conventions=conventions,
        )
        out["export"] = str(export)
        return out

    return StagePlan(objective=objective, networks={"dit": trained}, data=data, hooks=hooks, finish=finish)


def _scalars(figures: dict) -> dict:
    """The evaluation's scalar figures that go to eval.jsonl and W&B (EPE, PSNR, SSIM, lost points, the no-hold
    EPE and the last frames' brightness and texture against the ground truth)."""
    prefixes = ("epe_", "psnr_", "ssim_", "lost_", "no_hold_", "late_")
    return {k: v for k, v in figures.items() if k.startswith(prefixes) and isinstance(v, (int, float))}


def teacher_cost(st: TeacherConfig, run: CostInputs) -> Cost:
    """The DiT trained (its EMA with ``ema.enabled``); the text encoder, the codec and (i2v flavors) the CLIP
    image encoder stay on the device for the whole run (the data is encoded per batch)."""
    return Cost(trained=(Trained("dit", ema=run.ema),), frozen=ENCODERS, passes=1.0)


STAGE = Stage(TeacherConfig.name, TeacherConfig, build_teacher, sequence_parallel=True, cost=teacher_cost)
