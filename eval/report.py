"""The end-to-end report: ``report.json``, ``report.md`` and its plots, from the figures of one run.

``targets(figures)`` checks the issue-7 acceptance criteria against the measured figures and
says, per criterion, the value, the threshold and whether it is met; nothing is hard-coded and
a missed target is reported as missed. ``write_report`` renders the markdown summary with
matplotlib plots (Agg backend, PNG files next to the report):
  epe.png        EPE with / without tracks, teacher vs students (ODE init, DMD)
  drift.png      per-chunk drift measures of the long rollout, with and without the sink
  latency.png    per-chunk latency over the long rollout
  training.png   training losses of the ODE-init and DMD stages (their metrics.jsonl)
  samples.png    (written by stream.evaluate) held-out frames: ground truth, teacher, students
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["targets", "write_report", "read_metrics"]

# (key, description, threshold, comparison) - thresholds of the issue
NFE_RATIO_MIN = 20.0
EPE_RATIO_TEACHER_MAX = 1.3
EPE_RATIO_WITHOUT_MAX = 0.5
LATENCY_RATIO_MAX = 1.05
# "Drift stays bounded": over the last chunks of the 10x rollout the latent error against ground
# truth stays at most that of an UNRELATED video from the ground truth's distribution
# (stream/evaluate.py: latent_err_rel <= 1). Late / early error is reported too, but is no bound
# on a panning world: chunks beyond the horizon show canvas no model can know from frame 0.
DRIFT_REL_MAX = 1.0


def _get(d: dict, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def targets(f: dict) -> dict:
    """Each criterion: {value, threshold, met, role, note}; ``met`` is None when a figure is missing.
    ``role`` is "target" (an issue-7 acceptance criterion) or "ablation" (reported for comparison:
    the rollout without the attention sink, which MotionStream shows drifting)."""
    out: dict[str, dict] = {}

    def add(name, value, threshold, ok, note, role="target"):
        met = bool(ok) if _finite(value) else None
        out[name] = {"value": value, "threshold": threshold, "met": met, "role": role, "note": note}

    t_with = f.get("teacher_epe_with_tracks")
    s_with, s_without = f.get("student_epe_with_tracks"), f.get("student_epe_without_tracks")
    r = s_with / t_with if _finite(s_with) and _finite(t_with) and t_with > 0 else float("nan")
    add("student_vs_teacher_epe", r, EPE_RATIO_TEACHER_MAX, r <= EPE_RATIO_TEACHER_MAX,
        "student EPE with tracks / teacher EPE with tracks")
    n_t, n_s = f.get("teacher_nfe_per_video"), f.get("student_nfe_per_video")
    r = n_t / n_s if _finite(n_t) and _finite(n_s) and n_s > 0 else float("nan")
    add("nfe_reduction", r, NFE_RATIO_MIN, r >= NFE_RATIO_MIN,
        "teacher NFE / student NFE per video (student calls weighted by the share of frames they denoise)")
    r = s_with / s_without if _finite(s_with) and _finite(s_without) and s_without > 0 else float("nan")
    add("student_with_over_without", r, EPE_RATIO_WITHOUT_MAX, r <= EPE_RATIO_WITHOUT_MAX,
        "student EPE with tracks / without tracks")
    lat = f.get("latency_ratio_last_over_early")
    add("latency_flat", lat, LATENCY_RATIO_MAX, _finite(lat) and lat <= LATENCY_RATIO_MAX,
        "per-chunk latency, last chunk / early chunk of the long rollout (interleaved re-timing, minima)")
    for tag in ("with_sink", "without_sink"):
        err = _get(f, "drift", tag, "summary", "latent_err_rel", "late")
        add(f"drift_bounded_{tag}", err, DRIFT_REL_MAX, _finite(err) and err <= DRIFT_REL_MAX,
            f"long rollout ({tag.replace('_', ' ')}): latent error vs ground truth over the last chunks, "
            "relative to an unrelated in-distribution video (2 x ground-truth latent variance)",
            role="target" if tag == "with_sink" else "ablation")
    return out


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plots(run_dir: Path, f: dict, metrics: dict[str, list[dict]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    # EPE bars
    rows = [("teacher", f.get("teacher_epe_with_tracks"), f.get("teacher_epe_without_tracks")),
            ("ODE init", f.get("ode_init_epe_with_tracks"), f.get("ode_init_epe_without_tracks")),
            ("DMD student", f.get("student_epe_with_tracks"), f.get("student_epe_without_tracks"))]
    rows = [r for r in rows if _finite(r[1])]
    if rows:
        fig, ax = plt.subplots(figsize=(5, 3))
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [r[1] for r in rows], 0.4, label="with tracks")
        ax.bar([x + 0.2 for x in xs], [r[2] if _finite(r[2]) else 0 for r in rows], 0.4, label="without tracks")
        if _finite(f.get("epe_ground_truth_video")):
            ax.axhline(f["epe_ground_truth_video"], color="k", ls=":", lw=1, label="tracker on ground truth")
        ax.set_xticks(list(xs), [r[0] for r in rows])
        ax.set_ylabel("EPE (px)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(run_dir / "epe.png", dpi=120)
        plt.close(fig)
        made.append("epe.png")
    # drift curves
    drift = f.get("drift") or {}
    if drift:
        keys = [("latent_err_rel", "latent error vs ground truth / unrelated video's"),
                ("psnr", "PSNR vs ground truth (dB)"), ("latent_rms", "latent RMS")]
        fig, axes = plt.subplots(1, 3, figsize=(11, 3))
        for ax, (k, label) in zip(axes, keys):
            for tag, d in drift.items():
                curve = _get(d, "per_chunk", k)
                if curve:
                    ax.plot(range(1, len(curve) + 1), curve, label=tag.replace("_", " "))
            if _finite(f.get("training_horizon_chunks")):  # the end of the training horizon
                ax.axvline(f["training_horizon_chunks"] + 0.5, color="k", ls=":", lw=1)
            if k == "latent_err_rel":  # the drift bound (eval/report.py DRIFT_REL_MAX)
                ax.axhline(DRIFT_REL_MAX, color="r", ls="--", lw=1)
            ax.set_xlabel("chunk")
            ax.set_title(label, fontsize=9)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(run_dir / "drift.png", dpi=120)
        plt.close(fig)
        made.append("drift.png")
    lat = _get(f, "latency", "per_chunk_seconds")
    if lat:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(range(len(lat)), [1e3 * s for s in lat], marker=".")
        ax.set_xlabel("chunk")
        ax.set_ylabel("latency (ms)")
        ax.set_ylim(bottom=0)
        fig.tight_layout()
        fig.savefig(run_dir / "latency.png", dpi=120)
        plt.close(fig)
        made.append("latency.png")
    curves = [(stage, key) for stage, rows in metrics.items() for key in
              sorted({k for r in rows for k in r if k.startswith("train/loss/")})]
    if curves:
        fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3), squeeze=False)
        for ax, (stage, key) in zip(axes[0], curves):
            pts = [(r["step"], r[key]) for r in metrics[stage] if key in r and _finite(r[key])]
            ax.plot([p[0] for p in pts], [p[1] for p in pts])
            ax.set_title(f"{stage}: {key.split('/')[-1]}", fontsize=9)
            ax.set_xlabel("step")
        fig.tight_layout()
        fig.savefig(run_dir / "training.png", dpi=120)
        plt.close(fig)
        made.append("training.png")
    return made


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if math.isfinite(v) else str(v)
    return str(v)


def _clean(obj):
    """JSON-safe copy: non-finite floats become null (strict JSON has no NaN), tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (int, str, bool)) or obj is None:
        return obj
    return str(obj)


def write_report(run_dir: Path, figures: dict, *, metrics: dict[str, list[dict]] | None = None) -> dict:
    """Add the target checks to ``figures``, write report.json and report.md (+ plots); returns the report."""
    run_dir = Path(run_dir)
    report = dict(figures)
    report["targets"] = targets(figures)
    (run_dir / "report.json").write_text(json.dumps(_clean(report), indent=2))
    plots = _plots(run_dir, figures, metrics or {})
    lines = ["# TrackStream end-to-end run", "",
             f"Run directory `{run_dir}`. Every figure below was measured in this run.", "",
             "## Targets (issue 7)", "", "| criterion | role | value | threshold | met | what |",
             "|---|---|---|---|---|---|"]
    for name, t in report["targets"].items():
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {name} | {t['role']} | {_fmt(t['value'])} | {_fmt(t['threshold'])} | {met} | {t['note']} |")
    t_with, frozen = figures.get("teacher_epe_with_tracks"), figures.get("epe_frozen_video")
    t_without = figures.get("teacher_epe_without_tracks")
    if _finite(t_with) and _finite(frozen) and _finite(t_without):
        follows = t_with < frozen and t_with < t_without
        ratio = t_with / t_without if t_without > 0 else float("nan")
        if not follows:
            verdict = ("does NOT follow the tracks better than ignoring them, so the student's motion-following "
                       "targets are bounded by the teacher it distils (DMD matches the teacher's distribution).")
        elif ratio > EPE_RATIO_WITHOUT_MAX:
            verdict = (f"follows the tracks only weakly (with / without = {ratio:.2f}), which bounds the student's "
                       "motion-following targets (DMD matches the teacher's distribution).")
        else:
            verdict = f"follows the tracks (with / without = {ratio:.2f})."
        lines += ["", f"Teacher check: EPE with tracks {t_with:.2f} px vs without {t_without:.2f} px and vs a frozen "
                  f"first frame {frozen:.2f} px: the teacher " + verdict]
    t_ssim, f_ssim = figures.get("teacher_ssim_with_tracks"), figures.get("ssim_frozen_video")
    if _finite(t_ssim) and _finite(f_ssim) and t_ssim < f_ssim:
        lines += ["", f"Video check: the teacher's frames after the first are less like the ground truth than the "
                  f"frozen first frame is (SSIM {t_ssim:.3f} vs {f_ssim:.3f}; PSNR "
                  f"{_fmt(figures.get('teacher_psnr_with_tracks'))} vs {_fmt(figures.get('psnr_frozen_video'))} dB): "
                  "its samples are not yet coherent videos, and the EPE figures are measured by tracking them "
                  "(see samples.png)."]
    lines += ["", "## Motion following on held-out clips", "",
              "| model | EPE with tracks (px) | EPE without (px) | PSNR with / without (dB) | SSIM with / without "
              "| NFE / video |", "|---|---|---|---|---|---|"]
    for tag, label in (("teacher", "teacher (joint guidance)"), ("ode_init", "student after ODE init"),
                       ("student", "student after DMD")):
        w, wo = figures.get(f"{tag}_epe_with_tracks"), figures.get(f"{tag}_epe_without_tracks")
        nfe = figures.get("teacher_nfe_per_video") if tag == "teacher" else figures.get("student_nfe_per_video")
        psnr = f"{_fmt(figures.get(f'{tag}_psnr_with_tracks'))} / {_fmt(figures.get(f'{tag}_psnr_without_tracks'))}"
        ssim = f"{_fmt(figures.get(f'{tag}_ssim_with_tracks'))} / {_fmt(figures.get(f'{tag}_ssim_without_tracks'))}"
        if _finite(w):
            lines.append(f"| {label} | {_fmt(w)} | {_fmt(wo)} | {psnr} | {ssim} | {_fmt(nfe)} |")
    for key, unit in (("epe_ground_truth_video", "px"), ("epe_frozen_video", "px"), ("psnr_frozen_video", "dB"),
                      ("ssim_frozen_video", "")):
        if _finite(figures.get(key)):
            lines.append(f"\nReference: {key.replace('_', ' ')} = {_fmt(figures[key])}{' ' + unit if unit else ''}.")
    lines.append("\nPSNR and SSIM: frames 1.. against the ground-truth clip (the frozen first frame is the video "
                 "that ignores motion entirely).")
    if "student_nfe_calls_per_video" in figures:
        lines.append(f"\nStudent DiT calls per video: {figures['student_nfe_calls_per_video']} "
                     f"(chunk calls; {figures.get('student_nfe_per_video'):.3f} in full-video equivalents).")
    drift = figures.get("drift") or {}
    if drift:
        lines += ["", f"## Long rollout ({figures.get('long_rollout_frames')} frames, "
                  f"{figures.get('long_rollout_factor')}x the training horizon)", "",
                  "| config | measure | early (training horizon) | late (last chunks) | late / early |",
                  "|---|---|---|---|---|"]
        for tag, d in drift.items():
            for k, s in (d.get("summary") or {}).items():
                lines.append(f"| {tag} ({d.get('config')}) | {k} | {_fmt(s['early'])} | {_fmt(s['late'])} | "
                             f"{_fmt(s['late_over_early'])} |")
    lat = figures.get("latency") or {}
    if lat:
        lines += ["", "## Latency", "",
                  f"Re-timed chunk {lat.get('early_chunk')}: {1e3 * lat['retimed_early_s']:.2f} ms, last chunk "
                  f"{lat.get('last_chunk')}: {1e3 * lat['retimed_last_s']:.2f} ms (minimum of "
                  f"{lat.get('repeats', '?')} interleaved repeats; ratio {lat['latency_ratio_last_over_early']:.3f}; "
                  f"ratio of the medians {_fmt(lat.get('median_ratio_last_over_early'))}); in-stream medians last 5 / early 5: "
                  f"{lat['in_stream_ratio_last5_over_early5']:.3f}. Cache after the rollout: "
                  f"{lat.get('cache_frames_last')} latent frames, {lat.get('cache_bytes_last')} bytes."]
    stages = figures.get("stages") or {}
    if stages:
        lines += ["", "## Stages", "", "| stage | status | seconds |", "|---|---|---|"]
        for name, s in stages.items():
            lines.append(f"| {name} | {s.get('status')} | {_fmt(s.get('seconds', ''))} |")
    if _finite(figures.get("total_seconds")):
        cpu = figures.get("total_cpu_seconds")
        lines.append(f"\nTotal {figures['total_seconds']:.0f} s wall clock" + (
            f", {cpu:.0f} s CPU (on 2 cores the wall clock is at least half the CPU time, more when other "
            "processes share the cores)." if _finite(cpu) else "."))
    if (run_dir / "samples.png").is_file():
        plots = ["samples.png", *plots]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    return report
