"""What every command does to its line first: extra words from the environment, after the line's own.

- Every Hydra command (``trackstream train`` / ``pairs`` / ``eval`` / ``prepare`` and their ``python -m`` forms;
  ``hydra_command_line``): ``TRACKSTREAM_OVERRIDES="trainer.max_steps=2 +model.overrides.dim=64"``, and one
  composition instead of Hydra's two (``compose_once``).
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
    "append_env_overrides",
    "command_args",
    "compose_once",
    "hydra_command_line",
]

OVERRIDES_ENV = "TRACKSTREAM_OVERRIDES"
ARGS_ENV = "TRACKSTREAM_ARGS"


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
    """What every Hydra command does to its line before Hydra reads it: ``$TRACKSTREAM_OVERRIDES`` appended
    (``append_env_overrides``; the added words are returned) and the mode-only composition skipped
    (``compose_once``)."""
    extra = append_env_overrides(argv)
    compose_once(argv)
    return extra


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
