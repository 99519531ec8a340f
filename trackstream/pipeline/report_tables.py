"""The markdown of ``report.md``: its tables and the sentences that read them (``pipeline/report.py`` writes them).

The one overview table (floors and every model on the same held-out clips), the teacher / video / RL checks,
the measured ratios beside the floors', DMD against its ODE init, the long streams per window, and the sections
of the long rollout, latency and stages.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from trackstream.data.placements import SPARSE_POINTS as SPARSE
from trackstream.eval.metrics import EPE_TRACKER
from trackstream.eval.placements import placement_table
from trackstream.eval.tables import markdown_table
from trackstream.pipeline.report_figures import dmd_comparison, models, ratio_rows
from trackstream.pipeline.report_figures import ratio as _ratio
from trackstream.pipeline.report_plots import finite as _finite
from trackstream.pipeline.report_plots import get_path as _get
from trackstream.pipeline.report_quality import floor_quality_cells, quality_cells, quality_header
from trackstream.train.rl.build import STAGE as RL

__all__ = [
    "fmt",
    "overview",
    "teacher_sentences",
    "rl_sentences",
    "ratios_table",
    "dmd_section",
    "long_horizon_section",
    "placements_section",
    "run_sections",
]


def fmt(v: Any) -> str:
    """A table cell: floats to 3 decimals (non-finite as written), None empty."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}" if math.isfinite(v) else str(v)
    return str(v)


def _lost(f: dict, prefix: str = "", suffix: str = "") -> str:
    """'start / inside' percentages of points the tracker lost against the latent grouping
    (``{prefix}lost_at_group_start{suffix}`` / ``{prefix}lost_inside_group{suffix}``)."""
    a, b = f.get(f"{prefix}lost_at_group_start{suffix}"), f.get(f"{prefix}lost_inside_group{suffix}")
    return f"{100 * a:.1f} / {100 * b:.1f}" if _finite(a, b) else ""


def overview(f: dict) -> list[str]:
    """The one table: the floors (``eval.floors``) and every model on the same held-out clips."""
    head = [
        "video",
        "EPE with tracks (px)",
        "EPE without tracks (px)",
        "PSNR with / without (dB)",
        "SSIM with / without",
        "points lost at latent-group start / inside (%)",
        "NFE / video",
        *quality_header(),  # the quality columns (eval.quality), with tracks
    ]
    rows = []
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
        rows.append(
            [
                f"*{label}*",
                fmt(fl.get(f"epe_{key}")),
                None,  # a floor has no run without tracks
                fmt(fl.get(f"psnr_{key}")),
                fmt(fl.get(f"ssim_{key}")),
                _lost(fl, suffix="_" + key),
                "0",
                *floor_quality_cells(fl, key),
            ]
        )
    for tag, label in models(f):
        if not _finite(f.get(f"{tag}_epe_with_tracks")):
            continue
        nfe = f.get("teacher_nfe_per_video") if tag == "teacher" else f.get("student_nfe_per_video")
        rows.append(
            [
                label,
                fmt(f.get(f"{tag}_epe_with_tracks")),
                fmt(f.get(f"{tag}_epe_without_tracks")),
                f"{fmt(f.get(f'{tag}_psnr_with_tracks'))} / {fmt(f.get(f'{tag}_psnr_without_tracks'))}",
                f"{fmt(f.get(f'{tag}_ssim_with_tracks'))} / {fmt(f.get(f'{tag}_ssim_without_tracks'))}",
                _lost(f, tag + "_", "_with_tracks"),
                fmt(nfe),
                *quality_cells(f, tag),
            ]
        )
    return markdown_table(head, rows) + [
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


def teacher_sentences(f: dict) -> list[str]:
    out = []
    t_with, t_without, frozen = (
        f.get("teacher_epe_with_tracks"),
        f.get("teacher_epe_without_tracks"),
        f.get("epe_frozen_video"),
    )
    if _finite(t_with, t_without, frozen):
        if not (t_with < frozen and t_with < t_without):
            verdict = (
                "does NOT follow the tracks better than ignoring them, so the student's motion following is "
                "bounded by the teacher it distils (DMD matches the teacher's distribution)."
            )
        else:
            verdict = (
                f"follows the tracks better than ignoring them (with / without = {_ratio(t_with, t_without):.2f}, "
                f"with tracks / frozen = {_ratio(t_with, frozen):.2f})."
            )
        fl = f.get("floors") or {}
        floor = _ratio(fl.get("epe_codec_round_trip"), fl.get("epe_frozen_frame"))
        if _finite(floor):
            verdict += f" The ground truth through the codec gives {floor:.2f} of the frozen frame's EPE (its floor)."
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


def rl_sentences(f: dict) -> list[str]:
    """The RL student against the DMD student it started from (runs with an RL stage only)."""
    rl, dmd = f.get("rl_epe_with_tracks"), f.get("student_epe_with_tracks")
    if not _finite(rl, dmd):
        return []
    stage = _get(f, "stages", RL.name) or {}
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
        + ". The ratios, `samples/<id>/video.mp4`, the long rollouts and the latency are the DMD student's; "
        "the RL student is a panel of the side-by-sides.",
    ]


def long_horizon_section(f: dict, run_dir: Path) -> list[str]:
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
    ]
    head = ["student", "stream", "window", "PSNR (dB)", "SSIM", "EPE (px)", "latent energy", "proxy FVD"]
    lines += markdown_table(
        head,
        (
            [labels.get(name, name), key.replace("_", " "), w]
            + [fmt(m.get(k)) for k in ("psnr", "ssim", "epe", "energy", "proxy_fvd")]
            for name, streams in lh.items()
            for key, r in streams.items()
            for w, m in (r.get("windows") or {}).items()
        ),
    )
    if (Path(run_dir) / "long_horizon.png").is_file():
        lines += ["", "![the last frame of each window](long_horizon.png)"]
    return lines


def ratios_table(f: dict) -> list[str]:
    """The ratios the figures give, each beside the same ratio of the floors where they have one."""
    rows = [
        [name, fmt(value) if _finite(value) else "not measured", floors, note]
        for name, value, floors, note in ratio_rows(f)
    ]
    return ["", "## Ratios", "", *markdown_table(["measure", "value", "the floors'", "what"], rows)]


def dmd_section(f: dict) -> list[str]:
    """DMD against its ODE init at the horizon and at the longest window (``report_figures.dmd_comparison``)."""
    c = dmd_comparison(f)
    if not (c["horizon"] or c["long"]):
        return []
    names = {"epe": "EPE (px)", "psnr": "PSNR (dB)", "fvd": "proxy FVD"}
    where = {"horizon": "the horizon", "long": f"{c['window']} the horizon"}
    rows = [[where[k], names[m], fmt(a), fmt(b)] for k in ("horizon", "long") for m, (a, b) in c[k].items()]
    lines = ["", "## DMD against its ODE init", "", *markdown_table(["where", "measure", "DMD", "ODE init"], rows)]
    lines += [
        "",
        "At the horizon: the held-out clips (EPE, PSNR) and the panning world's 1x window (proxy FVD); at the "
        "longest window: the knowable world (EPE, PSNR) and the panning world (proxy FVD), with the sink.",
    ]
    return lines


def placements_section(f: dict) -> list[str]:
    """Motion following on the placements people give (``eval.placements``), when measured."""
    fig = f.get("placements")
    if not fig:
        return []
    return [
        "",
        "## Where the tracks are put",
        "",
        f"The same {fig['clips']} held-out clips with their input tracks laid as a person would: the training "
        "lattice, that lattice shifted by half its spacing, the demo page's grid, dense random points, "
        f"{SPARSE} clicked points, none. Every video is scored on one fixed set of {fig['scoring_points']} points "
        "per clip (not its inputs), so the rows compare; EPE / frozen is over the frozen first frame's on "
        'those points (1 = no better than not moving), "/ lattice" over the model\'s own lattice row; '
        f"blockiness is the picture's steps across the {fig['token_px']}-px token grid over the ground truth's; "
        "object kept is the share of each sprite still found in the last frames. The teacher's rows are the "
        "lattice and none its evaluation above made.",
        "",
        placement_table(fig),
    ]


def run_sections(f: dict) -> list[str]:
    """The sections after the long streams: the student's DiT calls, the evaluation world, the side-by-sides,
    the long rollout, the latency and the stages with the run's total time (each only when measured)."""
    lines = placements_section(f)
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
    lines += _side_by_side_section(f.get("side_by_side") or [])
    lines += _drift_section(f)
    lines += _latency_section(f.get("latency") or {})
    lines += _stages_section(f)
    return lines


def _side_by_side_section(sbs: list[dict]) -> list[str]:
    if not sbs:
        return []
    lines = [
        "",
        "## Side by side",
        "",
        f"Panels: {' | '.join(sbs[0]['panels'])}; dots are where the input tracks "
        "ask each point to be in that frame (short trails: where it came from). Every held-out sample has "
        "`samples/<id>/side_by_side.mp4`; the first ones:",
        "",
    ]
    return lines + [f"![{e['id']}]({e['gif']})" for e in sbs if e.get("gif")]


def _drift_section(f: dict) -> list[str]:
    drift = f.get("drift") or {}
    if not drift:
        return []
    lines = [
        "",
        f"## Long rollout ({f.get('long_rollout_frames')} frames, "
        f"{f.get('long_rollout_factor')}x the training horizon)",
        "",
    ]
    head = ["config", "measure", "early (training horizon)", "late (last chunks)", "late / early"]
    rows = [
        [f"{tag} ({d.get('config')})", k, fmt(s["early"]), fmt(s["late"]), fmt(s["late_over_early"])]
        for tag, d in drift.items()
        for k, s in (d.get("summary") or {}).items()
    ]
    return lines + markdown_table(head, rows)


def _latency_section(lat: dict) -> list[str]:
    if not lat:
        return []
    return [
        "",
        "## Latency",
        "",
        f"Re-timed chunk {lat.get('early_chunk')}: {1e3 * lat['retimed_early_s']:.2f} ms, last chunk "
        f"{lat.get('last_chunk')}: {1e3 * lat['retimed_last_s']:.2f} ms (minimum of "
        f"{lat.get('repeats', '?')} interleaved repeats; ratio {lat['latency_ratio_last_over_early']:.3f}; "
        f"ratio of the medians {fmt(lat.get('median_ratio_last_over_early'))}); in-stream medians last 5 / early 5: "
        f"{lat['in_stream_ratio_last5_over_early5']:.3f}. Cache after the rollout: "
        f"{lat.get('cache_frames_last')} latent frames, {lat.get('cache_bytes_last')} bytes.",
    ]


def _stages_section(f: dict) -> list[str]:
    lines = []
    stages = f.get("stages") or {}
    if stages:
        rows = [[name, str(s.get("status")), fmt(s.get("seconds", ""))] for name, s in stages.items()]
        lines += ["", "## Stages", "", *markdown_table(["stage", "status", "seconds"], rows)]
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
    return lines
