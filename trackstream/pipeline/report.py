"""The end-to-end report: ``report.json``, ``report.md`` and its plots, from the figures of one run.

``targets(figures)`` judges the acceptance criteria against the measured figures: per criterion the
value, the threshold and whether it is met; nothing is hard-coded and a missed target is reported
as missed. Every EPE is ``eval.metrics.motion_epe`` (the one protocol, the same as ``python -m trackstream.eval``'s:
a lost point is held where it was last seen, never dropped); a motion-following target counts as met
only when its ratio meets the threshold AND the model's EPE with tracks beats a frozen first frame on
the same clips. Figures named ``*epe_strict_*`` (runs from before the one protocol) are ignored. Beside
every EPE the quality columns (``eval.quality``; their targets, cells and per-chunk section in
``pipeline/report_quality.py``): the no-hold EPE over the frozen first frame's, the share of points lost, and
the brightness gap and texture ratio against the ground truth per chunk and over the last 8 frames.
``write_report`` renders the markdown summary with matplotlib plots (Agg backend, PNG files next
to the report):
  epe.png        EPE with / without tracks per model, with the floors (trackstream/eval/floors.py)
  drift.png      per-chunk drift measures of the long rollout, with and without the sink
  latency.png    per-chunk latency over the long rollout
  training.png   training losses: the shipped teacher's own training run, the teacher fine-tune,
                 ODE init, DMD and, when the run has one, the RL stage (its loss and mean reward per
                 round, ``train/rl/reward``) from their metrics.jsonl
  samples.png    (written by eval.stream_eval) held-out frames: ground truth, teacher, students
  strip.png      (written by eval.stream_eval) two held-out clips at frames 0, 8, 16, 24, every model with tracks
and embeds the side-by-side GIFs of the first held-out samples (ground truth | teacher | students).
A run with an RL stage (``rl_*`` figures) gets a row "student after RL" beside the DMD student's; the
targets, samples, long rollouts and latency stay the DMD student's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from trackstream.eval.metrics import EPE_TRACKER
from trackstream.pipeline.report_plots import finite as _finite
from trackstream.pipeline.report_plots import get_path as _get
from trackstream.pipeline.report_plots import write_plots
from trackstream.pipeline.report_quality import (
    chunk_section,
    floor_quality_cells,
    quality_cells,
    quality_header,
    quality_targets,
)

__all__ = ["targets", "write_report", "read_metrics", "models", "json_safe"]

TEACHER_WITH_OVER_WITHOUT_MAX = 0.35
TEACHER_WITH_OVER_FROZEN_MAX = 0.45
NFE_RATIO_MIN = 20.0
EPE_RATIO_TEACHER_MAX = 1.2
EPE_RATIO_WITHOUT_MAX = 0.4
# the codec's round trip of the ground truth, over the frozen frame's EPE: what the latent space leaves
CODEC_FLOOR_MAX = 0.15
# share of points lost entering a latent group over the share lost inside one (content carried across groups)
GROUP_LOSS_RATIO_MAX = 2.0
LATENCY_RATIO_MAX = 1.05
TOTAL_SECONDS_MAX = 12 * 60
# "Drift stays bounded": over the last chunks of the 10x rollout the latent error against ground
# truth stays at most that of an UNRELATED video from the ground truth's distribution
# (trackstream/eval/stream_eval.py: latent_err_rel <= 1). Late / early error is reported too, but is no bound
# on a panning world: chunks beyond the horizon show canvas no model can know from frame 0.
DRIFT_REL_MAX = 1.0
# long-horizon windows (trackstream/eval/long_horizon.py), with the sink: the panning world's latent energy
# within this band of the ground truth's in every window; on the knowable world, PSNR at the last window
# within LONG_PSNR_DROP_MAX dB of the first, and at least SINK_PSNR_GAIN_MIN dB above the no-sink stream's
LONG_ENERGY_BAND = (0.85, 1.2)
LONG_PSNR_DROP_MAX = 1.5
SINK_PSNR_GAIN_MIN = 3.0


def models(f: dict) -> tuple[tuple[str, str], ...]:
    """(figure prefix, label) of the generative models in the tables and plots; ``student`` is the evaluated
    student, made by the stage ``f["student_stage"]`` (make run: DMD; the shipped chain: RL). A model without
    figures has no row."""
    stage = f.get("student_stage", "dmd")
    return (
        ("teacher", "teacher (joint guidance)"),
        ("ode_init", "student after ODE init"),
        ("dmd", "student after DMD"),  # the chain's DMD student, when RL made the evaluated one
        ("student", f"student after {stage.upper()}"),
        ("rl", "student after RL"),  # make run with an RL stage: the RL student beside the evaluated DMD one
    )


def _dmd_prefix(f: dict) -> str:
    """The DMD student's figure prefix: its own row in the chain, else the evaluated student."""
    return "dmd" if "dmd_epe_with_tracks" in f else "student"


def _ratio(a, b) -> float:
    return a / b if _finite(a, b) and b > 0 else float("nan")


def targets(f: dict) -> dict:
    """Each criterion: {value, threshold, met, role, note}; ``met`` is None when a figure is missing.
    ``role``: "target" (an acceptance criterion) or "ablation" (reported for comparison: the rollout
    without the sink)."""
    out: dict[str, dict] = {}

    def add(name, value, threshold, ok, note, role="target"):
        met = bool(ok) if _finite(value) else None
        out[name] = {"value": value, "threshold": threshold, "met": met, "role": role, "note": note}

    def epe(model: str, mode: str) -> float:
        return f.get(f"{model}_epe_{mode}_tracks", float("nan"))

    frozen = f.get("epe_frozen_video", float("nan"))

    def motion_target(name, model, num, den, threshold, note):
        """num / den <= threshold, and the model's EPE with tracks beats the frozen frame's."""
        value = _ratio(num, den)
        beats_frozen = _finite(epe(model, "with"), frozen) and epe(model, "with") < frozen
        ok = _finite(value) and value <= threshold and beats_frozen
        add(
            name,
            value,
            threshold,
            ok,
            note + "; met only if the model's EPE with tracks also beats the frozen first frame",
        )

    motion_target(
        "teacher_with_over_without",
        "teacher",
        epe("teacher", "with"),
        epe("teacher", "without"),
        TEACHER_WITH_OVER_WITHOUT_MAX,
        "teacher EPE with tracks / without tracks",
    )
    motion_target(
        "teacher_with_over_frozen",
        "teacher",
        epe("teacher", "with"),
        frozen,
        TEACHER_WITH_OVER_FROZEN_MAX,
        "teacher EPE with tracks / frozen first frame's",
    )
    fl = f.get("floors") or {}
    floor = _ratio(fl.get("epe_codec_round_trip"), fl.get("epe_frozen_frame"))
    add(
        "codec_floor",
        floor,
        CODEC_FLOOR_MAX,
        _finite(floor) and floor <= CODEC_FLOOR_MAX,
        "EPE of the ground truth through the codec / the frozen first frame's: what the latent space allows",
    )
    groups = _ratio(f.get("teacher_lost_at_group_start_with_tracks"), f.get("teacher_lost_inside_group_with_tracks"))
    add(
        "teacher_carries_content",
        groups,
        GROUP_LOSS_RATIO_MAX,
        _finite(groups) and groups <= GROUP_LOSS_RATIO_MAX,
        "teacher (with tracks): share of points lost entering a latent frame's 4-frame group / inside a group",
    )
    for model in ("teacher", "student"):
        for m in ("psnr", "ssim"):
            v, ref = f.get(f"{model}_{m}_with_tracks"), f.get(f"{m}_frozen_video")
            add(
                f"{model}_{m}_above_frozen",
                v,
                ref,
                _finite(v, ref) and v > ref,
                f"{model} {m.upper()} of frames 1.. (with tracks) above the frozen first frame's",
            )
    motion_target(
        "student_vs_teacher_epe",
        "student",
        epe("student", "with"),
        epe("teacher", "with"),
        EPE_RATIO_TEACHER_MAX,
        "evaluated student EPE with tracks / teacher EPE with tracks",
    )
    motion_target(
        "student_with_over_without",
        "student",
        epe("student", "with"),
        epe("student", "without"),
        EPE_RATIO_WITHOUT_MAX,
        "evaluated student EPE with tracks / without tracks",
    )
    r = _ratio(f.get("teacher_nfe_per_video"), f.get("student_nfe_per_video"))
    add(
        "nfe_reduction",
        r,
        NFE_RATIO_MIN,
        r >= NFE_RATIO_MIN,
        "teacher NFE / student NFE per video (student calls weighted by the share of frames they denoise)",
    )
    with_sink = _get(f, "drift", "with_sink", "summary", "latent_err_rel", "late")
    without_sink = _get(f, "drift", "without_sink", "summary", "latent_err_rel", "late")
    note = (
        "long rollout ({}): latent error vs ground truth over the last chunks, relative to an unrelated "
        "in-distribution video (2 x ground-truth latent variance)"
    )
    add(  # no bound on a panning world (what it reveals is unknowable): reported, the windows below decide
        "drift_bounded_with_sink",
        with_sink,
        DRIFT_REL_MAX,
        _finite(with_sink) and with_sink <= DRIFT_REL_MAX,
        note.format("with sink"),
        role="ablation",
    )
    add(
        "drift_lower_with_sink",
        with_sink,
        without_sink,
        _finite(with_sink, without_sink) and with_sink < without_sink,
        "drift with the sink below drift without it (threshold: the without-sink figure)",
        role="ablation",
    )
    add(
        "drift_bounded_without_sink",
        without_sink,
        DRIFT_REL_MAX,
        _finite(without_sink) and without_sink <= DRIFT_REL_MAX,
        note.format("without sink"),
        role="ablation",
    )
    quality_targets(f, add)
    _long_horizon_targets(f, add)
    lat = f.get("latency_ratio_last_over_early")
    add(
        "latency_flat",
        lat,
        LATENCY_RATIO_MAX,
        _finite(lat) and lat <= LATENCY_RATIO_MAX,
        "per-chunk latency, last chunk / early chunk of the long rollout (interleaved re-timing, minima)",
    )
    total = f.get("total_seconds")
    add(
        "total_time",
        total,
        TOTAL_SECONDS_MAX,
        _finite(total) and total <= TOTAL_SECONDS_MAX,
        "wall-clock seconds of the whole run (this machine)",
    )
    return out


def _long_horizon_targets(f: dict, add) -> None:
    """The long-horizon targets on the evaluated student's windows (``long_horizon`` figures; nothing without
    them), and DMD against its ODE init at the horizon and at the longest window."""
    lh = (f.get("long_horizon") or {}).get("student") or {}
    pan = (lh.get("panning_with_sink") or {}).get("windows") or {}
    energies = [w["energy"] for w in pan.values() if _finite(w.get("energy"))]
    lo, hi = LONG_ENERGY_BAND
    if energies:
        add(
            "long_energy_max",
            max(energies),
            hi,
            max(energies) <= hi,
            "panning world, with the sink: the largest "
            "window latent energy over the ground truth's (windows at 1x..the longest factor of the horizon)",
        )
        add("long_energy_min", min(energies), lo, min(energies) >= lo, "the smallest window latent energy, as above")
    know, bare = (((lh.get(k) or {}).get("windows") or {}) for k in ("knowable_with_sink", "knowable_without_sink"))
    if know and "1x" in know:
        last = _last_window(know)
        drop = know["1x"]["psnr"] - know[last]["psnr"]
        add(
            "long_psnr_holds",
            drop,
            LONG_PSNR_DROP_MAX,
            _finite(drop) and drop <= LONG_PSNR_DROP_MAX,
            f"knowable world, with the sink: PSNR at 1x minus PSNR at {last} the horizon (dB)",
        )
        if last in bare:
            gain = know[last]["psnr"] - bare[last]["psnr"]
            add(
                "long_sink_matters",
                gain,
                SINK_PSNR_GAIN_MIN,
                _finite(gain) and gain >= SINK_PSNR_GAIN_MIN,
                f"knowable world at {last} the horizon: PSNR with the sink minus without it (dB)",
            )
    _dmd_targets(f, add)


def _last_window(windows: dict) -> str:
    return max(windows, key=lambda k: int(k[:-1]))


def dmd_comparison(f: dict) -> dict:
    """DMD against its ODE init: ``{"horizon": {measure: (dmd, ode_init)}, "long": {...}, "window": "10x"}``.
    At the horizon: EPE, PSNR (the held-out clips) and the proxy FVD of the panning world's 1x window; at the
    longest window: EPE and PSNR on the knowable world, the proxy FVD on the panning world (with the sink).
    Measures missing for either student are left out."""
    d = _dmd_prefix(f)
    lh = f.get("long_horizon") or {}
    dl, ol = lh.get(d) or {}, lh.get("ode_init") or {}

    def window(stream: dict, world: str, w: str, m: str):
        return ((stream.get(f"{world}_with_sink") or {}).get("windows") or {}).get(w, {}).get(m)

    out = {"horizon": {}, "long": {}, "window": None}
    for m in ("epe", "psnr"):
        out["horizon"][m] = (f.get(f"{d}_{m}_with_tracks"), f.get(f"ode_init_{m}_with_tracks"))
    out["horizon"]["fvd"] = (window(dl, "panning", "1x", "proxy_fvd"), window(ol, "panning", "1x", "proxy_fvd"))
    know = (dl.get("knowable_with_sink") or {}).get("windows") or {}
    if know:
        w = out["window"] = _last_window(know)
        out["long"] = {
            "epe": (window(dl, "knowable", w, "epe"), window(ol, "knowable", w, "epe")),
            "psnr": (window(dl, "knowable", w, "psnr"), window(ol, "knowable", w, "psnr")),
            "fvd": (window(dl, "panning", w, "proxy_fvd"), window(ol, "panning", w, "proxy_fvd")),
        }
    for k in ("horizon", "long"):
        out[k] = {m: v for m, v in out[k].items() if _finite(*v)}
    return out


def _better(m: str, a: float, b: float) -> bool:
    """a better than b by measure m (PSNR: higher; EPE, FVD: lower)."""
    return a > b if m == "psnr" else a < b


def _dmd_targets(f: dict, add) -> None:
    c = dmd_comparison(f)
    if c["horizon"]:
        gains = [m for m, (a, b) in c["horizon"].items() if _better(m, a, b)]
        add(
            "dmd_gains_over_ode_init",
            len(gains),
            1,
            len(gains) >= 1,
            "measures (of EPE, PSNR, FVD at the horizon) on which DMD beats its ODE init: "
            + ", ".join(f"{m} {a:.3f} vs {b:.3f}" for m, (a, b) in c["horizon"].items()),
        )
    if c["long"]:
        worse = [m for m, (a, b) in c["long"].items() if _better(m, b, a)]
        add(
            "dmd_not_worse_long",
            len(worse),
            0,
            not worse,
            f"measures at {c['window']} the horizon on which DMD is worse than its ODE init: "
            + ", ".join(f"{m} {a:.3f} vs {b:.3f}" for m, (a, b) in c["long"].items()),
        )


def _long_horizon_section(f: dict, run_dir: Path) -> list[str]:
    """The students' long streams per window (trackstream/eval/long_horizon.py), side by side, and the strip."""
    lh = f.get("long_horizon") or {}
    if not lh:
        return []
    labels = dict(models(f))
    lines = [
        "",
        "## Long streams, per window of the horizon",
        "",
        "Clips many horizons long, streamed with their ground-truth tracks. The knowable world's camera circles "
        "its frame-0 position (its frames stay predictable from frame 0 and the tracks: PSNR, SSIM and EPE are "
        "fair at any length); on the panning world only distribution measures are: the latent energy over the "
        "ground truth's (1 = the same) and, with 8 clips or more, the proxy FVD (the codec's video features).",
        "",
        "| student | stream | window | PSNR (dB) | SSIM | EPE (px) | latent energy | proxy FVD |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, streams in lh.items():
        for key, r in streams.items():
            for w, m in (r.get("windows") or {}).items():
                lines.append(
                    f"| {labels.get(name, name)} | {key.replace('_', ' ')} | {w} | {_fmt(m.get('psnr'))} "
                    f"| {_fmt(m.get('ssim'))} | {_fmt(m.get('epe'))} | {_fmt(m.get('energy'))} "
                    f"| {_fmt(m.get('proxy_fvd'))} |"
                )
    if (Path(run_dir) / "long_horizon.png").is_file():
        lines += ["", "![the last frame of each window](long_horizon.png)"]
    return lines


def read_metrics(path: Path) -> list[dict]:
    """A ``metrics.jsonl`` (or ``eval.jsonl``) as rows; [] when absent. A line that does not parse is the
    one a running stage is writing, and is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}" if math.isfinite(v) else str(v)
    return str(v)


def json_safe(obj):
    """JSON-safe copy: non-finite floats become null (strict JSON has no NaN), tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (int, str, bool)) or obj is None:
        return obj
    return str(obj)


def _lost(f: dict, prefix: str = "", suffix: str = "") -> str:
    """'start / inside' percentages of points the tracker lost against the latent grouping
    (``{prefix}lost_at_group_start{suffix}`` / ``{prefix}lost_inside_group{suffix}``)."""
    a, b = f.get(f"{prefix}lost_at_group_start{suffix}"), f.get(f"{prefix}lost_inside_group{suffix}")
    return f"{100 * a:.1f} / {100 * b:.1f}" if _finite(a, b) else ""


def _overview(f: dict) -> list[str]:
    """The one table: the floors (``eval.floors``) and every model on the same held-out clips."""
    head, rule = quality_header()  # the quality columns (eval.quality), with tracks
    lines = [
        "| video | EPE with tracks (px) | EPE without tracks (px) "
        "| PSNR with / without (dB) | SSIM with / without | points lost at latent-group start / inside (%) "
        "| NFE / video |" + head,
        "|---|---|---|---|---|---|---|" + rule,
    ]
    fl = f.get("floors") or {}
    floor_rows = (
        ("ground_truth", "ground-truth video (the tracker's floor)"),
        ("codec_round_trip", "ground truth through the codec (round trip: the floor of any generator here)"),
        ("oracle_copier", "oracle copier: frame 0 moved in pixels by the true pan, through the codec"),
        ("frozen_frame", "frozen first frame (ignores motion)"),
    )
    for key, label in floor_rows:
        if not _finite(fl.get(f"epe_{key}")):
            continue
        lines.append(
            f"| *{label}* | {_fmt(fl.get(f'epe_{key}'))} | | {_fmt(fl.get(f'psnr_{key}'))} "
            f"| {_fmt(fl.get(f'ssim_{key}'))} | {_lost(fl, suffix='_' + key)} | 0 |" + floor_quality_cells(fl, key)
        )
    for tag, label in models(f):
        if not _finite(f.get(f"{tag}_epe_with_tracks")):
            continue
        nfe = f.get("teacher_nfe_per_video") if tag == "teacher" else f.get("student_nfe_per_video")
        lines.append(
            f"| {label} | {_fmt(f.get(f'{tag}_epe_with_tracks'))} | {_fmt(f.get(f'{tag}_epe_without_tracks'))} | "
            f"{_fmt(f.get(f'{tag}_psnr_with_tracks'))} / {_fmt(f.get(f'{tag}_psnr_without_tracks'))} | "
            f"{_fmt(f.get(f'{tag}_ssim_with_tracks'))} / {_fmt(f.get(f'{tag}_ssim_without_tracks'))} | "
            f"{_lost(f, tag + '_', '_with_tracks')} | "
            f"{_fmt(nfe)} |" + quality_cells(f, tag)
        )
    lines += [
        "",
        f"EPE: `eval.metrics.motion_epe` with `{f.get('epe_tracker', EPE_TRACKER)}`, the protocol "
        "`python -m trackstream.eval` uses too: the generated video is re-tracked from the input tracks' frame-0 "
        "positions without re-acquisition and compared with the input tracks wherever the input shows them; "
        "a point the tracker loses is held where it was last seen (never dropped, so losing it is never "
        "rewarded). PSNR / SSIM: frames 1.. against the ground-truth clip. No-hold EPE: the same tracking with "
        "lost points not held (the tracker's own positions), and over the frozen first frame's by the same "
        "tracker; points lost: of the points at risk at each step, the share the tracker lost; late: the last 8 "
        "frames' mean grey level minus the ground truth's (of 255) / their texture energy over the ground truth's "
        "(all with tracks; `trackstream/eval/quality.py`).",
    ]
    return lines


def _teacher_sentences(f: dict) -> list[str]:
    out = []
    t_with, t_without, frozen = (
        f.get("teacher_epe_with_tracks"),
        f.get("teacher_epe_without_tracks"),
        f.get("epe_frozen_video"),
    )
    if _finite(t_with, t_without, frozen):
        ratio = _ratio(t_with, t_without)
        if not (t_with < frozen and t_with < t_without):
            verdict = (
                "does NOT follow the tracks better than ignoring them, so the student's motion-following "
                "targets are bounded by the teacher it distils (DMD matches the teacher's distribution)."
            )
        elif ratio > EPE_RATIO_WITHOUT_MAX:
            verdict = (
                f"follows the tracks only weakly (with / without = {ratio:.2f}), which bounds the student's "
                "motion-following targets (DMD matches the teacher's distribution)."
            )
        elif ratio > TEACHER_WITH_OVER_WITHOUT_MAX:
            verdict = (
                f"follows the tracks only partly (with / without = {ratio:.2f}; its target is "
                f"{TEACHER_WITH_OVER_WITHOUT_MAX})."
            )
        else:
            verdict = f"follows the tracks (with / without = {ratio:.2f})."
        out += [
            "",
            f"Teacher check: EPE with tracks {t_with:.2f} px vs without {t_without:.2f} px and vs a frozen "
            f"first frame {frozen:.2f} px: the teacher " + verdict,
        ]
    for tag, label in models(f):
        p, q = f.get(f"{tag}_psnr_with_tracks"), f.get(f"{tag}_ssim_with_tracks")
        fp, fq = f.get("psnr_frozen_video"), f.get("ssim_frozen_video")
        if not _finite(p, q, fp, fq):
            continue
        psnr_side = "above" if p > fp else "below"
        ssim_side = "above" if q > fq else "below"
        if psnr_side == ssim_side == "above":
            continue
        what = (
            "both below the frozen first frame's: its frames after the first are less like the ground truth "
            "than not moving at all"
            if psnr_side == ssim_side
            else f"PSNR {psnr_side} and SSIM {ssim_side} the frozen first frame's: mixed evidence on video quality"
        )
        out += [
            "",
            f"Video check ({label}): PSNR {p:.2f} vs {fp:.2f} dB, SSIM {q:.3f} vs {fq:.3f}, {what} "
            "(see the side-by-side videos).",
        ]
    return out


def _rl_sentences(f: dict) -> list[str]:
    """The RL student against the DMD student it started from (runs with an RL stage only)."""
    rl, dmd = f.get("rl_epe_with_tracks"), f.get("student_epe_with_tracks")
    if not _finite(rl, dmd):
        return []
    stage = _get(f, "stages", "rl") or {}
    steps = f" ({stage['step']} steps of `experiment=rl_tiny`)" if stage.get("step") is not None else ""
    per = stage.get("seconds_per_step")
    cost = f", {per:.2f} s per step" if _finite(per) else ""
    parts = [f"EPE with tracks {rl:.2f} px vs {dmd:.2f} px"]
    for m, unit, fmt in (("psnr", " dB", ".2f"), ("ssim", "", ".3f")):
        a, b = f.get(f"rl_{m}_with_tracks"), f.get(f"student_{m}_with_tracks")
        if _finite(a, b):
            parts.append(f"{m.upper()} {a:{fmt}} vs {b:{fmt}}{unit}")
    return [
        "",
        f"RL check: the student after RL{steps}{cost} against the DMD student it started from: "
        + ", ".join(parts)
        + ". The targets, `samples/<id>/video.mp4`, the long rollouts and the latency are the DMD student's; "
        "the RL student is a panel of the side-by-sides.",
    ]


def write_report(run_dir: Path, figures: dict, *, metrics: dict[str, list[dict]] | None = None) -> dict:
    """Add the target checks to ``figures``, write report.json and report.md (+ plots); returns the report."""
    run_dir = Path(run_dir)
    f = figures
    report = dict(figures)
    report["targets"] = targets(figures)
    (run_dir / "report.json").write_text(json.dumps(json_safe(report), indent=2))
    plots = write_plots(run_dir, figures, metrics or {}, models=models(f), drift_max=DRIFT_REL_MAX)
    lines = [
        "# TrackStream end-to-end run",
        "",
        f"Run directory `{run_dir}`"
        + (f" (`--sizes {f['sizes']}`)" if f.get("sizes") else "")
        + ". Every figure below was measured in this run"
        + (f", on {f['num_heldout']} held-out clips of {f.get('num_frames')} frames" if f.get("num_heldout") else "")
        + ".",
        "",
    ]
    release = _get(f, "stages", "teacher") or {}
    if release.get("release"):
        lines += [
            f"Teacher: the shipped release `{release['release']}` ({release.get('release_steps')} steps, trained "
            f"from commit {str(release.get('release_commit'))[:10]}), fine-tuned here for "
            f"{release.get('steps')} steps with mid-frame masking.",
            "",
        ]
    lines += ["## At a glance", "", *_overview(f)]
    lines += _teacher_sentences(f)
    lines += _rl_sentences(f)
    lines += [
        "",
        "## Targets",
        "",
        "| criterion | role | value | threshold | met | what |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in report["targets"].items():
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {name} | {t['role']} | {_fmt(t['value'])} | {_fmt(t['threshold'])} | {met} | {t['note']} |")
    lines += chunk_section(f, models(f))
    lines += _long_horizon_section(f, run_dir)
    if "student_nfe_calls_per_video" in f:
        lines.append(
            f"\nStudent DiT calls per video: {f['student_nfe_calls_per_video']} "
            f"(chunk calls; {f.get('student_nfe_per_video'):.3f} in full-video equivalents)."
        )
    world = f.get("eval_world") or {}
    if world:
        lines += [
            "",
            "## Evaluation world",
            "",
            "Held-out clips of the synthetic world (speeds in shorter sides per "
            "second, sizes relative to the shorter side): " + ", ".join(f"`{k}` {v}" for k, v in world.items()) + ".",
        ]
    sbs = f.get("side_by_side") or []
    if sbs:
        lines += [
            "",
            "## Side by side",
            "",
            f"Panels: {' | '.join(sbs[0]['panels'])}; dots are where the input tracks "
            "ask each point to be in that frame (short trails: where it came from). Every held-out sample has "
            "`samples/<id>/side_by_side.mp4`; the first ones:",
            "",
        ]
        lines += [f"![{e['id']}]({e['gif']})" for e in sbs if e.get("gif")]
    drift = f.get("drift") or {}
    if drift:
        lines += [
            "",
            f"## Long rollout ({f.get('long_rollout_frames')} frames, "
            f"{f.get('long_rollout_factor')}x the training horizon)",
            "",
            "| config | measure | early (training horizon) | late (last chunks) | late / early |",
            "|---|---|---|---|---|",
        ]
        for tag, d in drift.items():
            for k, s in (d.get("summary") or {}).items():
                lines.append(
                    f"| {tag} ({d.get('config')}) | {k} | {_fmt(s['early'])} | {_fmt(s['late'])} | "
                    f"{_fmt(s['late_over_early'])} |"
                )
    lat = f.get("latency") or {}
    if lat:
        lines += [
            "",
            "## Latency",
            "",
            f"Re-timed chunk {lat.get('early_chunk')}: {1e3 * lat['retimed_early_s']:.2f} ms, last chunk "
            f"{lat.get('last_chunk')}: {1e3 * lat['retimed_last_s']:.2f} ms (minimum of "
            f"{lat.get('repeats', '?')} interleaved repeats; ratio {lat['latency_ratio_last_over_early']:.3f}; "
            f"ratio of the medians {_fmt(lat.get('median_ratio_last_over_early'))}); in-stream medians last 5 / early 5: "
            f"{lat['in_stream_ratio_last5_over_early5']:.3f}. Cache after the rollout: "
            f"{lat.get('cache_frames_last')} latent frames, {lat.get('cache_bytes_last')} bytes.",
        ]
    stages = f.get("stages") or {}
    if stages:
        lines += ["", "## Stages", "", "| stage | status | seconds |", "|---|---|---|"]
        for name, s in stages.items():
            lines.append(f"| {name} | {s.get('status')} | {_fmt(s.get('seconds', ''))} |")
    if _finite(f.get("total_seconds")):
        cpu = f.get("total_cpu_seconds")
        lines.append(
            f"\nTotal {f['total_seconds']:.0f} s wall clock"
            + (
                f", {cpu:.0f} s CPU (on 2 cores the wall clock is at least half the CPU time, more when other "
                "processes share the cores)."
                if _finite(cpu)
                else "."
            )
        )
    if (run_dir / "samples.png").is_file():
        plots = ["samples.png", *plots]
    if (run_dir / "strip.png").is_file():  # two clips at frames 0, 8, 16, 24 (the README's status strip)
        plots = ["strip.png", *plots]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    return report
