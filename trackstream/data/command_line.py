"""What every command does to its line first: extra words from the environment, after the line's own.

- Every Hydra command (``trackstream train`` / ``pairs`` / ``eval`` / ``prepare`` and their ``python -m`` forms;
  ``hydra_command_line``): ``TRACKSTREAM_OVERRIDES="trainer.max_steps=2 +model.overrides.dim=64"``, and one
  composition instead of Hydra's two (``compose_once``). A ``settings_from=DIR`` word on the line stands for the
  settings every stage made from a teacher shares with it (``settings_of``: network, codec options, noise shift,
  world, frame size), read from ``DIR/config.yaml`` (a run directory, or a shipped teacher's folder); the line's
  later words win over them.
- Every argparse command (``generate``, ``drag-bench``, the benchmarks, the ``lab`` studies; ``command_args``):
  ``TRACKSTREAM_ARGS="--scenes 2 --threads 1"``.

The added words follow the line's own (so they win where both set an option; a repeatable option such as
``--set`` gains them), and the command says so on stderr. Overrides reach every stage a command launches (a
chain shrinks as one); argparse options are the command's own. A documented command then runs as written at a size a
small machine manages: a CPU rehearsal of a real recipe, a fresh clone's check that the docs' commands run
(tests/test_docs_run.py). The data package holds it as the lowest floor with a command (``prepare``)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

__all__ = [
    "ARGS_ENV",
    "OVERRIDES_ENV",
    "SETTINGS_FROM",
    "append_env_overrides",
    "command_args",
    "compose_once",
    "expand_settings_from",
    "hydra_command_line",
    "hydra_value",
    "settings_of",
]

OVERRIDES_ENV = "TRACKSTREAM_OVERRIDES"
ARGS_ENV = "TRACKSTREAM_ARGS"
SETTINGS_FROM = "settings_from"


def _env_words(name: str) -> list[str]:
    """``$name`` split into shell words (``'runs={a: x, b: y}'`` is one word)."""
    try:
        return shlex.split(os.environ.get(name, ""))
    except ValueError as err:
        raise ValueError(f"{name}: {err} (quote as a shell would)") from None


def _say_added(name: str, extra: list[str]) -> None:
    if extra and os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0":  # once, not by every rank
        print(f"[trackstream] {name} adds: {' '.join(extra)}", file=sys.stderr, flush=True)


def command_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> list[str]:
    """What an argparse command's ``parser`` parses (every argparse ``main`` does: tests/test_command_line.py reads
    each): ``argv`` when a caller passes it; the process's own line (``sys.argv[1:]``) then ``$TRACKSTREAM_ARGS``
    otherwise. The variable is consumed there (removed from the environment): its options are this command's, not
    those of the commands it runs in-process or launches (a Hydra stage keeps ``$TRACKSTREAM_OVERRIDES``). A value
    that does not start with an option (``--name``) is refused through the parser (its usage and one error line,
    status 2): positional words appended after the line's own would change what the line means."""
    if argv is not None:
        return list(argv)
    try:
        extra = _env_words(ARGS_ENV)
    except ValueError as err:
        parser.error(str(err))
    if extra and not extra[0].startswith("-"):
        parser.error(f"{ARGS_ENV}={os.environ[ARGS_ENV]!r}: {extra[0]!r} is not an option (--name value ...)")
    os.environ.pop(ARGS_ENV, None)
    _say_added(ARGS_ENV, extra)
    return sys.argv[1:] + extra


def append_env_overrides(argv: list[str] | None = None) -> list[str]:
    """``argv`` (default ``sys.argv``, changed in place) with ``$TRACKSTREAM_OVERRIDES`` after its overrides; the added
    words (shell quoting: ``'runs={a: x, b: y}'`` is one override). A value that is not an override is refused."""
    argv = sys.argv if argv is None else argv
    extra = _env_words(OVERRIDES_ENV)
    bad = [w for w in extra if "=" not in w]
    if bad:
        raise ValueError(
            f"{OVERRIDES_ENV}={os.environ[OVERRIDES_ENV]!r}: {bad[0]!r} is not key=value (Hydra overrides only)"
        )
    _say_added(OVERRIDES_ENV, extra)
    if extra:
        # after the line's last override, before flags that follow it (``--cfg job``): Hydra's parser takes the
        # overrides as one run of positional words
        last = max((i for i, w in enumerate(argv[1:], 1) if "=" in w and not w.startswith("-")), default=0)
        argv[last + 1 : last + 1] = extra
    return extra


def hydra_command_line(argv: list[str] | None = None) -> list[str]:
    """What every Hydra command does to its line before Hydra reads it: ``settings_from=DIR`` expanded
    (``expand_settings_from``), ``$TRACKSTREAM_OVERRIDES`` appended (``append_env_overrides``; the added words are
    returned) and the mode-only composition skipped (``compose_once``)."""
    expand_settings_from(argv)
    extra = append_env_overrides(argv)
    compose_once(argv)
    return extra


def settings_of(t: dict) -> list[str]:
    """The overrides that rebuild a resolved config's network, codec, noise shift and world: what every stage
    made from a teacher shares with it. Keys an older config lacks (``model.track_splat``) are left out."""
    data, model = t["data"], t["model"]
    out = [
        f"schedule.shift={t['schedule']['shift']}",
        f"++data.world={hydra_value(data['world'])}",
        f"++model.overrides={hydra_value(model['overrides'])}",
        f"model.text_encoder={model['text_encoder']}",
        f"++codec.options={hydra_value(t['codec']['options'])}",
        f"model.track_channels={model['track_channels']}",
        f"data.num_tracks={hydra_value(data['num_tracks'])}",
    ]
    if "track_splat" in model:
        out.append(f"model.track_splat={model['track_splat']}")
    out += [f"data.{k}={data[k]}" for k in ("height", "width", "fps", "grid_size", "seed")]
    return out


def hydra_value(v) -> str:
    """A Python value in Hydra's override grammar."""
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, str):
        return "'" + v.replace("'", "\\'") + "'"
    return repr(v)


def expand_settings_from(argv: list[str] | None = None) -> list[str]:
    """Each ``settings_from=DIR`` word of ``argv`` (default ``sys.argv``, changed in place) replaced by
    ``settings_of`` the resolved config ``DIR/config.yaml`` (``DIR`` may name the file itself), where it stands:
    the words after it win. Returns the words put in. A folder without a config is refused naming it."""
    argv = sys.argv if argv is None else argv
    added: list[str] = []
    for i in reversed(range(1, len(argv))):
        if not argv[i].startswith(f"{SETTINGS_FROM}="):
            continue
        where = argv[i].split("=", 1)[1]
        path = os.path.join(where, "config.yaml") if os.path.isdir(where) else where
        if not where or not os.path.isfile(path):
            raise ValueError(
                f"{SETTINGS_FROM}={where}: no config.yaml there (a run directory or a shipped teacher's folder, "
                "e.g. settings_from=assets/tiny-teacher)"
            )
        from omegaconf import OmegaConf

        try:
            words = settings_of(OmegaConf.to_container(OmegaConf.load(path), resolve=True))
        except KeyError as err:
            raise ValueError(f"{SETTINGS_FROM}={where}: {path} lacks {err} (not a training run's config)") from None
        argv[i : i + 1] = words
        added = words + added
    _say_added(SETTINGS_FROM, added)
    return added


def compose_once(argv: list[str] | None = None) -> bool:
    """Hydra composes a command's whole config twice: once only to read ``hydra.mode`` (whether the config asks
    for a sweep by itself), then to run. No config in conf/ sets ``hydra.mode`` (tests/test_command_line.py), so
    unless the command line does, the first composition is skipped, in every command's start-up and every
    rank's. Hydra then takes the mode from its flags, as it does when the mode is unset: ``--multirun`` /
    ``-m`` sweeps, anything else runs once. Returns whether it is skipped."""
    argv = sys.argv if argv is None else argv
    if any(w.lstrip("+~").startswith("hydra.mode=") for w in argv[1:]):
        return False
    from hydra._internal.hydra import Hydra

    if not hasattr(Hydra, "get_mode"):  # a private method of Hydra 1.3: another Hydra composes as it does
        return False
    Hydra.get_mode = _mode_unset
    return True


def _mode_unset(*args, **kwargs) -> None:
    """``Hydra.get_mode`` when no config sets ``hydra.mode``: unset, without composing."""
    return None
