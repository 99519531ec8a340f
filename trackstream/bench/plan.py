"""``trackstream plan``: the memory plan of a training recipe on a parallel layout, per GPU.

    trackstream plan experiment=teacher_wan1.3b_480p                       # 1 GPU, is it an H100 job?
    trackstream plan --gpus 8 --gpu h200 experiment=dmd_wan2.2_5b_704p parallel.sequence_parallel=1
    trackstream plan --json experiment=teacher_wan1.3b_480p model.lora.rank=64
    trackstream plan --table --gpus 1,8,32                                 # every real recipe (docs)

The arguments after the options are Hydra overrides composed onto conf/train.yaml as the training app
composes them; nothing is loaded: the networks are built on ``meta`` and counted. The plan lists the
bytes per GPU of parameters, gradients, optimizer state, EMA, each frozen network, activations, the
rolling KV cache and an overhead allowance, says whether that fits the GPU, and when it does not, which
changes would make it fit. Step times come from the model FLOPs and the MFU measured on an H200
(docs/bench/h200/train.json). Every figure printed is computed; the byte model and its one fitted
constant are in ``bench/plan_model.py``; what each stage holds and computes is its record's ``cost`` (train/stage.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trackstream.bench.plan_model import (
    GPUS,
    GPUS_PER_NODE,
    OVERHEAD_GIB,
    PREEMPT_MARGIN_S,
    WRITE_GBS_PER_NODE,
    gpu_gib,
    gpu_peak_tflops,
)
from trackstream.bench.plan_stages import GIB, Plan, make_plan
from trackstream.eval.tables import markdown_table
from trackstream.train.recipes import compose_recipe
from trackstream.train.registry import STAGES

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "conf" / "experiment"


def real_recipes() -> list[str]:
    """The real recipes: every conf/experiment/*_wan*.yaml, read from the folder each time."""
    return sorted(p.stem for p in EXPERIMENTS.glob("*_wan*.yaml"))


def plan_of(overrides: list[str], *, gpus: int, gpu: str, extra: list[str] = ()) -> Plan:
    """The plan of ``overrides`` (+ ``extra``) on ``gpus`` GPUs of kind ``gpu``."""
    return make_plan(compose_recipe([*overrides, *extra]), gpus=gpus, gpu=gpu, overrides=[*overrides, *extra])


def _steps(plan: Plan) -> list[tuple[str, list[str], int | None]]:
    """Candidate changes, cheapest first: (label, overrides, GPU count or None to keep it)."""
    cfg, steps = plan.cfg, []
    if not cfg.parallel.activation_checkpointing:
        steps.append(("parallel.activation_checkpointing=true", ["parallel.activation_checkpointing=true"], None))
    if cfg.parallel.strategy != "fsdp" and plan.gpus > 1:
        steps.append(("parallel=fsdp", ["parallel=fsdp"], None))
    fsdp = ["parallel=fsdp"] if cfg.parallel.strategy == "single" else []
    steps += [
        (f"--gpus {n}" + (" parallel=fsdp" if fsdp else ""), fsdp, n) for n in (2, 4, 8, 16, 32, 64) if n > plan.gpus
    ]
    record = STAGES[cfg.stage.name]
    if record.sequence_parallel and cfg.parallel.sequence_parallel == 1 and plan.facts.heads:
        steps += [(f"parallel.sequence_parallel={k}", [f"parallel.sequence_parallel={k}"], None) for k in (2, 4, 8)]
    if not cfg.model.lora.enabled and record.lora:  # the RL stage trains without adapters
        steps.append(("model.lora.rank=64", ["model.lora.rank=64"], None))
    return steps


def suggestions(plan: Plan, overrides: list[str]) -> list[dict]:
    """Changes that make a plan fit: each change that fits on its own (the fewest GPUs only); when none
    does, the changes accumulated cheapest first until it fits (steps that gain nothing are skipped);
    then a GPU kind with enough memory for the plan as it is. Every candidate is planned in full."""

    def attempt(extra: list[str], gpus: int) -> Plan | None:
        try:
            return plan_of(overrides, gpus=gpus, gpu=plan.gpu, extra=extra)
        except ValueError:  # the change does not apply here (a global batch the GPUs do not divide, ...)
            return None

    steps, out = _steps(plan), []
    for label, extra, gpus in steps:
        if label.startswith("--gpus") and any(o["change"].startswith("--gpus") for o in out):
            continue
        p = attempt(extra, gpus or plan.gpus)
        if p is not None and p.fits:
            out.append({"change": label, "total_gib": round(p.total / GIB, 2), "fits": True})
    if not out:
        extra, gpus, labels, count, best = [], plan.gpus, [], "", plan.total
        for label, more, n in steps:
            p = attempt(extra + more, n or gpus)
            if p is None or p.total > 0.97 * best:
                continue
            extra, gpus, best = extra + more, n or gpus, p.total
            if n:
                count = label  # the GPU count replaces the previous one
            else:
                labels.append(label)
            change = " + ".join(labels + ([count] if count else []))
            out.append({"change": change, "total_gib": round(p.total / GIB, 2), "fits": p.fits})
            if p.fits:
                break
    bigger = [g for g in sorted(GPUS, key=gpu_gib) if gpu_gib(g) >= plan.total / GIB]
    if bigger:  # the same layout on a GPU with more memory
        out.append({"change": f"--gpu {bigger[0]}", "total_gib": round(plan.total / GIB, 2), "fits": True})
    return out


def render(plan: Plan, fixes: list[dict] | None) -> str:
    lines = [
        f"memory plan (computed) of {plan.name}: stage {plan.cfg.stage.name}, {plan.layout}, "
        f"{plan.samples} sample(s) x {plan.tokens:,} tokens per micro-batch, {plan.tokens_per_gpu:,.0f} tokens per GPU",
        "",
    ]
    rows = [
        [row["component"], f"{row['count']:,}" if row.get("count") else "", f"{row['bytes'] / GIB:.2f}"]
        for row in plan.rows
    ]
    rows.append(["**total**", None, f"**{plan.total / GIB:.2f}**"])  # a total has no parameter count
    lines += markdown_table(["component", "parameters", "GiB per GPU"], rows, align="lrr")
    cap = gpu_gib(plan.gpu)
    verdict = "fits" if plan.fits else "does NOT fit"
    lines += ["", f"{verdict} on {plan.gpu} ({GPUS[plan.gpu]:g} GB = {cap:.1f} GiB): {plan.total / GIB:.1f} GiB"]
    if plan.cpu:
        lines.append(f"optimizer state offloaded to CPU memory: {plan.cpu / GIB:.1f} GiB per process")
    if plan.step_s is not None:
        lines.append(
            f"step time (computed): {plan.step_s:.1f} s per optimizer update ({plan.step_flops / 1e15:.1f} PFLOP at "
            f"MFU {plan.mfu:.3f} measured on an H200, {gpu_peak_tflops(plan.gpu):g} TFLOP/s peak x {plan.gpus} GPU(s))"
        )
    lead = plan.preemption_lead
    if lead is not None:
        lines.append(
            f"preemption warning (computed): --signal lead >= {lead} s: the step in flight ({plan.step_s:.0f} s), "
            f"writing the {plan.checkpoint_bytes / GIB:.1f} GiB checkpoint at {plan.write_gbs:g} GB/s per node "
            f"(--write-gbs) and {PREEMPT_MARGIN_S:.0f} s to agree and requeue; on Slurm SIGNAL_LEAD={lead} "
            "slurm/submit.sh ... (slurm/README.md)"
        )
    for note in plan.notes:
        lines.append(f"note: {note}")
    if fixes:
        lines += ["", "changes that would make it fit (computed; accumulated with +):"]
        lines += [
            f"  {f['change']:<44} -> {f['total_gib']:.1f} GiB{'' if f['fits'] else ' (still too much)'}" for f in fixes
        ]
    return "\n".join(lines)


def table(gpu_counts: list[int], gpu: str) -> str:
    """Every real recipe x GPU counts: total GiB per GPU, the fit on ``gpu`` and the seconds per optimizer update
    (markdown)."""
    counts = [f"{n} GPU{'s' if n > 1 else ''}" for n in gpu_counts]
    rows, leads = [], []
    for name in real_recipes():
        cells, stage, lead = [], "", []
        overrides = [f"experiment={name}"]
        cfg = compose_recipe(overrides)  # once per recipe: composing takes longer than planning
        for n in gpu_counts:
            try:
                p = make_plan(cfg, gpus=n, gpu=gpu, overrides=overrides)
            except ValueError as e:
                cells.append(f"n/a ({str(e).split(':')[0]})")
                lead.append("n/a")  # each lead stays under its GPU count
                continue
            stage = p.cfg.stage.name
            time = f" / {p.step_s:,.0f} s" if p.step_s else ""
            cells.append(f"{p.total / GIB:.1f}{'' if p.fits else ' !'}{time}")
            lead.append(f"{p.preemption_lead} s" if p.preemption_lead else "n/a")
            ckpt = p.checkpoint_bytes
        rows.append([name, stage, *cells])
        if stage and any(c != "n/a" for c in lead):
            leads.append([name, f"{ckpt / GIB:,.0f}", *lead])
    measured = [
        [
            f"{row['config']} (measured)",
            f"{row['measured_gib']:.2f}",
            f"{row['computed_gib']:.2f}",
            f"{row['measured_step_s']:.2f}" if row["measured_step_s"] else "n/a",
        ]
        for row in calibration()
    ]
    right = "r" * len(gpu_counts)  # figures right-aligned
    lines = [
        f"GiB per GPU on {gpu} ({gpu_gib(gpu):.1f} GiB) / seconds per optimizer update at the recipe's global batch, "
        "recipe layout (parallel as the recipe sets it); computed unless marked measured; `!` = does not fit.",
        "",
        *markdown_table(["recipe", "stage", *counts], rows, align="ll" + right),
        "",
        "Measured (docs/bench/h200/train.json, one teacher step, batch 1, 1 H200, no frozen encoders, allocator peak):",
        "",
        *markdown_table(
            ["configuration", "measured GiB", "computed GiB", "measured step (s per sample)"], measured, align="lrrr"
        ),
        "",
        "Computed step times use the MFU these two steps measured (the mean of both for flavors without a "
        "measurement), so they are the measured steps scaled by FLOPs, not independent figures.",
        "",
        f"Preemption warning (the `--signal` lead, `SIGNAL_LEAD` in slurm/): the step in flight on {gpu} + the "
        f"checkpoint (whole job) written at {WRITE_GBS_PER_NODE:g} GB/s per node of {GPUS_PER_NODE} GPUs (an assumed "
        f"shared file system rate) + {PREEMPT_MARGIN_S:.0f} s, rounded up to 30 s, at least 60 s:",
        "",
        *markdown_table(["recipe", "checkpoint GiB", *counts], leads, align="lr" + right),
    ]
    return "\n".join(lines)


def calibration() -> list[dict]:
    """The plan of each teacher step measured in docs/bench/h200/train.json, set up as that bench runs it
    (``bench/train.py``: one GPU, batch 1, bf16 autocast over fp32 master weights, AdamW, EMA, activation
    checkpointing, no codec / text / image encoder loaded), against the measured allocator peak."""
    measured = json.loads((ROOT / "docs" / "bench" / "h200" / "train.json").read_text())
    rows = []
    for m in measured:
        if "max_memory_gib" not in m:
            continue
        bench = [
            f"experiment={m['config']}",
            "parallel=single",
            "parallel.activation_checkpointing=true",
            "trainer.global_batch=null",
            "trainer.grad_accum=1",
            "ema.enabled=true",
            f"data.batch_size={m['batch']}",
        ]
        p = make_plan(compose_recipe(bench), gpus=1, gpu="h200", overrides=bench, frozen=False)
        computed = p.total / GIB - OVERHEAD_GIB  # the allocator's peak leaves the overhead out
        rows.append(
            {
                "config": m["config"],
                "measured_gib": m["max_memory_gib"],
                "computed_gib": computed,
                "measured_step_s": m.get("step_time_s"),
            }
        )
    return rows


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="trackstream plan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--gpus", default=None, help="number of GPUs (processes); with --table a list, e.g. 1,8,32")
    ap.add_argument("--gpu", default="h100", help=f"GPU kind: one of {', '.join(GPUS)} (default h100)")
    ap.add_argument("--json", action="store_true", help="print the plan as JSON")
    ap.add_argument("--table", action="store_true", help="a markdown table of every real recipe x --gpus")
    ap.add_argument(
        "--write-gbs",
        type=float,
        default=WRITE_GBS_PER_NODE,
        help=f"checkpoint write rate per node in GB/s, for the preemption warning (default {WRITE_GBS_PER_NODE:g})",
    )
    args, overrides = ap.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        _error(
            f"unknown option {bad[0]}: the options are --gpus, --gpu, --json, --table, --write-gbs; the rest are key=value overrides"
        )
    if not args.write_gbs > 0:
        _error(f"--write-gbs {args.write_gbs:g}: give the checkpoint write rate per node in GB/s, > 0 (e.g. 1)")
    if args.gpu not in GPUS:
        _error(f"--gpu {args.gpu!r} is not a GPU this plan knows: choose one of {', '.join(GPUS)}")
    try:
        counts = [int(n) for n in (args.gpus or ("1,8,32" if args.table else "1")).split(",")]
    except ValueError:
        _error(f"--gpus {args.gpus!r} must be a whole number (with --table: a comma-separated list, e.g. 1,8,32)")
    if any(n < 1 for n in counts) or (len(counts) > 1 and not args.table):
        _error(f"--gpus {args.gpus!r}: give one number >= 1 (a list only with --table)")
    try:
        if args.table:
            print(table(counts, args.gpu))
            return
        plan = plan_of(overrides, gpus=counts[0], gpu=args.gpu)
        plan.write_gbs = args.write_gbs
        fixes = None if plan.fits else suggestions(plan, overrides)
    except ValueError as e:
        _error(str(e).splitlines()[0])
    if args.json:
        print(json.dumps({**plan.as_dict(), "fixes": fixes}, indent=2))
    else:
        print(render(plan, fixes))


if __name__ == "__main__":
    main()
