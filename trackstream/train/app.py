"""Hydra entry point: ``python -m trackstream.train experiment=NAME key=value ...`` (console: ``trackstream train``).

The only place that sees a DictConfig: compose -> the settings of the network the stage is given, read
from its record where the command line did not set them (``train.teacher_record``; Hydra's command-line
overrides say what it set) -> ``validate`` (dataclasses, ValueError naming the field) -> runtime
(accelerate) -> run directory -> ``run_stage`` (the stage's builder, then its plan through the loop). ``--cfg job`` prints the
composed config without running; ``--info defaults`` shows the defaults tree.

Run-directory contract (``hydra.run.dir``; pass ``hydra.run.dir=$RUN_DIR`` or set ``RUN_DIR``
under multi-process launches so every rank agrees):
  config.yaml     the resolved config          metrics.jsonl   one JSON object per logged step
  checkpoints/    resumable checkpoints        samples/        generated videos (track overlays)
  results.json    the stage's summary          eval.json       held-out evaluation (teacher)
  train.log       rank-0 log                   .hydra/         Hydra's own records
Re-running with the same run directory resumes from its latest checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from trackstream.eval.tables import markdown_table
from trackstream.models.formats.checkpoint import split_subkey
from trackstream.models.formats.files import remove_run_folder
from trackstream.models.precision import concrete_precision, resolve_device
from trackstream.train.codec import StagePreempted, codec_fingerprint
from trackstream.train.config import register_configs, resolved_container, validate
from trackstream.train.plan import train_plan
from trackstream.train.recipes import CONFIG_DIR
from trackstream.train.registry import STAGES
from trackstream.train.teacher_record import Applied, apply_settings
from trackstream.train.train_config import TrainConfig
from trackstream.trainer.checkpoint import TrainingStopped, refuse_foreign_run
from trackstream.trainer.dist import Runtime, export_slurm_env, hard_exit, init_runtime, launch_rank, seed_everything
from trackstream.trainer.loop import configure_determinism, set_threads
from trackstream.trainer.metrics import setup_logging
from trackstream.trainer.parallel import deepspeed_config
from trackstream.trainer.run_lock import LOCK_NAME, holds_lock, lock_run_dir, made_dir, unlock_run_dir

__all__ = ["main", "run", "run_stage", "check_inputs", "start_run", "RunRefused"]

register_configs()
log = logging.getLogger("trackstream")


def _run_dir(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def derive_grad_accum(*, global_batch: int | None, batch_size: int, world_size: int, grad_accum: int) -> int:
    """Micro-batches per update that keep ``global_batch`` = batch_size x grad_accum x world_size."""
    if global_batch is None:
        return grad_accum
    per_step = batch_size * world_size
    if global_batch % per_step:
        raise ValueError(
            f"trainer.global_batch={global_batch} is not a multiple of data.batch_size x processes = "
            f"{batch_size} x {world_size}: change data.batch_size or the number of processes"
        )
    derived = global_batch // per_step
    if grad_accum not in (1, derived):
        raise ValueError(
            f"trainer.grad_accum={grad_accum} contradicts trainer.global_batch={global_batch} "
            f"({batch_size} x {world_size} processes needs {derived}); set one of them only"
        )
    return derived


class RunRefused(ValueError):
    """A run refused before it wrote anything (a config error, a missing input, another run's directory):
    the command line gets the one-line message and exit status 2, no traceback (``hydra_entry``)."""


def check_inputs(typed: TrainConfig) -> None:
    """Every file the config names that must already exist, checked before the run directory is made
    (a missing one found deep inside the stage left a half-made run directory and a traceback)."""
    fields = {
        "model.init_from": split_subkey(typed.model.init_from)[0] if typed.model.init_from else None,  # PATH::entry
        "model.text_encoder_path": typed.model.text_encoder_path,
        "model.image_encoder_path": typed.model.image_encoder_path,
        "codec.checkpoint": typed.codec.checkpoint,
    }
    if typed.data.source == "shards" and typed.data.shards and not set("*?[{") & set(typed.data.shards):
        fields["data.shards"] = typed.data.shards  # a plain folder; globs and brace patterns are expanded later
    for name in getattr(type(typed.stage), "INPUT_PATHS", ()):
        value = getattr(typed.stage, name)
        fields[f"stage.{name}"] = split_subkey(value)[0] if value else None  # stage.student may be PATH::entry
    for name, path in fields.items():
        if path and not Path(path).exists():
            raise ValueError(f"{name}={path!r} does not exist (relative to {Path.cwd()}); fix the path or unset it")
    if typed.data.source == "shards" and typed.data.shards and typed.data.placement is None:
        from trackstream.data.loader import check_track_count

        check_track_count(typed.data.shards, tuple(typed.data.num_tracks) if typed.data.num_tracks else None)


# Hydra writes <run_dir>/.hydra/ (config, overrides) before the job runs. ``GuardRunDir`` (conf/hydra/default.yaml)
# takes the run directory's lock first, so a run refused for the lock has Hydra write nothing there, and keeps the
# bytes of the records from before, so a run refused later (holding the lock) puts back what Hydra overwrote
_RECORD_NAMES = ("config.yaml", "hydra.yaml", "overrides.yaml")
_HYDRA_RECORDS: dict[Path, dict[str, bytes] | None] = {}  # run dir -> its .hydra/ files before (None: no .hydra/)
_LOCK_REFUSED: dict[Path, str] = {}  # run dir -> why the callback could not take its lock


def _write_no_hydra_records(config: DictConfig) -> None:
    with read_write(config.hydra):
        config.hydra.output_subdir = None


class GuardRunDir(Callback):
    """Hydra callback, before Hydra makes the job's directory or writes anything in it (``on_run_start``): the
    first rank takes the run directory's lock; refused, Hydra writes no records there (the holder's stay as they
    are); else the bytes of the directory's ``.hydra/`` files are kept. Other ranks write no records (the first
    rank's are the same)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir"))).resolve()
        _HYDRA_RECORDS.pop(run_dir, None)
        _LOCK_REFUSED.pop(run_dir, None)
        if launch_rank() != 0:
            _write_no_hydra_records(config)
            return
        refusal = lock_run_dir(run_dir)
        if refusal:
            _LOCK_REFUSED[run_dir] = refusal
            _write_no_hydra_records(config)
            return
        records = run_dir / ".hydra"
        before = {p.name: p.read_bytes() for p in records.iterdir() if p.is_file()} if records.is_dir() else None
        _HYDRA_RECORDS[run_dir] = before


class SweepSummary(Callback):
    """Hydra callback, after a multirun (``on_multirun_end``): one table of every point's overrides and final
    figures (its ``results.json``: status, step, last losses, the held-out EPE) written beside ``multirun.yaml`` as
    ``summary.md`` and ``summary.json`` (``sweep_summary``)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        if sweep.is_dir():
            sweep_summary(sweep)


# a point's figures in the table: results.json's own, then its last_metrics' (the train/ losses)
_SUMMARY_KEYS = ("status", "step", "epe_with_tracks", "epe_without_tracks", "epe_ratio_with_over_without")


def sweep_summary(sweep: Path) -> list[dict]:
    """The rows of ``summary.md`` / ``summary.json`` written in the sweep folder ``sweep``: per point folder (with a
    ``.hydra/overrides.yaml``), its overrides and final figures ("missing" where it wrote no results.json)."""
    import yaml

    rows = []
    for point in sorted((p for p in sweep.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()), key=_point_key):
        row = {
            "point": point.name,
            "overrides": " ".join(yaml.safe_load((point / ".hydra" / "overrides.yaml").read_text()) or []),
        }
        res = (
            json.loads((point / "results.json").read_text())
            if (point / "results.json").is_file()
            else {"status": "missing"}
        )
        row |= {k: res[k] for k in _SUMMARY_KEYS if k in res}
        row |= {k: v for k, v in (res.get("last_metrics") or {}).items() if k.startswith("train/loss")}
        rows.append(row)
    (sweep / "summary.json").write_text(json.dumps(rows, indent=2, default=str))
    columns = list(dict.fromkeys(k for r in rows for k in r))
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = markdown_table(columns, ([cell(r.get(c, "")) for c in columns] for r in rows))
    (sweep / "summary.md").write_text(f"# Sweep {sweep}\n\n" + "\n".join(lines) + "\n")
    return rows


def _point_key(p: Path):
    return (0, int(p.name)) if p.name.isdigit() else (1, p.name)


def _restore_hydra_records(run_dir: Path) -> None:
    """Hydra's records of ``run_dir`` as they were before this run: the old bytes back, this run's own removed."""
    before = _HYDRA_RECORDS.pop(run_dir, None)
    records = run_dir / ".hydra"
    for name in _RECORD_NAMES:
        if before and name in before:
            (records / name).write_bytes(before[name])
        else:
            (records / name).unlink(missing_ok=True)
    if before is None and records.is_dir() and not any(records.iterdir()):
        records.rmdir()


def _only_hydra_records(run_dir: Path) -> bool:
    """True when ``run_dir`` holds nothing but Hydra's records (``.hydra/``) and the lock: a directory Hydra made
    for this run when no callback saw it first (a sweep point), safe to remove when the run is refused."""
    if not run_dir.is_dir():
        return False
    names = {p.name for p in run_dir.iterdir()}
    hydra = run_dir / ".hydra"
    return names <= {".hydra", LOCK_NAME} and (
        not hydra.is_dir() or {p.name for p in hydra.iterdir()} <= set(_RECORD_NAMES)
    )


def _undo_start(run_dir: Path) -> None:
    """A refused run's clean-up, by the lock's holder only (a run refused for the lock wrote nothing): the run
    directory if this run made it, else Hydra's records as they were and the lock file if this run made it."""
    if not holds_lock(run_dir):
        return
    if made_dir(run_dir) or (run_dir not in _HYDRA_RECORDS and _only_hydra_records(run_dir)):
        remove_run_folder(run_dir)
    elif run_dir in _HYDRA_RECORDS:
        _restore_hydra_records(run_dir)
    unlock_run_dir(run_dir, remove=True)


def _only_setup_records(run_dir: Path) -> bool:
    """True when ``run_dir`` holds only what starting a run writes (Hydra's records, config.yaml, the log,
    the lock, empty checkpoints/ and samples/): nothing trained, exported or sampled yet."""
    if not run_dir.is_dir():
        return False
    setup = {".hydra", "config.yaml", "train.log", LOCK_NAME, "checkpoints", "samples"}
    for p in run_dir.iterdir():
        if p.name not in setup or (p.name in ("checkpoints", "samples") and any(p.iterdir())):
            return False
    return True


def start_run(cfg: DictConfig) -> tuple[TrainConfig, Runtime, Path]:
    """Validate, set up the runtime (processes, threads, determinism) and the run directory with its
    resolved config and log: what every entry point of a stage does before its work.

    Everything that can refuse the run (the config, the input files, a run directory holding another run's
    checkpoints) is checked before anything is written: a refused run raises ``RunRefused`` and leaves an
    existing run directory as it was (``config.yaml`` included) and a new one removed again."""
    run_dir = _run_dir(cfg).resolve()
    try:
        return _start_run(cfg, run_dir, _take_lock(run_dir))
    except RunRefused:
        _undo_start(run_dir)
        raise


def _take_lock(run_dir: Path) -> str | None:
    """The first rank's refusal to run in ``run_dir`` (None: it holds the lock; other ranks: None). Under Hydra
    the callback took the lock already, before anything was written."""
    if launch_rank() != 0:
        return None
    if run_dir in _LOCK_REFUSED:
        return _LOCK_REFUSED.pop(run_dir)
    return lock_run_dir(run_dir)  # this process's own lock is re-entered


def command_line_keys() -> dict[str, str]:
    """The config keys this run's command line set -> the override that set each: a value's key, and for a
    config group's choice (``codec=tiny-ae``) the ``name`` of the node it picks. Empty outside a Hydra run."""
    if not HydraConfig.initialized():
        return {}
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_cfg = HydraConfig.get()
    groups = set(hydra_cfg.runtime.choices)
    keys = {}
    for override in OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task)):
        key = override.key_or_group
        keys[f"{key}.name" if key in groups else key] = override.input_line
    return keys


def _checked(
    cfg: DictConfig, run_dir: Path, *, world: int, data_world: int
) -> tuple[TrainConfig, object, Applied | None]:
    """The validated config and its device, or ``RunRefused`` with the one-line reason, before anything is
    written: the settings of the network the stage is given (read into ``cfg``), the batch arithmetic, every
    schema, the input files, another run's checkpoints."""
    try:
        read = apply_settings(cfg, command_line_keys())
        if cfg.trainer.get("global_batch") is not None:  # resolved into the config, so config.yaml says what ran
            cfg.trainer.grad_accum = derive_grad_accum(
                global_batch=cfg.trainer.global_batch,
                batch_size=cfg.data.batch_size,
                world_size=data_world,
                grad_accum=cfg.trainer.grad_accum,
            )
        typed = validate(cfg)
        device = resolve_device(typed.trainer.device, field="trainer.device")  # cuda without a GPU: refused here
        if typed.trainer.grad_accum >= 16 and world == 1:  # a cluster recipe on one process: say what a step is
            log.warning(
                "trainer.global_batch=%s on one process: %d micro-batches per step; for a first run on one GPU add "
                "debug=%s_1gpu (a small global batch, few steps)",
                typed.trainer.global_batch,
                typed.trainer.grad_accum,
                typed.stage.name,
            )
        check_inputs(typed)
        # resuming another config's checkpoints is refused in the loop too, but only after config.yaml
        # (the old run's record) was overwritten: check here, before writing
        refuse_foreign_run(run_dir / "checkpoints", fingerprint=typed.fingerprint(), world_size=world)
        if typed.codec.checkpoint is None:
            refuse_foreign_run(
                run_dir / "codec" / "checkpoints",
                fingerprint=codec_fingerprint(typed.codec, typed.data),
                world_size=world,
            )
    except ValueError as err:
        raise RunRefused(str(err)) from err
    return typed, device, read


def _runtime(typed: TrainConfig, device, *, world: int) -> Runtime:
    """The processes' runtime; what precision "auto" means here is decided once, and the DeepSpeed JSON is
    written before the runtime that uses it."""
    precision = concrete_precision(typed.trainer.precision, device, training=True)
    ds_cfg = None
    if typed.parallel.strategy == "deepspeed":
        ds_cfg = deepspeed_config(
            typed.parallel,
            micro_batch=typed.data.batch_size,
            grad_accum=typed.trainer.grad_accum,
            world_size=world,
            clip=typed.optim.clip_grad_norm,
            precision=precision,
        )
    return init_runtime(
        typed.parallel.strategy,
        precision=precision,
        backend=typed.parallel.backend,
        timeout_minutes=typed.parallel.timeout_minutes,
        deepspeed_config=ds_cfg,
        find_unused_parameters=typed.parallel.find_unused_parameters,
        device=typed.trainer.device,
        sequence_parallel=typed.parallel.sequence_parallel,
    )


def _start_run(cfg: DictConfig, run_dir: Path, refusal: str | None) -> tuple[TrainConfig, Runtime, Path]:
    export_slurm_env()  # WORLD_SIZE & co. from SLURM_* under srun, before anything reads them
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if refusal and world == 1:  # several ranks learn it together below, once they can talk
        raise RunRefused(refusal)
    # the K ranks of a sequence group share one sample: the batch is counted over data ranks only
    data_world = max(1, world // max(1, int(cfg.parallel.get("sequence_parallel", 1))))
    typed, device, read = _checked(cfg, run_dir, world=world, data_world=data_world)
    set_threads(typed.trainer.num_threads)
    configure_determinism(typed.trainer.deterministic)
    runtime = _runtime(typed, device, world=world)
    agreed = Path(runtime.broadcast_object(str(run_dir)))
    if agreed != run_dir:
        raise ValueError(
            f"ranks disagree on the run directory ({agreed} vs {run_dir}): pass hydra.run.dir=... "
            "or set RUN_DIR so every rank gets the same one"
        )
    held = runtime.broadcast_object(refusal if runtime.is_main else None)
    if held:
        raise RunRefused(held)
    setup_logging(is_main=runtime.is_main, level=typed.logger.level, log_file=run_dir / "train.log")
    if runtime.is_main:
        for sub in ("checkpoints", "samples"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved_container(cfg))))
        if read is not None:
            log.info(read.describe())
        log.info(
            "run directory %s | stage %s | %s x %d (%s, %s)",
            run_dir,
            typed.stage.name,
            runtime.strategy,
            runtime.world_size,
            runtime.device,
            runtime.precision,
        )
        sp = runtime.sequence_parallel
        log.info(
            "global batch %d = %d per process x %d accumulated x %d %s",
            typed.data.batch_size * typed.trainer.grad_accum * runtime.data_world_size,
            typed.data.batch_size,
            typed.trainer.grad_accum,
            runtime.data_world_size,
            "processes" if sp == 1 else f"data ranks (each a sequence group of {sp} processes)",
        )
    runtime.barrier()
    seed_everything(typed.trainer.seed)
    return typed, runtime, run_dir


def run_stage(cfg: TrainConfig, runtime: Runtime, run_dir: Path) -> dict:
    """Build the configured stage (its record's builder), train it (resuming if possible), then run its
    ``finish``."""
    plan = STAGES[cfg.stage.name].builder(cfg, runtime, run_dir)
    return train_plan(
        plan,
        plan.trainer or cfg.trainer,
        cfg.logger,
        runtime,
        run_dir,
        cfg.fingerprint(),
        config=asdict(cfg),
        stage=cfg.stage.name,
        experiment=cfg.task_name,
    )


def run(cfg: DictConfig) -> dict:
    """Validate, set up the runtime and the run directory, train the configured stage."""
    typed, runtime, run_dir = start_run(cfg)
    try:
        summary = run_stage(typed, runtime, run_dir)
    except StagePreempted:
        summary = {"status": "preempted"}
    except TrainingStopped as err:  # a non-finite loss, a full disk: said in results.json and in one line
        if runtime.is_main:
            (run_dir / "results.json").write_text(json.dumps({"status": "stopped", "reason": str(err)}, indent=2))
        raise
    except ValueError as err:  # a user's file or value the stage found (a bad export, a damaged sample)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if _only_setup_records(run_dir):  # nothing trained: a refused run leaves no directory behind
            if runtime.is_main:
                remove_run_folder(run_dir)  # while it holds the lock: no other run writes in it meanwhile
            raise RunRefused(str(err)) from err
        raise TrainingStopped(str(err)) from err  # the run directory (and its results.json) as it was
    finally:
        unlock_run_dir(run_dir)
    if runtime.is_main:
        (run_dir / "results.json").write_text(json.dumps(summary, indent=2, default=str))
        log.info(summary_line(summary, run_dir))
    runtime.barrier()
    return summary


def summary_line(summary: dict, run_dir: Path) -> str:
    """One readable closing line: status, step, final loss, held-out EPE if evaluated, where it went."""
    parts = [f"{summary.get('status')} at step {summary.get('step')}"]
    loss = (summary.get("last_metrics") or {}).get("train/loss")
    if loss is not None:
        parts.append(f"loss {float(loss):.4g}")
    if "epe_with_tracks" in summary:
        parts.append(
            f"EPE with / without tracks {summary['epe_with_tracks']:.2f} / "
            f"{summary.get('epe_without_tracks', float('nan')):.2f} px"
        )
    if summary.get("export"):
        parts.append(f"export {summary['export']}")
    parts.append(f"results {run_dir / 'results.json'}")
    return " | ".join(parts)


def train_groups() -> str:
    """The config groups a training run composes (conf/train.yaml's defaults), each with its options, as
    ``--help`` lists them: without the typed schema entries (``*_schema``) and the groups other apps use."""
    import yaml

    conf = Path(CONFIG_DIR)
    defaults = yaml.safe_load((conf / "train.yaml").read_text())["defaults"]
    groups = sorted(
        k for d in defaults if isinstance(d, dict) for k in d if (conf / k).is_dir() and k not in ("hydra",)
    )
    lines = []
    for g in groups:
        options = sorted(p.stem for p in (conf / g).glob("*.yaml") if not p.stem.endswith("_schema"))
        lines.append(f"{g}: {', '.join(options)}")
    return "\n".join(lines)


OmegaConf.register_new_resolver("train_groups", train_groups, replace=True)


def hydra_entry(job: Callable[[DictConfig], object], *, help_header: str | None = None) -> Callable[[], None]:
    """A command over the train config (``trackstream train``, ``trackstream pairs``): Hydra composes
    ``conf/train.yaml`` with the command line, ``job`` runs on it, and a multi-process run exits hard
    afterwards (gloo's sporadic abort at interpreter exit, see ``trainer.dist``). ``help_header``: the
    first line of ``--help`` for a command other than ``trackstream train`` (whose header is in conf/hydra)."""

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
    def _hydra_main(cfg: DictConfig) -> None:
        try:
            job(cfg)
        # a user's error before the run (the fix, not a traceback: status 2), or a stopped run whose directory
        # stays resumable from its last checkpoint (status 1)
        except (RunRefused, TrainingStopped) as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            sys.stderr.write(f"error: {err}\n")  # one write: ranks sharing a pipe do not splice their lines
            raise SystemExit(2 if isinstance(err, RunRefused) else 1) from None

    def entry() -> None:
        from trackstream.trainer.codec import check_codec_overrides
        from trackstream.trainer.dist import training_allocator

        training_allocator()  # before anything touches CUDA
        try:
            check_codec_overrides(sys.argv[1:])
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        if help_header and "--help" in sys.argv[1:]:
            sys.argv.append(f"hydra.help.header='{help_header}'")
        try:
            _hydra_main()
        except SystemExit as stop:
            if stop.code not in (0, None, 2):  # Hydra's refusal of the command line: name the key meant
                hint = near_keys(sys.argv[1:])
                if hint:
                    print(f"error: {hint}", file=sys.stderr)
            raise
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            hard_exit(0)

    return entry


def near_keys(argv: list[str]) -> str | None:
    """For a command line Hydra refused: its dotted overrides of keys the composed config does not have, each with
    the nearest key it does (``trainer.max_step`` -> ``trainer.max_steps``); None when none is unknown."""
    import difflib

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    dotted = [a for a in overrides if "." in a.split("=", 1)[0] and not a.startswith(("+", "~", "hydra."))]
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            base = compose("train", overrides=[a for a in overrides if a not in dotted])
    except Exception:  # noqa: BLE001 - the group choices themselves are wrong: Hydra's own message says which
        return None
    keys = _dotted_keys(OmegaConf.to_container(base, resolve=False))
    said = []
    for arg in dotted:
        key = arg.split("=", 1)[0]
        if OmegaConf.select(base, key, default="\0missing") != "\0missing":
            continue
        near = difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
        said.append(f"{key} is not an option" + (f"; did you mean {near[0]}?" if near else ""))
    return "; ".join(said) or None


def _dotted_keys(node, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix] if prefix else []
    out = [prefix] if prefix else []
    for k, v in node.items():
        out += _dotted_keys(v, f"{prefix}.{k}" if prefix else str(k))
    return out


main = hydra_entry(run)

if __name__ == "__main__":
    main()
