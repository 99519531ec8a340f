"""The small world model's scaling probe: 2-3 teacher sizes x a few hundred steps in ONE device call,
held-out EPE ratio and PSNR against steps, to pick conf/model/small.yaml's size (docs/small-world.md).

    python -m lab.scaling_probe run --out $OUT --sizes 4x256,6x320,8x384 --steps 1500 \\
        --eval-every 500 --budget-min 9 [--set KEY=VALUE ...]
    python -m lab.scaling_probe plot --json docs/small_world/probe.json --dest docs/small_world

``run`` trains experiment=small_teacher at each size ("LAYERSxWIDTH": heads of 64, FFN 3 x width, as
conf/model/small.yaml) for ``--steps`` steps with the held-out evaluation every ``--eval-every`` steps
(eval.jsonl: EPE with / without tracks, their ratio, PSNR, SSIM on eval.periodic_clips clips at
make run's clip length), one size after the other, each given an equal share of the budget left and
stopped by the training loop's preemption signal when it runs out (lab/small_world.py's
``run_training``). The first size fits the codec; the others reuse it. Every size shares
``optim.decay_steps`` (the full recipe's), so a probe run is the first stretch of the run it would
become. ``probe.json`` (in ``--out``: what a device call brings back) holds each size's points,
parameter count, seconds per step and peak GPU memory; ``plot`` draws it on CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lab.small_world_chain import run_training
from lab.small_world_state import ChainError
from trackstream.eval.tables import markdown_table
from trackstream.pipeline.report import read_metrics

__all__ = ["parse_size", "size_overrides", "collect", "plot", "main"]

HEAD_DIM = 64  # conf/model/small.yaml's (6 heads of 64 at width 384)


def parse_size(text: str) -> tuple[int, int]:
    layers, sep, width = text.lower().partition("x")
    if not sep or not layers.isdigit() or not width.isdigit() or int(width) % HEAD_DIM or int(layers) < 1:
        raise ValueError(f"--sizes entry {text!r}: write LAYERSxWIDTH with WIDTH a multiple of {HEAD_DIM}, e.g. 8x384")
    return int(layers), int(width)


def size_overrides(text: str) -> list[str]:
    layers, width = parse_size(text)
    return [
        f"model.overrides.num_layers={layers}",
        f"model.overrides.dim={width}",
        f"model.overrides.ffn_dim={3 * width}",
        f"model.overrides.num_heads={width // HEAD_DIM}",
    ]


def _params(text: str, track_channels: int = 32) -> int:
    from trackstream.models.motion_wan import TEXT_ENCODER_DIMS, ModelConfig, build_motion_wan

    layers, width = parse_size(text)
    over = dict(num_layers=layers, dim=width, ffn_dim=3 * width, num_heads=width // HEAD_DIM, text_len=64)
    cfg = ModelConfig(track_channels=track_channels, overrides={**over, "patch_size": (1, 1, 1)})
    net = build_motion_wan(cfg, text_encoder_dim=TEXT_ENCODER_DIMS["minilm"], device="meta")
    return sum(p.numel() for p in net.parameters())


def collect(out: Path, sizes: list[str]) -> dict:
    """Each size's evaluation points (step, training minutes so far, figures) and step costs."""
    probe = {}
    for size in sizes:
        run = out / "runs" / size
        metrics = [r for r in read_metrics(run / "metrics.jsonl") if "perf/step_time_s" in r]
        minutes, total, last = {}, 0.0, 0
        for row in metrics:  # each logged mean step time covers the steps since the previous row
            step = int(row["step"])
            total += row["perf/step_time_s"] * max(0, step - last)
            last = step
            minutes[step] = total / 60
        points = []
        evals = read_metrics(run / "eval.jsonl")  # periodic; the final evaluation is eval.json at the last step
        if (run / "eval.json").is_file() and (run / "results.json").is_file():
            evals.append(
                {
                    "step": json.loads((run / "results.json").read_text())["step"],
                    **json.loads((run / "eval.json").read_text()),
                }
            )
        for row in evals:
            step = int(row["step"])
            near = min(minutes, key=lambda s: abs(s - step)) if minutes else None
            figures = {k: v for k, v in row.items() if k.startswith(("epe_", "psnr_", "ssim_")) and _number(v)}
            points.append(
                {"step": step, "minutes": minutes.get(near), "num_samples": row.get("num_samples"), **figures}
            )
        steady = [r["perf/step_time_s"] for r in metrics[len(metrics) // 4 :]]  # past the warm-up
        memory = [r["perf/max_memory_gib"] for r in metrics if "perf/max_memory_gib" in r]
        summary = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
        probe[size] = {
            "overrides": size_overrides(size),
            "params": _params(size),
            "steps": last,
            "status": summary.get("status"),
            "seconds_per_step": sum(steady) / len(steady) if steady else None,
            "max_memory_gib": max(memory) if memory else None,
            "first_losses": [r["train/loss"] for r in metrics[:5] if "train/loss" in r],
            "points": points,
        }
    return probe


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def run(out: Path, sizes: list[str], *, steps: int, eval_every: int, budget_s: float, extra: list[str]) -> dict:
    import torch

    t0 = time.time()
    out = Path(out).resolve()
    (out / "runs").mkdir(parents=True, exist_ok=True)
    codec = None
    for i, size in enumerate(sizes):
        share = (t0 + budget_s - time.time()) / (len(sizes) - i)
        overrides = [
            "experiment=small_teacher",
            *size_overrides(size),
            f"trainer.max_steps={steps}",
            f"trainer.sample_every={eval_every}",
            f"trainer.ckpt_every={steps}",
            "trainer.log_every=10",
            *([f"codec.checkpoint={codec}"] if codec else []),
            *extra,
        ]
        print(f"[probe] {size}: up to {steps} steps in {share:.0f} s", flush=True)
        status = run_training(
            out / "runs" / size, overrides, deadline=time.time() + share - 30, grace_s=25, log_file=out / "probe.log"
        )
        print(f"[probe] {size}: {status}", flush=True)
        fitted = out / "runs" / size / "codec" / "codec.pt"
        codec = codec or (str(fitted) if fitted.is_file() else None)
    probe = {
        "sizes": collect(out, sizes),
        "steps": steps,
        "eval_every": eval_every,
        "extra": extra,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    (out / "probe.json").write_text(json.dumps(probe, indent=1))
    print(f"[probe] wrote {out / 'probe.json'}", flush=True)
    return probe


PANELS = [
    ("epe_ratio_with_over_without", "EPE with / without tracks"),
    ("epe_with_tracks", "EPE with tracks (px)"),
    ("psnr_with_tracks", "PSNR frames 1.. (dB)"),
]


def plot(probe: dict, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dest.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6))
    for ax, (key, title) in zip(axes, PANELS):
        for size, rec in probe["sizes"].items():
            pts = [p for p in rec["points"] if key in p]
            if pts:
                ax.plot(
                    [p["step"] for p in pts], [p[key] for p in pts], "o-", label=f"{size} ({rec['params'] / 1e6:.1f}M)"
                )
        if "ratio" in key:
            ax.axhline(0.3, color="red", ls=":", label="target 0.3")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"teacher steps ({probe.get('device')})")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(dest / "probe.png", dpi=110)
    rows = []
    for size, rec in probe["sizes"].items():
        for p in rec["points"]:
            if "epe_with_tracks" not in p:
                continue
            rows.append(
                [
                    size,
                    f"{rec['params'] / 1e6:.1f}M",
                    f"{rec['seconds_per_step'] or float('nan'):.3f}",
                    f"{rec['max_memory_gib'] or float('nan'):.1f}",
                    p["step"],
                    f"{p['epe_with_tracks']:.2f} / {p.get('epe_without_tracks', float('nan')):.2f}",
                    f"{p.get('epe_ratio_with_over_without', float('nan')):.2f}",
                    f"{p.get('psnr_with_tracks', float('nan')):.2f}",
                ]
            )
    head = ["size", "params", "s/step", "peak GiB", "step", "EPE with / without", "ratio", "PSNR"]
    (dest / "probe.md").write_text("\n".join(markdown_table(head, rows)) + "\n")
    print(f"[probe] wrote {dest / 'probe.png'} and {dest / 'probe.md'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lab.scaling_probe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("command", choices=("run", "plot"))
    ap.add_argument("--out", type=Path, help="run: the folder (probe.json, probe.log, runs/)")
    ap.add_argument("--sizes", default="4x256,6x320,8x384", help="run: LAYERSxWIDTH,...")
    ap.add_argument("--steps", type=int, default=1500, help="run: teacher steps per size")
    ap.add_argument("--eval-every", type=int, default=500, help="run: steps between held-out evaluations")
    ap.add_argument("--budget-min", type=float, default=9.0, help="run: minutes for all sizes")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="run: an override for every size")
    ap.add_argument("--json", type=Path, help="plot: a probe.json")
    ap.add_argument("--dest", type=Path, default=Path("docs/small_world"), help="plot: where probe.png / probe.md go")
    args = ap.parse_args(argv)
    try:
        if args.command == "run":
            if args.out is None:
                raise ValueError("run needs --out DIR")
            sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
            for s in sizes:
                parse_size(s)
            if args.steps < 1 or args.eval_every < 1:
                raise ValueError(f"--steps {args.steps} / --eval-every {args.eval_every} must be >= 1")
            run(
                args.out,
                sizes,
                steps=args.steps,
                eval_every=args.eval_every,
                budget_s=args.budget_min * 60,
                extra=args.set,
            )
        else:
            if args.json is None or not args.json.is_file():
                raise ValueError(f"plot needs --json FILE (a probe.json); got {args.json}")
            plot(json.loads(args.json.read_text()), args.dest)
    except (ChainError, ValueError) as e:
        print(f"[probe] error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
