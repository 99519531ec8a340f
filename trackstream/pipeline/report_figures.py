"""Reading one run's figures for the report: which generative models it has (``models``), a ratio of two
figures (``ratio``), the measured ratios beside the same ratio of each floor (``ratio_rows``) and DMD against its
ODE init (``dmd_comparison``). Only what was measured: no figure is judged here."""

from __future__ import annotations

from trackstream.pipeline.report_plots import finite as _finite
from trackstream.pipeline.report_plots import get_path as _get

__all__ = ["models", "ratio", "ratio_rows", "dmd_comparison", "last_window"]


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


def ratio(a, b) -> float:
    """a / b, NaN unless both are finite and b is positive."""
    return a / b if _finite(a, b) and b > 0 else float("nan")


def _epe(f: dict, model: str, mode: str = "with") -> float:
    return f.get(f"{model}_epe_{mode}_tracks", float("nan"))


def _floor_epe_ratios(fl: dict) -> str:
    """The floors' EPE over the frozen first frame's: what the tracker, the codec and a pixel copier allow."""
    parts = [
        f"{label} {ratio(fl.get(f'epe_{key}'), fl.get('epe_frozen_frame')):.3f}"
        for key, label in (
            ("ground_truth", "ground truth"),
            ("codec_round_trip", "codec round trip"),
            ("oracle_copier", "oracle copier"),
        )
        if _finite(ratio(fl.get(f"epe_{key}"), fl.get("epe_frozen_frame")))
    ]
    return ", ".join(parts)


def ratio_rows(f: dict) -> list[tuple[str, float, str, str]]:
    """(measure, value, the same measure of the floors, what) of the ratios the overview table's figures give,
    the evaluated student's and the teacher's; a ratio whose figures are missing has NaN."""
    fl = f.get("floors") or {}
    frozen = f.get("epe_frozen_video", float("nan"))
    floors_vs_frozen = _floor_epe_ratios(fl)
    lost_floor = ratio(fl.get("lost_at_group_start_codec_round_trip"), fl.get("lost_inside_group_codec_round_trip"))
    drift = {k: _get(f, "drift", k, "summary", "latent_err_rel", "late") for k in ("with_sink", "without_sink")}
    return [
        ("teacher EPE with / without tracks", ratio(_epe(f, "teacher"), _epe(f, "teacher", "without")), "", ""),
        (
            "teacher EPE with tracks / frozen first frame's",
            ratio(_epe(f, "teacher"), frozen),
            floors_vs_frozen,
            "floors: their EPE / the frozen first frame's",
        ),
        (
            "teacher: share of points lost entering a latent group / inside one",
            ratio(f.get("teacher_lost_at_group_start_with_tracks"), f.get("teacher_lost_inside_group_with_tracks")),
            f"codec round trip {lost_floor:.3f}" if _finite(lost_floor) else "",
            "content carried across the 4-frame groups of a latent frame",
        ),
        ("student EPE with tracks / teacher's", ratio(_epe(f, "student"), _epe(f, "teacher")), "", "evaluated student"),
        ("student EPE with / without tracks", ratio(_epe(f, "student"), _epe(f, "student", "without")), "", ""),
        (
            "student EPE with tracks / frozen first frame's",
            ratio(_epe(f, "student"), frozen),
            floors_vs_frozen,
            "floors: their EPE / the frozen first frame's",
        ),
        (
            "NFE per video, teacher / student",
            ratio(f.get("teacher_nfe_per_video"), f.get("student_nfe_per_video")),
            "",
            "student calls weighted by the share of frames they denoise",
        ),
        (
            "latency, last chunk / early chunk",
            f.get("latency_ratio_last_over_early", float("nan")),
            "",
            "long rollout, interleaved re-timing, minima",
        ),
        (
            "late latent error vs ground truth, with the sink",
            drift["with_sink"] if _finite(drift["with_sink"]) else float("nan"),
            "1 = an unrelated video's",
            "long rollout, last chunks; relative to an unrelated in-distribution video (2 x the latent variance)",
        ),
        (
            "the same without the sink",
            drift["without_sink"] if _finite(drift["without_sink"]) else float("nan"),
            "1 = an unrelated video's",
            "",
        ),
    ]


def last_window(windows: dict) -> str:
    """The longest window of a long stream (``"10x"`` of ``{"1x": ..., "10x": ...}``)."""
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
        w = out["window"] = last_window(know)
        out["long"] = {
            "epe": (window(dl, "knowable", w, "epe"), window(ol, "knowable", w, "epe")),
            "psnr": (window(dl, "knowable", w, "psnr"), window(ol, "knowable", w, "psnr")),
            "fvd": (window(dl, "panning", w, "proxy_fvd"), window(ol, "panning", w, "proxy_fvd")),
        }
    for k in ("horizon", "long"):
        out[k] = {m: v for m, v in out[k].items() if _finite(*v)}
    return out
