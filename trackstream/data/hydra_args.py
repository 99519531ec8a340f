"""What every Hydra command (``trackstream train`` / ``pairs`` / ``eval`` / ``prepare`` and their ``python -m``
forms) does to its line first (``hydra_command_line``): extra overrides from the environment, and one composition
instead of Hydra's two (``compose_once``).

``TRACKSTREAM_OVERRIDES="trainer.max_steps=2 +model.overrides.dim=64"`` is added to the command line after its
own overrides (so it wins where both set a key), and the command says so on stderr. A documented command
then runs as written at a size a small machine manages: a CPU rehearsal of a real recipe, a fresh clone's
check that the docs' commands run (tests/test_docs_run.py). The data package holds it as the lowest floor
with a Hydra command (``prepare``)."""

from __future__ import annotations

import os
import shlex
import sys

__all__ = ["OVERRIDES_ENV", "append_env_overrides", "compose_once", "hydra_command_line"]

OVERRIDES_ENV = "TRACKSTREAM_OVERRIDES"


def append_env_overrides(argv: list[str] | None = None) -> list[str]:
    """``argv`` (default ``sys.argv``, changed in place) with ``$TRACKSTREAM_OVERRIDES`` after its overrides; the added
    words (shell quoting: ``'runs={a: x, b: y}'`` is one override). A value that is not an override is refused."""
    argv = sys.argv if argv is None else argv
    try:
        extra = shlex.split(os.environ.get(OVERRIDES_ENV, ""))
    except ValueError as err:
        raise ValueError(f"{OVERRIDES_ENV}: {err} (quote as a shell would)") from None
    bad = [w for w in extra if "=" not in w]
    if bad:
        raise ValueError(
            f"{OVERRIDES_ENV}={os.environ[OVERRIDES_ENV]!r}: {bad[0]!r} is not key=value (Hydra overrides only)"
        )
    if extra:
        if os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0":  # said once, not by every rank
            print(f"[trackstream] {OVERRIDES_ENV} adds: {' '.join(extra)}", file=sys.stderr, flush=True)
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
    for a sweep by itself), then to run. No config in conf/ sets ``hydra.mode`` (tests/test_hydra_args.py), so
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
