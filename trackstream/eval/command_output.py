"""What ``python -m trackstream.eval`` shows (``eval.command`` generates and scores): table.md (the table and its
footnote; with ``placements``, the section "Where the tracks are put"), the plots (a bar chart per metric, EPE per
frame, trajectory overlays of the first sample) and W&B. ``cfg`` here is the command's ``EvalCommandConfig``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trackstream.eval.quality import QUALITY_COLUMNS
from trackstream.eval.tables import markdown_table

__all__ = [
    "LOWER_IS_BETTER",
    "SPEED_COLUMNS",
    "slug",
    "results_table",
    "plot_results",
    "table_note",
    "placement_section",
    "log_wandb",
]

LOWER_IS_BETTER = {
    "epe": True,
    "psnr": False,
    "ssim": False,
    "lpips": True,
    "fid": True,
    "fvd": True,
    "proxy_fvd": True,
    "flow_epe": True,
}


def slug(row: str) -> str:
    """A row name as a file name: "dmd (with tracks)" -> "dmd_with_tracks"."""
    return row.replace(" (", "_").replace(")", "").replace(" ", "_")


def _speed_note(cfg) -> str:
    from trackstream.models.precision import precision_name

    device, dtype = cfg.generate.precision()
    return f"; frames/s of the generation (decoding included, the first video left out) on {device}, {precision_name(dtype)}"


SPEED_COLUMNS = {"frames_per_s": "frames/s ↑", "nfe": "NFE / video ↓"}  # on this run's device and dtype


def results_table(results: dict, metrics: list[str]) -> str:
    cols = [m for m in metrics if any(m in r for r in results.values())]
    cols += [c for c, _ in QUALITY_COLUMNS if any(c in r for r in results.values())]
    cols += [c for c in SPEED_COLUMNS if any(c in r for r in results.values())]
    names = [
        SPEED_COLUMNS.get(m) or dict(QUALITY_COLUMNS).get(m) or f"{m} {'↓' if LOWER_IS_BETTER[m] else '↑'}"
        for m in cols
    ]
    rows = [
        [
            row,
            *(
                f"{r[m] * (100 if m == 'lost_share' else 1):.4g}"
                if isinstance(r.get(m), (int, float)) and np.isfinite(r[m])
                else "–"
                for m in cols
            ),
        ]
        for row, r in results.items()
    ]
    return "\n".join(markdown_table(["row", *names], rows))


def plot_results(out: Path, results: dict, metrics: list[str], samples, rows: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trackstream.stream.visualize import draw_tracks

    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written = []
    names = list(results)
    for m in metrics:
        vals = [results[n].get(m, np.nan) for n in names]
        vals = [v if np.isfinite(v) else np.nan for v in vals]  # e.g. PSNR of the ground truth itself: inf
        if not np.isfinite(vals).any():
            continue
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(names), 3))
        ax.bar(range(len(names)), vals, color=["#888" if n in ("ground_truth", "frozen") else "#3a7" for n in names])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{m} ({'lower' if LOWER_IS_BETTER[m] else 'higher'} is better)")
        fig.tight_layout()
        fig.savefig(plots / f"{m}.png", dpi=110)
        plt.close(fig)
        written.append(str(plots / f"{m}.png"))
    if any("epe_per_frame" in r for r in results.values()):
        fig, ax = plt.subplots(figsize=(6, 3))
        for n, r in results.items():
            if "epe_per_frame" in r:
                ax.plot(r["epe_per_frame"], label=n)
        ax.set_xlabel("frame")
        ax.set_ylabel("EPE (px)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plots / "epe_per_frame.png", dpi=110)
        plt.close(fig)
        written.append(str(plots / "epe_per_frame.png"))
    s = samples[0]  # trajectory overlays: the input tracks drawn on each row's video of the first sample
    import cv2

    for n, videos in rows.items():
        frames = draw_tracks(videos[s.id], s.tracks, s.visibility)
        strip = np.concatenate(list(frames[:: max(1, len(frames) // 6)]), axis=1)
        path = plots / f"overlay_{slug(n)}.png"
        cv2.imwrite(str(path), strip[:, :, ::-1])
        written.append(str(path))
    return written


def table_note(cfg, samples, speeds: dict) -> str:
    """table.md's footnote: the benchmark, the tracker, the frame size and the columns' protocols."""
    return (
        f"\n\n{len(samples)} samples of benchmark `{cfg.benchmark.name}`; EPE by `{cfg.tracker.name}` (px at "
        f"{samples[0].frames.shape[2]}x{samples[0].frames.shape[1]})"
        + (
            "; no-hold EPE: the same tracking with lost points not held (over the frozen first frame's, by the "
            "same tracker); late: the last 8 frames against the ground truth (trackstream/eval/quality.py)"
            if "epe" in cfg.metrics
            else ""
        )
        + ("; proxy_fvd = Fréchet distance on the run's codec features, not FVD" if "proxy_fvd" in cfg.metrics else "")
        + (_speed_note(cfg) if speeds else "")
    )


def placement_section(figures: dict | None, cfg) -> str:
    """table.md's section "Where the tracks are put": the placement table of ``eval.placements`` (``figures``:
    ``evaluate_placements``' as the command returns them; None: no network run) and what it measured."""
    head = "\n\n## Where the tracks are put\n\n"
    if figures is None:
        return head + (
            f"`placements={list(cfg.placements)}`: no run is a network (a folder of videos cannot be given new "
            "input tracks), so nothing was generated.\n"
        )
    from trackstream.eval.placements import placement_table

    tokens = sorted(set(figures["token_px"].values()))
    left = figures.get("left_out") or []
    note = (
        f"Each network run was given each of the {figures['clips']} clips once per placement of its input tracks "
        f"({', '.join(f'`{p}`' for p in figures['placements'])}; trackstream/data/placements.py) and every video "
        f"of a clip was scored on the same {figures['scoring_points']} points (trackstream/eval/placements.py): "
        f"EPE by `{cfg.tracker.name}`, over the frozen first frame's on those points (1 = no better than not "
        "moving) and over the run's own `lattice` row; the quality columns of trackstream/eval/quality.py; "
        f"blockiness on the {' / '.join(map(str, tokens))}-px token grid over the ground truth's; the share of "
        "each sprite kept in the last frames (clips with sprites). The floors are scored on the same points."
        + (f" Left out (folders of videos, which cannot be given new tracks): {', '.join(left)}." if left else "")
    )
    return head + note + "\n\n" + placement_table(figures) + "\n"


def log_wandb(cfg, summary: dict, out: Path) -> None:
    """The table (with the quality columns some row has) and the plots to W&B."""
    import os

    import wandb

    from trackstream.trainer.wandb_run import resolve_mode

    results = summary["results"]
    wb = wandb.init(
        project=cfg.wandb.get("project"),
        mode=resolve_mode(cfg.wandb.get("mode")),
        group=cfg.wandb.get("group") or os.environ.get("WANDB_RUN_GROUP") or None,
        job_type="eval",
        config=summary["config"],
        dir=str(out),
    )
    shown = [*cfg.metrics, *[c for c, _ in QUALITY_COLUMNS if any(c in r for r in results.values())]]
    wb.log(
        {
            "eval/table": wandb.Table(
                columns=["row", *shown], data=[[r, *[results[r].get(m) for m in shown]] for r in results]
            ),
            **{f"eval/{Path(p).stem}": wandb.Image(p) for p in summary["plots"]},
            **_placement_wandb(summary.get("placements")),
        }
    )
    wb.finish()


def _placement_wandb(figures: dict | None) -> dict:
    """The placement figures as one W&B table (a row per run and placement, then the floors), or nothing."""
    if not figures:
        return {}
    import wandb

    cols = ["epe", "epe_over_frozen", "no_hold_ratio", "late_brightness_gap", "late_texture_ratio"]
    cols += ["blockiness_ratio", "object_kept"]
    rows = [[m, p, *[r[c] for c in cols]] for m, per in figures["models"].items() for p, r in per.items()]
    rows += [[f, "", *[r[c] for c in cols]] for f, r in figures["floors"].items()]
    return {"eval/placements": wandb.Table(columns=["video", "placement", *cols], data=rows)}
