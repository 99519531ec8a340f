"""Step benchmarks of the distillation stages: a DMD critic update, a DMD generator update, an ODE-init update,
and (trackstream/bench/distill_stages.py) a teacher-forcing update, a consistency update, and the tiny decoder's
decoder and discriminator updates.

    trackstream bench-distill                                   # tiny_dmd + tiny_ode_init on CPU
    trackstream bench-distill --real                            # the four real DMD / ODE-init recipes (GPU, bf16)
    trackstream bench-distill --configs dmd_wan1.3b_480p --steps 5
    trackstream bench-distill --configs teacher_forcing_wan1.3b_480p,consistency_wan1.3b_480p,tiny_decoder_wan2.1_480p
    trackstream bench-distill --configs tiny_teacher_forcing,tiny_consistency,tiny_decoder   # the tiny ones, CPU
    trackstream bench-distill --configs dmd_wan2.2_5b_704p --override +model.overrides.num_layers=2 \\
        --override data.height=64 --override data.width=128 --batch 1    # a cut-down CPU rehearsal

Each config is the composed experiment (conf/experiment), so frame counts, sizes, chunking, steps,
optimizers, EMA, activation checkpointing and precision are the recipe's. The trained networks are the stage's
own (``dmd_networks``, ``causal_student_network``, ``tiny_decoder_networks``: each network
with its optimizer, EMA, steps, adapters and gradient sync, as the builders make them; one process:
``parallel.strategy=single``) on random weights (the zero-init head randomised) instead of the exported teacher /
student, the frozen teacher prepared as ``load_frozen`` prepares it, and the objective is the stage's own
(``dmd_objective``, ``ode_init_objective``, ... in ``train/<stage>/build.py``, which the builders call), fed random
inputs of the pair folder's shapes instead of the pairs. What is
timed is the loop's inner work for one network (trackstream/trainer/loop.py): ``objective.loss`` under the runtime's
autocast, backward, and ``TrainedNetwork.step`` (clip, AdamW, schedule, EMA), for one micro-batch of
``data.batch_size``; a real loop step accumulates ``trainer.grad_accum`` of them before the optimizer.
DMD: the critic update (no-grad self-rollout + critic flow matching) and the generator update
(self-rollout with grad at the exit step + guided teacher + critic), each with its own peak memory, and
the mean loop step at the recipe's ``update_ratio`` (critic every step, generator every r-th). The exit
step is drawn per rollout as in training, so the generator's time varies call to call. Peak memory: CUDA
``max_memory_allocated`` over the phase's timed calls (the other phase's optimizer state included once it
exists); CPU: not measured. One GPU may not hold a 5B DMD (three 5B networks, two with AdamW): that is
recorded, not fatal (the recipe shards them with FSDP2). teacher_forcing, consistency, tiny_decoder: see
distill_stages.py (what their batches hold, consistency's EMA target, the tiny decoder's two updates).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
from pathlib import Path

import torch

from trackstream.bench.distill_setup import (
    describe,
    empty_prompt,
    horizon_conditioner,
    long_shapes,
    pair_shapes,
    random_conditions,
    random_network,
    timed,
    updater,
)
from trackstream.bench.distill_stages import STAGE_BENCHES
from trackstream.bench.timing import environment
from trackstream.eval.tables import markdown_table
from trackstream.models.precision import DTYPES
from trackstream.models.streaming import first_chunk_given
from trackstream.models.tracks import sample_track_ids
from trackstream.stream.options import add_precision_args, parsed_precision
from trackstream.train.causal_student import causal_student_network
from trackstream.train.dmd.build import STAGE as DMD
from trackstream.train.dmd.build import dmd_networks, dmd_objective
from trackstream.train.ode_init.build import STAGE as ODE_INIT
from trackstream.train.ode_init.build import ode_init_objective
from trackstream.trainer.dist import Runtime, init_runtime, training_allocator
from trackstream.trainer.parallel import prepare_frozen

__all__ = ["REAL_CONFIGS", "TINY_CONFIGS", "STAGE_CONFIGS", "compose", "bench_dmd", "bench_ode_init", "main"]

REAL_CONFIGS = ("dmd_wan1.3b_480p", "ode_init_wan1.3b_480p", "dmd_wan2.2_5b_704p", "ode_init_wan2.2_5b_704p")
TINY_CONFIGS = ("tiny_dmd", "tiny_ode_init")
# the other stages' real recipes (not in the --real default): --configs names them
STAGE_CONFIGS = (
    "teacher_forcing_wan1.3b_480p",
    "consistency_wan1.3b_480p",
    "tiny_decoder_wan2.1_480p",
    "tiny_decoder_wan2.2_5b_704p",
)
PHASES = ("critic", "generator", "decoder", "discriminator")  # the table's rows per config, in this order


def compose(experiment: str, overrides: list[str] = ()):
    """The validated TrainConfig of ``experiment`` with Hydra ``overrides``."""
    from trackstream.train.recipes import compose_recipe

    return compose_recipe([f"experiment={experiment}", *overrides])


def bench_dmd(typed, runtime: Runtime, *, repeats: int, warmup: int, seed: int = 0) -> dict:
    st, device = typed.stage, runtime.device
    par = dataclasses.replace(typed.parallel, strategy="single")
    torch.manual_seed(seed)
    # the recipes' teachers: the 5B (ti2v) and the tiny one trained with latent frame 0 clean, the 1.3B not
    teacher, init = random_network(typed, clean_first_frame=first_chunk_given(st.causal))
    teacher = prepare_frozen(runtime, teacher, cfg=par, shard=True, init_fn=init)
    ratio = st.update_ratio
    generator, critic = dmd_networks(
        typed, runtime, random_network(typed)[0], random_network(typed)[0], parallel=par, init_fn=init
    )
    shape = pair_shapes(typed, generator.module)
    conditioner = None
    if st.rollout_horizons > 1:  # rollouts past the horizon: the recipe's codec (random) re-encodes window frames
        conditioner, shape = horizon_conditioner(typed, runtime), long_shapes(shape, st.rollout_horizons, st.causal)
    objective = dmd_objective(
        typed, runtime, generator.module, critic.module, teacher, null_text=empty_prompt(shape), conditioner=conditioner
    )
    raw = random_conditions(generator.module, typed, shape, device, torch.Generator().manual_seed(seed))
    prepare = timed(lambda: objective.prepare_batch(raw), device=device, repeats=1, warmup=0)
    batch = objective.prepare_batch(raw)
    out = {
        "critic": timed(updater(objective, critic, batch, runtime), device=device, repeats=repeats, warmup=warmup),
        "generator": timed(
            updater(objective, generator, batch, runtime), device=device, repeats=repeats, warmup=warmup
        ),
    }
    out["prepare_batch_s"] = prepare["seconds"]
    out["update_ratio"] = ratio
    # one loop step on average: the critic every step, the generator every ratio-th
    out["loop_step_s"] = out["critic"]["seconds"] + out["generator"]["seconds"] / ratio
    return {**out, **describe(typed, shape, generator.module)}


def bench_ode_init(typed, runtime: Runtime, *, repeats: int, warmup: int, seed: int = 0) -> dict:
    st, device = typed.stage, runtime.device
    par = dataclasses.replace(typed.parallel, strategy="single")
    K = typed.schedule.student_steps
    torch.manual_seed(seed)
    net, init = random_network(typed)
    trained = causal_student_network(typed, runtime, net, parallel=par, grad_sync="wrapper", init_fn=init)
    shape = pair_shapes(typed, trained.module)
    objective = ode_init_objective(typed, runtime, trained.module)
    gen = torch.Generator().manual_seed(seed)
    raw = random_conditions(trained.module, typed, shape, device, gen)
    B, F, C, h, w = (shape[k] for k in "BFChw")
    # the teacher's trajectory at the K + 1 grid points, stored in the pairs' dtype
    raw["trajectory"] = torch.randn(B, K + 1, C, F, h, w, generator=gen).to(device, DTYPES[st.ode_pairs.dtype])
    raw["track_ids"] = sample_track_ids(B, shape["N"], generator=gen).to(device)
    batch = objective.prepare_batch(raw)
    out = {
        "generator": timed(updater(objective, trained, batch, runtime), device=device, repeats=repeats, warmup=warmup)
    }
    out["loop_step_s"] = out["generator"]["seconds"]
    return {**out, **describe(typed, shape, trained.module)}


def run_config(
    name: str, overrides: list[str], *, repeats: int, warmup: int, runtime_cache: dict, device: str = "auto"
) -> dict:
    """One config's benchmark; out of memory is recorded (the rest of the run goes on)."""
    typed = compose(name, overrides)
    key = typed.trainer.precision
    if key not in runtime_cache:  # one Accelerator per process and precision
        runtime_cache[key] = init_runtime("single", precision=typed.trainer.precision, device=device)
    runtime = runtime_cache[key]
    benches = {DMD.name: bench_dmd, ODE_INIT.name: bench_ode_init, **STAGE_BENCHES}
    fn = benches.get(typed.stage.name)
    if fn is None:
        raise ValueError(
            f"--configs {name}: stage {typed.stage.name!r} has no step benchmark here ({', '.join(benches)}); "
            "the teacher's is trackstream bench-train"
        )
    device = runtime.device
    try:
        return {
            "config": name,
            "stage": typed.stage.name,
            "precision": runtime.precision,
            **fn(typed, runtime, repeats=repeats, warmup=warmup),
        }
    except torch.OutOfMemoryError as err:
        return {
            "config": name,
            "stage": typed.stage.name,
            "error": "out of memory on one GPU: " + str(err).split(".")[0],
            "gpu_memory_gib": torch.cuda.get_device_properties(device).total_memory / 2**30,
            "max_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30,
        }
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)


def table(results: list[dict]) -> str:
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["config"], "-", r["error"]])
            continue
        for phase in PHASES:
            if phase in r:
                p = r[phase]
                peak = "n/a" if p["peak_memory_bytes"] is None else f"{p['peak_memory_bytes'] / 2**30:.1f}"
                rows.append(
                    [
                        r["config"],
                        phase,
                        f"{p['seconds']:.3f}",
                        f"{p['seconds_min']:.3f}",
                        peak,
                        f"{r['loop_step_s']:.3f}",
                    ]
                )
    head = ["config", "update", "s / update", "min s", "peak GiB", "loop step s"]
    # a config that failed: its error runs on where its figures would be
    return "\n".join(markdown_table(head, rows, short_rows=True))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--configs",
        default=None,
        help=f"comma-separated experiments (default: {', '.join(TINY_CONFIGS)} "
        f"on CPU, {', '.join(REAL_CONFIGS)} on CUDA; also: {', '.join(STAGE_CONFIGS)}, "
        "tiny_teacher_forcing, tiny_consistency, tiny_decoder)",
    )
    ap.add_argument("--real", action="store_true", help="the four real DMD / ODE-init recipes (needs a GPU)")
    ap.add_argument("--steps", type=int, default=3, help="timed updates per phase")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=None, help="micro-batch size (default: the recipe's data.batch_size)")
    ap.add_argument("--override", action="append", default=[], help="a Hydra override for every config (repeatable)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", default="outputs/bench_distill.json")
    add_precision_args(ap)
    argv = sys.argv[1:] if argv is None else list(argv)  # what ran, as the JSON records it
    args = ap.parse_args(argv)
    training_allocator()  # before the first CUDA allocation: as `trackstream train` runs
    device, dtype = parsed_precision(ap, args, training=True)
    cuda = device.type == "cuda"
    if args.real and not cuda:
        ap.error("--real needs a CUDA GPU (the 1.3B / 5B recipes at 480p / 704p do not fit a CPU benchmark)")
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    names = args.configs.split(",") if args.configs else list(REAL_CONFIGS if args.real or cuda else TINY_CONFIGS)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = list(args.override) + ([f"data.batch_size={args.batch}"] if args.batch else [])
    if args.dtype != "auto":  # auto: the recipe's own trainer.precision (itself auto by default)
        overrides.append(f"trainer.precision={args.dtype}")
    runtimes: dict = {}
    results = []
    for name in names:
        r = run_config(
            name, overrides, repeats=args.steps, warmup=args.warmup, runtime_cache=runtimes, device=device.type
        )
        results.append(r)
        print(table([r]).split("\n", 2)[-1], flush=True)
    device = next(iter(runtimes.values())).device if runtimes else torch.device("cpu")
    print(table(results))
    result = {
        "meta": {**environment(device), "argv": argv, "overrides": overrides},
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
