"""What every stage's builder returns and how it is trained: the ``StagePlan`` (an objective, prepared networks,
a data stream, hooks and a ``finish`` callback), a trained network put on the engine (``trained_network``) and
the plan's run through ``trainer.loop.train`` (``train_plan``). Each stage's builder is in the file named after the stage (train/teacher/build.py, train/dmd/build.py,
...; the records are collected in ``train.registry.STAGES``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch.nn as nn

from trackstream.trainer.checkpoint import CheckpointManager
from trackstream.trainer.dist import Runtime
from trackstream.trainer.loop import Hook, TrainerConfig, TrainResult, train
from trackstream.trainer.metrics import LoggerConfig, MetricLogger, parameter_counts
from trackstream.trainer.objective import Objective
from trackstream.trainer.optim import OptimConfig
from trackstream.trainer.parallel import ParallelConfig, attach_sequence_parallel, prepare_network
from trackstream.trainer.trained_network import TrainedNetwork

if TYPE_CHECKING:
    from trackstream.models.lora import LoraConfig

__all__ = ["StagePlan", "train_plan", "trained_network"]


@dataclass
class StagePlan:
    objective: Objective
    networks: dict[str, TrainedNetwork]
    data: Any  # iterable of batches with state_dict() / load_state_dict()
    hooks: list[Hook] = field(default_factory=list)
    finish: Callable[[TrainResult, MetricLogger], dict] = lambda result, logger: {}
    trainer: TrainerConfig | None = None  # overrides cfg.trainer (nested codec fit)
    frozen: dict[str, nn.Module] = field(default_factory=dict)  # frozen networks the stage calls (parameter counts)


def trained_network(
    parallel: ParallelConfig,
    runtime: Runtime,
    name: str,
    module: nn.Module,
    *,
    optim: OptimConfig,
    ema,
    total_steps: int,
    lora: "LoraConfig | None",
    grad_sync: str = "wrapper",
    init_fn: Callable[[nn.Module], None] | None = None,
) -> TrainedNetwork:
    """One trainable network of a stage on the engine: its DiT on token slices under
    ``parallel.sequence_parallel``, then wrapped, materialised and given its optimizer (and EMA);
    ``lora``: the adapters (``model.lora``) injected before sharding, None where the stage trains whole."""
    attach_sequence_parallel(module, runtime, name)
    return prepare_network(
        runtime,
        parallel,
        name=name,
        module=module,
        optim=optim,
        ema=ema,
        total_steps=total_steps,
        init_fn=init_fn,
        grad_sync=grad_sync,
        lora=lora,
    )


def train_plan(
    plan: StagePlan,
    trainer: TrainerConfig,
    logger_cfg: LoggerConfig,
    runtime: Runtime,
    run_dir: Path,
    fp: dict,
    config: dict | None = None,
    *,
    stage: str | None = None,
    experiment: str | None = None,
) -> dict:
    """Train ``plan`` in ``run_dir``; ``stage`` / ``experiment`` name the W&B run (job type, tags)."""
    ckpt = CheckpointManager(run_dir / "checkpoints", runtime, keep_last=trainer.keep_last, fingerprint=fp)
    params = parameter_counts({k: n.raw for k, n in plan.networks.items()}, plan.frozen)
    logger = MetricLogger(
        run_dir,
        logger_cfg,
        is_main=runtime.is_main,
        total_steps=trainer.max_steps,
        config=config,
        stage=stage,
        experiment=experiment,
        params=params,
    )
    try:
        result = train(
            objective=plan.objective,
            networks=plan.networks,
            data=plan.data,
            cfg=trainer,
            runtime=runtime,
            checkpoints=ckpt,
            logger=logger,
            hooks=plan.hooks,
        )
        summary = {
            "step": result.step,
            "status": result.status,
            "resumed_from": str(result.resumed_from) if result.resumed_from else None,
            "last_metrics": result.last_metrics,
        }
        if result.status == "done":
            summary.update(plan.finish(result, logger))
            # the run's own numbers; evaluation figures are in the history under eval/ (the stage logs them)
            logger.log_summary(
                {f"run/{k}": v for k, v in summary.items() if isinstance(v, (int, float)) and not k.startswith("epe_")}
            )
            if summary.get("export"):  # the stage's exported network (logger.wandb.log_checkpoints)
                logger.log_artifact(Path(summary["export"]), metadata={"step": result.step, "stage": stage})
    finally:
        logger.close()
    return summary
