"""The tiny codec's floor against its fit length and the world's texture scale.

    bash lab/codec_floor_fit.sh RUNS SCALE STEPS...      # fits (one process per call, one thread)
    python lab/codec_floor.py --runs RUNS --out docs/codec_floor [--samples 16]

Each fit is the release teacher's own codec fit (``experiment=tiny_teacher_release``, its world with
``data.world.texture_scale=SCALE`` and ``codec.fit.steps=STEPS``; the cosine schedule spans the STEPS, so
every length is its own run). Each codec is scored on 16 held-out clips of its world at make run's
length (25 frames) by ``trackstream.eval.floors``: ground truth, codec round trip, the pixel-space oracle
copier through the codec and the frozen frame, with where the tracker loses points. Writes
``floor.json`` and ``floor.png`` (round-trip EPE / frozen EPE against fit steps, one line per scale).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from trackstream.data.clips import DataConfig, heldout_clips
from trackstream.eval.floors import floor_figures
from trackstream.models.codecs import build_codec

EVAL_FRAMES = 25


def fit_seconds(run: Path) -> float | None:
    rows = [json.loads(x) for x in (run / "codec" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    t = [r["perf/step_time_s"] for r in rows if "perf/step_time_s" in r]
    every = rows[1]["step"] - rows[0]["step"] if len(rows) > 1 else 1
    return float(np.sum(t) * every) if t else None  # logged every `every` steps: an estimate


def score(run: Path, samples: int) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=True)
    data = DataConfig(**{**cfg["data"], "eval_samples": samples, "num_frames": EVAL_FRAMES})
    codec = build_codec(cfg["codec"]["name"], checkpoint=str(run / "codec" / "codec.pt")).eval()
    fig = floor_figures(heldout_clips(data).clips, codec, num_tracks=cfg["eval"]["num_tracks"])
    return {
        "texture_scale": cfg["data"]["world"]["texture_scale"],
        "fit_steps": cfg["codec"]["fit"]["steps"],
        "fit_seconds_1_thread": fit_seconds(run),
        **fig,
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for s in sorted({r["texture_scale"] for r in rows}):
        rs = sorted((r for r in rows if r["texture_scale"] == s), key=lambda r: r["fit_steps"])
        x = [r["fit_steps"] for r in rs]
        ratio = [r["epe_codec_round_trip"] / r["epe_frozen_frame"] for r in rs]
        oracle = [r["epe_oracle_copier"] / r["epe_frozen_frame"] for r in rs]
        (line,) = axes[0].plot(x, ratio, "o-", label=f"texture scale {s:g}: round trip")
        axes[0].plot(x, oracle, "s--", color=line.get_color(), alpha=0.6, label=f"scale {s:g}: oracle copier")
        axes[1].plot(x, [r["psnr_codec_round_trip"] for r in rs], "o-", label=f"scale {s:g}")
        axes[2].plot(x, [r["lost_at_group_start_codec_round_trip"] for r in rs], "o-", color=line.get_color())
        axes[2].plot(x, [r["lost_inside_group_codec_round_trip"] for r in rs], "x:", color=line.get_color())
    axes[0].axhline(0.15, color="k", lw=0.8, ls=":", label="target 0.15")
    axes[0].set(
        xscale="log", xlabel="codec fit steps", ylabel="EPE / frozen-frame EPE", title="codec floor (EPE ratio)"
    )
    axes[1].set(xscale="log", xlabel="codec fit steps", ylabel="dB", title="round-trip PSNR")
    axes[2].set(
        xscale="log", xlabel="codec fit steps", ylabel="share lost", title="round trip: points lost (o start, x inside)"
    )
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, required=True, help="folder of s<SCALE>_n<STEPS> fit runs")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--samples", type=int, default=16)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "floor.json"
    rows = json.loads(cache.read_text())["rows"] if cache.is_file() else []
    done = {(r["texture_scale"], r["fit_steps"]) for r in rows}
    for run in sorted(args.runs.iterdir()):
        m = re.fullmatch(r"s([\d.]+)_n(\d+)", run.name)
        if not m or not (run / "codec" / "codec.pt").is_file() or (float(m[1]), int(m[2])) in done:
            continue
        row = score(run, args.samples)
        rows.append(row)
        print(
            f"scale {row['texture_scale']:g} steps {row['fit_steps']}: round trip {row['epe_codec_round_trip']:.2f} px "
            f"({row['psnr_codec_round_trip']:.1f} dB), oracle {row['epe_oracle_copier']:.2f}, "
            f"frozen {row['epe_frozen_frame']:.2f}, gt {row['epe_ground_truth']:.2f}",
            flush=True,
        )
        cache.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1))
    plot(rows, args.out / "floor.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
