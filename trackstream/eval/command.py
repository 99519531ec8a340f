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
from trackstream.eval.command_output import log_wandb, plot_results, results_table, slug, table_note
from trackstream.eval.generate import MODES, GenerateConfig, generate_videos, model_lengths, run_kind
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

__all__ = ["EvalCommandConfig", "EvalRefused", "benchmark_world", "check_field_types", "evaluate", "frame_rule"]
# metrics whose feature network loads local weights (eval.harness.Extractors)
FEATURE_METRICS = ("lpips", "fid", "fvd", "proxy_fvd", "flow_epe")
DISTRIBUTION_METRICS = ("fid", "fvd", "proxy_fvd")  # Fréchet distances: a covariance needs >= 2 videos
TRACKING_BENCHMARKS = ("davis_motionstream",)  # benchmarks whose conditioning tracks the command's tracker makes

log = logging.getLogger(__name__)


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
    # mode None: WANDB_MODE, else offline (trainer.wandb_run.resolve_mode); group: WANDB_RUN_GROUP when unset
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


def _reference_codec(cfg: EvalCommandConfig):
    from trackstream.models.codecs import build_codec

    return build_codec(cfg.generate.codec.name, checkpoint=cfg.generate.codec.checkpoint).eval()


def evaluate(cfg: EvalCommandConfig, *, data: Optional[dict] = None) -> dict:
    """Generate, score and write (see the module docstring). ``data``: the synthetic world's data.*."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    cfg, kinds, ext, tracker, samples = _prepare(cfg, data)
    log.info(
        "benchmark %s: %d samples, %d frames, %s",
        cfg.benchmark.name,
        len(samples),
        samples[0].frames.shape[0],
        "x".join(map(str, samples[0].frames.shape[1:3])),
    )
    rows, speeds = _generate_rows(cfg, kinds, samples, out)
    codec_refs = [r for r in cfg.references if r in CODEC_REFERENCES]
    refs = reference_rows(samples, codec=_reference_codec(cfg) if codec_refs else None)
    rows.update({k: refs[k] for k in cfg.references if k in refs})
    results = score_rows(rows, samples, metrics=list(cfg.metrics), tracker=tracker, extractors=ext)
    for row, speed in speeds.items():
        results[row].update(speed)
    out.mkdir(parents=True, exist_ok=True)
    table = results_table(results, list(cfg.metrics))
    plots = plot_results(out, results, list(cfg.metrics), samples, rows)
    summary = {
        "results": results,
        "table": table,
        "plots": plots,
        "seconds": round(time.perf_counter() - t0, 1),
        "num_samples": len(samples),
        "tracker": cfg.tracker.name,
        # who made the conditioning tracks: the benchmark's own (synthetic: exact; folders: theirs) or, for the
        # sources that track (davis_motionstream), the command's tracker
        "benchmark_tracks": cfg.tracker.name if cfg.benchmark.name in TRACKING_BENCHMARKS else "the benchmark's",
        "labels": {"proxy_fvd": "Fréchet distance on the run's codec features: not FVD"},
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    (out / "table.md").write_text(table + table_note(cfg, samples, speeds) + _tracks_note(cfg) + "\n")
    if cfg.wandb.get("enabled"):
        log_wandb(cfg, summary, out)
    log.info("\n%s\nwrote %s (%.0f s)", table, out / "metrics.json", summary["seconds"])
    return summary


def _tracks_note(cfg: EvalCommandConfig) -> str:
    """table.md's words on the tracker that made the conditioning tracks (the benchmarks that track)."""
    if cfg.benchmark.name == "davis_motionstream":
        from trackstream.eval.davis import tracks_note

        return tracks_note(cfg.benchmark, cfg.tracker.name)
    return ""


def _prepare(cfg: EvalCommandConfig, data: Optional[dict]):
    """(cfg, run kinds, extractors, tracker, samples), or ``EvalRefused``: everything that can refuse the
    evaluation is checked before the first video is generated (the runs, the benchmark and its size, the
    feature networks' weights, the tracker)."""
    from trackstream.data.trackers import build_tracker

    try:
        kinds = {name: run_kind(run) for name, run in cfg.named_runs().items()}
        ext = Extractors(weights=cfg.weights, device=cfg.generate.device)
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
        cfg = dataclasses.replace(cfg, benchmark=frame_rule(cfg))
        tracker = build_tracker(**dataclasses.asdict(cfg.tracker))
        samples = load_benchmark(
            cfg.benchmark, data_cfg=benchmark_world(cfg, data), tracker=tracker, tracker_name=cfg.tracker.name
        )
        codec_refs = [r for r in cfg.references if r in CODEC_REFERENCES]
        if codec_refs and len({s.frames.shape for s in samples}) > 1:  # DAVIS: sequences of several lengths
            log.warning(
                "references %s encode the benchmark as one batch and need samples of one size and length: left out "
                "(this benchmark's differ; benchmark.frame_step=null and a benchmark.num_frames every sequence "
                "reaches would make them equal)",
                codec_refs,
            )
            cfg = dataclasses.replace(cfg, references=[r for r in cfg.references if r not in CODEC_REFERENCES])
        few = [m for m in cfg.metrics if m in DISTRIBUTION_METRICS]
        if few and len(samples) < 2:
            raise ValueError(
                f"metrics {few} compare feature distributions and need at least 2 videos, the benchmark has "
                f"{len(samples)}: raise benchmark.num_samples (hundreds for a meaningful FID / FVD) or drop them"
            )
    except (ValueError, ImportError, FileNotFoundError) as err:  # CoTracker3 not installed, a weights file missing
        raise EvalRefused(str(err)) from err
    return cfg, kinds, ext, tracker, samples


def frame_rule(cfg: EvalCommandConfig) -> BenchmarkConfig:
    """The benchmark config with ``benchmark.frame_rule: model`` applied: ``num_frames`` the longest length up to
    the given one that every evaluated network makes (``generate.model_lengths``), ``frame_step`` the step
    between such lengths (the chunk's pixel frames; several runs: the least common multiple), so a sequence
    shorter than ``num_frames`` goes to a length they all make too. A one-line ValueError when there is none."""
    import math

    b = cfg.benchmark
    if b.frame_rule != "model":
        return b
    rules = {name: model_lengths(run) for name, run in cfg.named_runs().items()}
    rules = {name: r for name, r in rules.items() if r is not None}  # folders of videos come as they are
    if not rules:
        return b
    if b.num_frames is None:
        raise ValueError("benchmark.frame_rule=model needs benchmark.num_frames (the protocol's length, e.g. 81)")
    step = math.lcm(*(s for _, s in rules.values()))
    ok = [n for n in range(b.num_frames, 1, -1) if all(n >= f and (n - f) % s == 0 for f, s in rules.values())]
    if not ok:
        made = ", ".join(f"{name}: {f} + k*{s}" for name, (f, s) in rules.items())
        raise ValueError(
            f"benchmark.frame_rule=model: no length up to benchmark.num_frames={b.num_frames} is made by every "
            f"run ({made} frames); score the runs in separate commands or raise benchmark.num_frames"
        )
    if (ok[0], step) != (b.num_frames, b.frame_step):
        log.info("frame rule from the runs' chunking: %d frames, shorter sequences by steps of %d", ok[0], step)
    return dataclasses.replace(b, num_frames=ok[0], frame_step=step)


def _generate_rows(cfg: EvalCommandConfig, kinds: dict[str, str], samples, out: Path) -> tuple[dict, dict]:
    """row -> {sample id: uint8 [T, H, W, 3]} for each run and mode, and row -> speed of a network run."""
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
    return rows, speeds
