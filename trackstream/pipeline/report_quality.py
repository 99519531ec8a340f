"""The quality columns of the end-to-end report (trackstream/pipeline/report.py): their cells in the one table
and the per-chunk section. The figures come from ``eval.quality`` through the teacher and
streaming evaluations (``<model>_no_hold_ratio_with_tracks``, ``<model>_lost_share_with_tracks``,
``<model>_motion_amplitude_with_tracks``,
``<model>_late_brightness_gap_with_tracks``, ``<model>_late_texture_ratio_with_tracks``, the per-chunk
lists ``<model>_brightness_gap_per_chunk`` / ``<model>_texture_ratio_per_chunk``) and the floors'
(``floors.no_hold_epe_<row>``, ...)."""

from __future__ import annotations

from trackstream.eval.tables import markdown_table
from trackstream.pipeline.report_plots import finite

__all__ = ["no_hold_ratio", "quality_header", "quality_cells", "floor_quality_cells", "chunk_section"]


def _num(v, fmt: str) -> str:
    return format(v, fmt) if finite(v) else ""


def no_hold_ratio(f: dict, model: str) -> float:
    """The model's no-hold EPE with tracks over the frozen first frame's (its own figure, else derived)."""
    r = f.get(f"{model}_no_hold_ratio_with_tracks")
    if finite(r):
        return r
    a, b = f.get(f"{model}_no_hold_epe_with_tracks"), f.get("no_hold_epe_frozen_video")
    return a / b if finite(a, b) and b > 0 else float("nan")


def quality_header() -> list[str]:
    """The quality columns' header cells, after the one table's."""
    return [
        "no-hold EPE (px) / ÷ frozen",
        "points lost (%)",
        "motion amplitude (1 = as asked)",
        "late brightness gap / texture ratio",
    ]


def _cells(no_hold, ratio, lost, amplitude, gap, tex) -> list[str]:
    pair = f"{_num(no_hold, '.3f')} / {_num(ratio, '.3f')}" if finite(no_hold) else ""
    share = _num(100 * lost, ".1f") if finite(lost) else ""
    late = f"{_num(gap, '+.1f')} / {_num(tex, '.3f')}" if finite(gap, tex) else ""
    return [pair, share, _num(amplitude, ".3f"), late]


def quality_cells(f: dict, model: str) -> list[str]:
    """A model's quality cells (with tracks) for the one table."""
    k = f"{model}_{{}}_with_tracks"
    return _cells(
        f.get(k.format("no_hold_epe")),
        no_hold_ratio(f, model),
        f.get(k.format("lost_share")),
        f.get(k.format("motion_amplitude")),
        f.get(k.format("late_brightness_gap")),
        f.get(k.format("late_texture_ratio")),
    )


def floor_quality_cells(fl: dict, row: str) -> list[str]:
    """A floor row's quality cells (``floors`` figures; the frozen frame's no-hold EPE is the denominator)."""
    stems = (
        "no_hold_epe",
        "no_hold_ratio",
        "lost_share",
        "motion_amplitude",
        "late_brightness_gap",
        "late_texture_ratio",
    )
    return _cells(*(fl.get(f"{s}_{row}") for s in stems))


def chunk_section(f: dict, models: tuple) -> list[str]:
    """Per chunk of the student's streaming (frame 0, then 12 pixel frames each) and over the last 8 frames:
    brightness gap / texture ratio against the ground truth, per floor and per model with tracks."""
    spans = f.get("chunk_spans") or (f.get("floors") or {}).get("chunk_spans")
    late_frames = f.get("late_span") or (f.get("floors") or {}).get("late_span")
    if not spans:
        return []
    fl = f.get("floors") or {}
    rows = []
    for key, label in (
        ("codec_round_trip", "*ground truth through the codec*"),
        ("oracle_copier", "*oracle copier*"),
        ("frozen_frame", "*frozen first frame*"),
    ):
        per = [(fl.get(f"{s}_per_chunk") or {}).get(key) for s in ("brightness_gap", "texture_ratio")]
        rows.append((label, *per, fl.get(f"late_brightness_gap_{key}"), fl.get(f"late_texture_ratio_{key}")))
    for tag, label in models:
        per = [(f.get(f"{tag}_{s}_per_chunk") or {}).get("with_tracks") for s in ("brightness_gap", "texture_ratio")]
        late = [f.get(f"{tag}_late_{s}_with_tracks") for s in ("brightness_gap", "texture_ratio")]
        rows.append((label, *per, *late))
    rows = [r for r in rows if r[1] and r[2]]
    if not rows:
        return []

    def name(s) -> str:
        lo, hi = s
        return f"frame {lo}" if hi - lo == 1 else f"frames {lo}–{hi - 1}"

    head = [name(s) for s in spans] + [f"late ({name(late_frames)})" if late_frames else "late"]
    lines = [
        "",
        "## Brightness and texture per chunk",
        "",
        "Against the ground truth, per chunk of the student's streaming and over the last 8 frames: mean grey "
        "level gap (grey levels of 255; 0 = the ground truth's) / texture energy ratio (the energy of detail finer "
        "than a Gaussian blur of sigma 1.5 px; 1 = the ground truth's); with tracks (`eval.metrics.frame_stats`), "
        "beside the floors' rows. A video that darkens or loses its detail shows here even when its EPE does not.",
        "",
    ]
    table = []
    for label, gaps, texs, late_gap, late_tex in rows:
        cells = [f"{_num(g, '+.1f')} / {_num(t, '.2f')}" for g, t in zip(gaps, texs)][: len(spans)]
        cells += [""] * (len(spans) - len(cells))  # a row of shorter videos: its late figures stay in their column
        cells.append(f"{_num(late_gap, '+.1f')} / {_num(late_tex, '.2f')}")
        table.append([label, *cells])
    return lines + markdown_table(["video", *head], table)
