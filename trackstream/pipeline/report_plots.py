"""The plots of the end-to-end report (trackstream/pipeline/report.py): epe.png, drift.png, latency.png,
training.png (matplotlib, Agg backend), and the small figure helpers the report shares."""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["write_plots", "curve_keys", "finite", "get_path", "RL_REWARD"]


def get_path(d: dict, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def finite(*xs) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in xs)


RL_REWARD = "train/rl/reward"  # the RL stage's mean reward of each round's rollouts (train/rl/objective.py)


def curve_keys(rows: list[dict]) -> list[str]:
    """The curves of one stage: its per-network losses (else its loss), and the RL stage's mean reward."""
    keys = sorted(
        {k for r in rows for k in r if k.startswith("train/loss/")}
        or ({"train/loss"} if any("train/loss" in r for r in rows) else set())
    )
    return keys + ([RL_REWARD] if any(RL_REWARD in r for r in rows) else [])


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _short(label: str) -> str:  # "student after DMD" -> "DMD", "teacher (joint guidance)" -> "teacher"
    return label.split(" (")[0].replace("student after ", "")


def _epe_plot(plt, run_dir: Path, f: dict, models: tuple) -> bool:
    rows = [
        (_short(label), f.get(f"{tag}_epe_with_tracks"), f.get(f"{tag}_epe_without_tracks")) for tag, label in models
    ]
    rows = [r for r in rows if finite(r[1])]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r[1] for r in rows], 0.4, label="with tracks")
    ax.bar([x + 0.2 for x in xs], [r[2] if finite(r[2]) else 0 for r in rows], 0.4, label="without tracks")
    lines = [  # the floors (eval.floors)
        (("floors", "epe_frozen_frame"), "frozen first frame", "k", "--"),
        (("floors", "epe_ground_truth"), "tracker on ground truth", "k", ":"),
        (("floors", "epe_codec_round_trip"), "ground truth through the codec", "tab:green", "-."),
        (("floors", "epe_oracle_copier"), "oracle copier through the codec", "tab:purple", (0, (5, 1))),
    ]
    for key, label, colour, ls in lines:
        v = get_path(f, *key) if isinstance(key, tuple) else f.get(key)
        if finite(v):
            ax.axhline(v, color=colour, ls=ls, lw=1, label=f"{label} ({v:.2f})")
    ax.set_xticks(list(xs), [r[0] for r in rows])
    ax.set_ylabel("EPE (px, lower is better)")
    ax.set_title(f"held-out clips: {f.get('num_heldout', '?')}", fontsize=9)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(plt, fig, run_dir / "epe.png")
    return True


def _drift_plot(plt, run_dir: Path, f: dict) -> bool:
    drift = f.get("drift") or {}
    if not drift:
        return False
    keys = [
        ("latent_err_rel", "latent error vs ground truth / unrelated video's"),
        ("psnr", "PSNR vs ground truth (dB)"),
        ("latent_rms", "latent RMS"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    for ax, (k, label) in zip(axes, keys):
        for tag, d in drift.items():
            curve = get_path(d, "per_chunk", k)
            if curve:
                ax.plot(range(1, len(curve) + 1), curve, label=tag.replace("_", " "))
        if finite(f.get("training_horizon_chunks")):  # the end of the training horizon
            ax.axvline(f["training_horizon_chunks"] + 0.5, color="k", ls=":", lw=1)
        if k == "latent_err_rel":  # 1: the error of an unrelated video from the ground truth's distribution
            ax.axhline(1.0, color="r", ls="--", lw=1)
        ax.set_xlabel("chunk")
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=7)
    _save(plt, fig, run_dir / "drift.png")
    return True


def _latency_plot(plt, run_dir: Path, f: dict) -> bool:
    lat = get_path(f, "latency", "per_chunk_seconds")
    if not lat:
        return False
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(len(lat)), [1e3 * s for s in lat], marker=".")
    ax.set_xlabel("chunk")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    _save(plt, fig, run_dir / "latency.png")
    return True


def _training_plot(plt, run_dir: Path, metrics: dict[str, list[dict]]) -> bool:
    curves = [(stage, key) for stage, rows in metrics.items() for key in curve_keys(rows)]
    if not curves:
        return False
    fig, axes = plt.subplots(1, len(curves), figsize=(3.4 * len(curves), 3), squeeze=False)
    for ax, (stage, key) in zip(axes[0], curves):
        pts = [(r["step"], r[key]) for r in metrics[stage] if key in r and finite(r[key])]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1)
        ax.set_title(f"{stage}: {key.split('/')[-1]}", fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylabel("mean reward of a round" if key == RL_REWARD else "loss")
        if stage.startswith("teacher") and pts and min(p[1] for p in pts) > 0:
            ax.set_yscale("log")
    _save(plt, fig, run_dir / "training.png")
    return True


def write_plots(run_dir: Path, f: dict, metrics: dict[str, list[dict]], *, models: tuple) -> list[str]:
    """The PNGs next to report.md (the list in report.py's docstring); returns the names written.
    ``models``: (figure prefix, label) of the generative models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = [
        name
        for name, drawn in (
            ("epe.png", _epe_plot(plt, run_dir, f, models)),
            ("drift.png", _drift_plot(plt, run_dir, f)),
            ("latency.png", _latency_plot(plt, run_dir, f)),
            ("training.png", _training_plot(plt, run_dir, metrics)),
        )
        if drawn
    ]
    return made
