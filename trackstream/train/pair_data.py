"""The ODE pairs the causal stages train on: ``obtain_ode_pairs`` generates a folder of them with the frozen
teacher (an exported network folder, ``stage.teacher``) when ``stage.pairs`` has none yet: it renders the
conditions, encodes them with the teacher's codec and text encoder, samples with joint guidance and writes
shards (under several processes each rank writes its share; used by ``stage=ode_init`` and the ``trackstream
pairs`` job). ``condition_stream`` streams a pair folder's conditions (first frame, tracks, text) to the
ODE-init, DMD and RL stages. ODE pairs keep a full teacher per rank: ranks write different shards and never
call it in lockstep.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from trackstream.data.batching import derive_seed
from trackstream.data.clips import DataConfig
from trackstream.data.pool_stream import PoolStream
from trackstream.distill.horizons import rollout_frames
from trackstream.distill.ode_pairs import ODEPairsConfig, generate_ode_pairs
from trackstream.distill.pair_shards import PairSet, pairs_complete
from trackstream.models.conditioner import Conditioner
from trackstream.models.motion_wan import ModelConfig
from trackstream.models.streaming import CausalConfig
from trackstream.train.encoders import load_text_encoder
from trackstream.train.exports import NetworkExport
from trackstream.train.pair_conditions import PairConditions
from trackstream.trainer.codec import CodecConfig
from trackstream.trainer.dist import Runtime
from trackstream.trainer.parallel import attach_sequence_parallel, prepare_frozen

if TYPE_CHECKING:
    from trackstream.train.train_config import ScheduleConfig

__all__ = ["obtain_ode_pairs", "condition_stream", "CONDITION_KEYS"]

log = logging.getLogger(__name__)
CONDITION_KEYS = ("image_latent", "tracks", "visibility", "text_emb", "text_len", "track_ids")
OPTIONAL_KEYS = ("image", "image_features")  # layout channels (not t2v / ti2v); CLIP tokens (I2V branch only)


@torch.no_grad()
def obtain_ode_pairs(
    teacher: str,
    cfg: ODEPairsConfig,
    runtime: Runtime,
    out_dir: Path,
    *,
    count: int | None,
    model: ModelConfig,
    codec: CodecConfig,
    data: DataConfig,
    schedule: ScheduleConfig,
) -> Path:
    """Generate ``cfg``'s ODE pairs (``stage.ode_pairs``) of the exported ``teacher`` into ``out_dir`` unless
    complete (resumable; under several processes each rank writes its share of the shards, rank 0 the index): the
    conditions of ``data``'s first ``count`` training clips (None: ``cfg.num_pairs``; ``stage.pool_size``) encoded
    by the teacher's codec (``codec``) and text encoder (``model.text_encoder``), sampled by the teacher and cut at
    the student's points of ``schedule``'s grid."""
    out_dir = Path(out_dir)
    if pairs_complete(out_dir):
        return out_dir
    export = NetworkExport(teacher)
    device = runtime.device  # every rank builds the teacher and writes its share of the shards
    teacher = export.network.load()
    attach_sequence_parallel(teacher, runtime, "teacher (ODE pairs)")  # a group samples its shards together
    teacher = prepare_frozen(runtime, teacher)
    conditioner = export.conditioner(codec, runtime, load_text_encoder(model, runtime))
    conditions = PairConditions(data, conditioner, count=count or cfg.num_pairs, text_dim=export.text_dim)
    if runtime.is_main:
        log.info(
            "ODE pairs: %d pairs from %s, %d teacher steps, %d process(es) -> %s",
            cfg.num_pairs,
            conditions.describe(),
            cfg.teacher_steps,
            runtime.world_size,
            out_dir,
        )

    generate_ode_pairs(
        teacher,
        conditions=conditions,
        cfg=cfg,
        student_steps=schedule.student_steps,
        shift=schedule.shift,
        null_text=conditioner.null_text,
        null_text_lengths=conditioner.null_lengths,
        embed_dim=teacher.track_embed_dim,
        height=data.height,
        width=data.width,
        out_dir=out_dir,
        device=device,
        rank=runtime.data_rank,
        world_size=runtime.data_world_size,
        barrier=runtime.barrier,
        writer=runtime.rank % runtime.sequence_parallel == 0,
    )
    runtime.barrier()
    return out_dir


def condition_stream(
    data: DataConfig,
    runtime: Runtime,
    pairs: PairSet | None,
    keys: tuple[str, ...],
    *,
    causal: CausalConfig,
    horizons: int,
    conditioner: Conditioner | None = None,
    text_dim: int | None = None,
    count: int | None = None,
) -> PoolStream:
    """The pair folder's ``keys`` (the teacher's horizon), or the conditions (first frame, tracks, text) of the
    same clips rendered at ``1 + N (T_h - 1)`` frames for a rollout over ``horizons`` > 1 horizons of the
    chunking ``causal`` (``stage.causal``), encoded per batch with the teacher's ``conditioner``; without a pair
    folder (``pairs`` None: a student started by teacher forcing or consistency distillation) the first ``count``
    training clips' conditions, rendered the same way. Every batch carries its global sample ids (``gid``): they
    key per-sample randomness, so a global batch draws the same on any world size."""
    if pairs is not None:
        keys = keys + tuple(k for k in OPTIONAL_KEYS if k in pairs)
        count = len(pairs)
    if pairs is not None and horizons == 1:

        def make(idx: list[int], gids: list[int]) -> dict:
            return {**pairs.batch(idx, keys), "gid": torch.tensor(gids)}

    else:
        assert conditioner is not None and text_dim is not None and count
        keys = keys + OPTIONAL_KEYS
        frames = rollout_frames(data.num_frames, horizons, causal)
        needed_by = f"stage.rollout_horizons={horizons} (rollouts of {frames} frames)"
        long_data = dataclasses.replace(data, num_frames=frames)
        conditions = PairConditions(long_data, conditioner, count=count, text_dim=text_dim, needed_by=needed_by)
        if conditions.pool is None:  # shards: a clip too short for the rollout is refused now, not mid-run
            conditions.samples.get(0)
        if runtime.is_main:
            log.info("conditions: %s at %d frames (%d teacher horizons)", conditions.describe(), frames, horizons)

        def make(idx: list[int], gids: list[int]) -> dict:
            batch = conditions(idx)
            return {**{k: batch[k].cpu() for k in keys if batch.get(k) is not None}, "gid": torch.tensor(gids)}

    return PoolStream(
        count,
        batch_size=data.batch_size,
        seed=derive_seed(data.seed, "pairs"),
        make_batch=make,
        rank=runtime.data_rank,  # the K ranks of a sequence group train on the same samples
        world_size=runtime.data_world_size,
    )
