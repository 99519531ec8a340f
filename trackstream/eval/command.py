"""``python -m trackstream.eval``: score one or several runs on a benchmark; a table, plots and JSON.

    python -m trackstream.eval run=<export or folder of videos> benchmark.name=synthetic \\
        benchmark.data_config=<a run's config.yaml> generate.codec.checkpoint=<codec.pt> metrics=[epe,psnr,ssim,proxy_fvd]
    python -m trackstream.eval 'runs={teacher: .../export/teacher, ode_init: ..., dmd: ...}' ...   # one table (compare)

Writes ``<out>/metrics.json`` (every row's means, per-sample values, the configuration),
``<out>/table.md`` (MotionStream Table 1 layout: rows = run x mode, then the references; with ``epe``
the quality columns of ``eval.quality`` after the metrics: no-hold EPE, its ratio to the frozen first
frame's, points lost, the late brightness gap and texture ratio against the ground truth),
``<out>/plots/`` (a bar chart per metric, EPE per frame, trajectory overlays of the first sample)
and the generated videos under ``<out>/videos/<row>/`` in the benchmark folder layout (so another
evaluation can read them back as a run). With ``wandb.enabled`` the table and plots go to W&B too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from trackstream.data.trackers import TrackerConfig
from trackstream.eval.benchmarks import BenchmarkConfig, load_benchmark, write_video_folder
from trackstream.eval.generate import MODES, GenerateConfig, generate_videos, run_kind
from trackstream.eval.harness import (
    CODEC_REFERENCES,
    METRICS,
    REFERENCES,
    Extractors,
    WeightsConfig,
    reference_rows,
    score_rows,
)
from trackstream.eval.metrics import EPE_TRACKER, check_epe_tracker
from trackstream.eval.quality import QUALITY_COLUMNS

__all__ = ["EvalCommandConfig", "EvalRefused", "benchmark_world", "check_field_types", "evaluate"]
# metrics whose feature network loads local weights (eval.harness.Extractors)
FEATURE_METRICS = ("lpips", "fid", "fvd", "proxy_fvd")
DISTRIBUTION_METRICS = ("fid", "fvd", "proxy_fvd")  # Fréchet distances: a covariance needs >= 2 videos

log = logging.getLogger(__name__)
LOWER_IS_BETTER = {
    "epe": True,
    "psnr": False,
    "ssim": False,
    "lpips": True,
    "fid": True,
    "fvd": True,
    "proxy_fvd": True,
}


class EvalRefused(ValueError):
    """An evaluation refused before generating anything (a bad config field, a missing file): the command
    line gets the one-line message and exit status 2, no traceback (``trackstream/eval/__main__.py``)."""


_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}


def check_field_types(obj, prefix: str) -> None:
    """Every field of the dataclass ``obj`` (and of its dataclass fields) holds its declared type, or a
    one-line ValueError naming ``prefix.field``: a command-line value of the wrong type (``num_samples=abc``)
    otherwise fails deep inside the data code with a TypeError naming neither."""
    import dataclasses
    import typing

    try:
        hints = typing.get_type_hints(type(obj))
    except NameError:  # an annotation this module cannot resolve: that class checks its own fields
        return
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints.get(f.name)
        name = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            check_field_types(value, name)
            continue
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) is typing.Union and type(None) in args
        base = next((a for a in args if a is not type(None)), None) if optional else hint
        base = typing.get_origin(base) or base
        if base not in _TYPE_NAMES or (value is None and optional):
            continue
        ok = isinstance(value, base) and not (base in (int, float) and isinstance(value, bool))
        if base is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if base is list:
            ok = isinstance(value, (list, tuple))
        if not ok:
            example = f.default if f.default is not dataclasses.MISSING and f.default is not None else "..."
            example = str(example).lower() if isinstance(example, bool) else example
            raise ValueError(
                f"{name}={value!r} must be {_TYPE_NAMES[base]}{' or null' if optional else ''}; e.g. {name}={example}"
            )


@dataclass
class EvalCommandConfig:
    run: Optional[str] = None  # one run (named after its folder)
    runs: Optional[dict] = None  # name -> run: several rows in one table
    modes: list = field(default_factory=lambda: list(MODES))
    # the floors beside the runs (eval.floors): codec_round_trip / oracle_copier need generate.codec.checkpoint
    references: list = field(default_factory=lambda: ["ground_truth", "codec_round_trip", "oracle_copier", "frozen"])
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    data_config: Optional[str] = None  # synthetic benchmark: a run's config.yaml whose data.* is the world
    metrics: list = field(default_factory=lambda: ["epe", "psnr", "ssim", "proxy_fvd"])
    # the EPE tracker (eval.metrics.EPE_TRACKERS): tracker=lk_plain, or tracker=cotracker3_offline tracker.checkpoint=...
    tracker: TrackerConfig = field(default_factory=lambda: TrackerConfig(name=EPE_TRACKER))
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    out: str = "outputs/eval"
    fps: int = 16
    save_videos: bool = True
    # mode None: WANDB_MODE, else offline (train.wandb_run.resolve_mode); group: WANDB_RUN_GROUP when unset
    wandb: dict = field(default_factory=lambda: {"enabled": False, "project": "trackstream", "mode": None})

    def __post_init__(self) -> None:
        for name, cls in (
            ("benchmark", BenchmarkConfig),
            ("generate", GenerateConfig),
            ("weights", WeightsConfig),
            ("tracker", TrackerConfig),
        ):
            if isinstance(getattr(self, name), dict):
                given = getattr(self, name)
                unknown = sorted(set(given) - set(cls.__dataclass_fields__))
                if unknown:
                    raise ValueError(
                        f"{name}.{unknown[0]} is not an option; {name}.* are {sorted(cls.__dataclass_fields__)}"
                    )
                setattr(self, name, cls(**given))
        check_field_types(self, "")
        if not self.run and not self.runs:
            raise ValueError("nothing to score: set run=<export or folder> or runs={name: path, ...}")
        bad = sorted(set(self.modes) - set(MODES))
        if bad:
            raise ValueError(f"modes {bad} unknown; choose from {list(MODES)}")
        bad = sorted(set(self.references) - set(REFERENCES))
        if bad:
            raise ValueError(f"references {bad} unknown; choose from {list(REFERENCES)}")
        bad = sorted(set(self.metrics) - set(METRICS))
        if bad:
            raise ValueError(f"metrics {bad} unknown; choose from {list(METRICS)}")
        check_epe_tracker(self.tracker.name, "tracker")

    def named_runs(self) -> dict[str, str]:
        runs = dict(self.runs or {})
        if self.run:
            runs.setdefault(Path(self.run).name, self.run)
        return runs


def benchmark_world(cfg: EvalCommandConfig, data: Optional[dict]):
    """The synthetic benchmark's world: ``data_config``'s ``data.*`` (a run's config.yaml), else ``data``
    (the command's own ``data`` group); None when neither is given."""
    from omegaconf import OmegaConf

    from trackstream.data.clips import DataConfig

    if cfg.data_config:
        run = OmegaConf.to_container(OmegaConf.load(cfg.data_config), resolve=True)
        data = run["data"]
    if data is None:
        return None
    known = set(DataConfig.__dataclass_fields__)
    return DataConfig(**{k: v for k, v in data.items() if k in known})


def slug(row: str) -> str:
    """A row name as a file name: "dmd (with tracks)" -> "dmd_with_tracks"."""
    return row.replace(" (", "_").replace(")", "").replace(" ", "_")


def _speed_note(cfg: EvalCommandConfig) -> str:
    from trackstream.models.precision import precision_name

    device, dtype = cfg.generate.precision()
    return f"; frames/s of the generation (decoding included, the first video left out) on {device}, {precision_name(dtype)}"


SPEED_COLUMNS = {"frames_per_s": "frames/s ↑", "nfe": "NFE / video ↓"}  # on this run's device and dtype


def _table(results: dict, metrics: list[str]) -> str:
    cols = [m for m in metrics if any(m in r for r in results.values())]
    cols += [c for c, _ in QUALITY_COLUMNS if any(c in r for r in results.values())]
    cols += [c for c in SPEED_COLUMNS if any(c in r for r in results.values())]
    names = [
        SPEED_COLUMNS.get(m) or dict(QUALITY_COLUMNS).get(m) or f"{m} {'↓' if LOWER_IS_BETTER[m] else '↑'}"
        for m in cols
    ]
    head = "| row | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for row, r in results.items():
        cells = [
            f"{r[m] * (100 if m == 'lost_share' else 1):.4g}"
            if isinstance(r.get(m), (int, float)) and np.isfinite(r[m])
            else "–"
            for m in cols
        ]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plots(out: Path, results: dict, metrics: list[str], samples, rows: dict) -> list[str]:
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


def _reference_codec(cfg: EvalCommandConfig):
    from trackstream.models.codecs import build_codec

    return build_codec(cfg.generate.codec.name, checkpoint=cfg.generate.codec.checkpoint).eval()


def evaluate(cfg: EvalCommandConfig, *, data: Optional[dict] = None) -> dict:
    """Generate, score and write (see the module docstring). ``data``: the synthetic world's data.*."""
    from trackstream.data.trackers import build_tracker

    t0 = time.perf_counter()
    out = Path(cfg.out)
    # everything that can refuse the evaluation is checked before the first video is generated: the runs,
    # the benchmark and its size, the feature networks' weights, the tracker
    try:
        kinds = {name: run_kind(run) for name, run in cfg.named_runs().items()}
        ext = Extractors(weights=cfg.weights)
        if "proxy_fvd" in cfg.metrics:
            if not cfg.generate.codec.checkpoint:
                raise ValueError(
                    "proxy_fvd uses the run's codec: set generate.codec.checkpoint (and generate.codec.name)"
                )
            ext.codec = _reference_codec(cfg)
        for metric in cfg.metrics:
            if metric in FEATURE_METRICS:
                ext.get(metric)  # loads its weights now (cached for scoring): a missing file fails here
        if any(r in CODEC_REFERENCES for r in cfg.references) and not cfg.generate.codec.checkpoint:
            log.warning(
                "references %s need the codec: left out; set generate.codec.checkpoint to show the floors",
                [r for r in cfg.references if r in CODEC_REFERENCES],
            )
            cfg = dataclasses.replace(cfg, references=[r for r in cfg.references if r not in CODEC_REFERENCES])
        tracker = build_tracker(**dataclasses.asdict(cfg.tracker))
        samples = load_benchmark(cfg.benchmark, data_cfg=benchmark_world(cfg, data))
        few = [m for m in cfg.metrics if m in DISTRIBUTION_METRICS]
        if few and len(samples) < 2:
            raise ValueError(
                f"metrics {few} compare feature distributions and need at least 2 videos, the benchmark has "
                f"{len(samples)}: raise benchmark.num_samples (hundreds for a meaningful FID / FVD) or drop them"
            )
    except (ValueError, ImportError, FileNotFoundError) as err:  # CoTracker3 not installed, a weights file missing
        raise EvalRefused(str(err)) from err
    log.info(
        "benchmark %s: %d samples, %d frames, %s",
        cfg.benchmark.name,
        len(samples),
        samples[0].frames.shape[0],
        "x".join(map(str, samples[0].frames.shape[1:3])),
    )
    rows: dict[str, dict[str, np.ndarray]] = {}
    speeds: dict[str, dict] = {}  # row -> frames/s and NFE of a network run
    for name, run in cfg.named_runs().items():
        kind = kinds[name]
        for mode in cfg.modes if kind != "videos" else ["videos"]:
            row = name if kind == "videos" or len(cfg.modes) == 1 else f"{name} ({mode.replace('_', ' ')})"
            log.info("generating %s: %s", row, run)
            speed: dict = {}
            rows[row] = generate_videos(
                run, samples, mode=mode if kind != "videos" else MODES[0], cfg=cfg.generate, speed=speed
            )
            if speed:
                speeds[row] = speed
                log.info("%s: %.2f frames/s, %d NFE per video", row, speed["frames_per_s"], speed["nfe"])
            if cfg.save_videos:  # written as made: a later failure keeps them
                write_video_folder(out / "videos" / slug(row), rows[row], samples, fps=cfg.fps)
    codec_refs = [r for r in cfg.references if r in CODEC_REFERENCES]
    refs = reference_rows(samples, codec=_reference_codec(cfg) if codec_refs else None)
    rows.update({k: refs[k] for k in cfg.references if k in refs})
    results = score_rows(rows, samples, metrics=list(cfg.metrics), tracker=tracker, extractors=ext)
    for row, speed in speeds.items():
        results[row].update(speed)
    out.mkdir(parents=True, exist_ok=True)
    table = _table(results, list(cfg.metrics))
    plots = _plots(out, results, list(cfg.metrics), samples, rows)
    summary = {
        "results": results,
        "table": table,
        "plots": plots,
        "seconds": round(time.perf_counter() - t0, 1),
        "num_samples": len(samples),
        "tracker": cfg.tracker.name,
        "labels": {"proxy_fvd": "Fréchet distance on the run's codec features: not FVD"},
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    note = (
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
    (out / "table.md").write_text(table + note + "\n")
    if cfg.wandb.get("enabled"):
        import os

        import wandb

        from trackstream.train.wandb_run import resolve_mode

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
                **{f"eval/{Path(p).stem}": wandb.Image(p) for p in plots},
            }
        )
        wb.finish()
    log.info("\n%s\nwrote %s (%.0f s)", table, out / "metrics.json", summary["seconds"])
    return summary
