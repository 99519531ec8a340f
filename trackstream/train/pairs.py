"""ODE pairs as a job of their own: ``python -m trackstream.train.pairs experiment=ode_init_wan1.3b_480p stage.teacher=...``

Composes the same config as ``python -m trackstream.train`` (an ``ode_init`` stage) and only generates its pairs,
into ``stage.pairs`` (or ``<run_dir>/ode_pairs``): every rank writes its share of the shards, a
re-run skips finished shards (resumable after a preemption), rank 0 writes the index last. The ODE
init job then points ``stage.pairs`` at that folder. On Slurm this is the embarrassingly parallel
stage: as many GPUs as are free, no gradient traffic (slurm/README.md). Device: the run's (one process
per GPU, CUDA when present, else the CPU); the teacher samples in ``stage.ode_pairs.sample_dtype``
(auto: bf16 on CUDA, fp32 on the CPU), which index.json and results.json record.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from trackstream.models.precision import dtype_name, resolve_dtype
from trackstream.train.app import hydra_entry, start_run
from trackstream.train.ode_init.objective import ODEInitConfig
from trackstream.train.pair_data import obtain_ode_pairs

log = logging.getLogger(__name__)


def make_pairs(cfg: DictConfig) -> dict:
    typed, runtime, run_dir = start_run(cfg)
    if not isinstance(typed.stage, ODEInitConfig):
        raise ValueError(
            f"stage={typed.stage.name!r}: distill.pairs makes the pairs of an ode_init stage; "
            "compose one (e.g. experiment=ode_init_wan1.3b_480p)"
        )
    out = Path(typed.stage.pairs) if typed.stage.pairs else run_dir / "ode_pairs"
    t0 = time.perf_counter()
    st = typed.stage
    obtain_ode_pairs(
        st.teacher,
        st.ode_pairs,
        runtime,
        out,
        count=st.pool_size,
        model=typed.model,
        codec=typed.codec,
        data=typed.data,
        schedule=typed.schedule,
    )
    sample_dtype = resolve_dtype(typed.stage.ode_pairs.sample_dtype, runtime.device, field="ode_pairs.sample_dtype")
    summary = {
        "status": "done",
        "pairs": str(out),
        "num_pairs": typed.stage.ode_pairs.num_pairs,
        "world_size": runtime.world_size,
        "seconds": round(time.perf_counter() - t0, 2),
        "device": runtime.device.type,
        "sample_dtype": dtype_name(sample_dtype),
    }
    if runtime.is_main:
        (run_dir / "results.json").write_text(json.dumps(summary, indent=2))
        log.info(
            "ODE pairs done: %d pairs in %s (%.1f s, %d process(es), %s, %s)",
            summary["num_pairs"],
            out,
            summary["seconds"],
            runtime.world_size,
            summary["device"],
            summary["sample_dtype"],
        )
    runtime.barrier()
    return summary


main = hydra_entry(
    make_pairs,
    help_header="trackstream pairs: the ODE pairs of an ode_init stage, e.g. trackstream pairs "
    "experiment=ode_init_wan1.3b_480p stage.teacher=<teacher export> (docs/recipes.md)",
)


if __name__ == "__main__":
    main()
