"""What every Hydra command does to its line before Hydra reads it (``trackstream train`` / ``pairs`` / ``eval`` /
``prepare`` and their ``python -m`` forms): a ``settings_from=DIR`` word on the line stands for the settings every
stage made from a teacher shares with it (``settings_of``: network, codec options, noise shift, world, frame size),
read from ``DIR/config.yaml`` (a run directory, or a shipped teacher's folder); the line's later words win over
them. The data package holds it as the lowest floor with a command (``prepare``)."""

from __future__ import annotations

import os
import sys

__all__ = [
    "SETTINGS_FROM",
    "expand_settings_from",
    "hydra_value",
    "settings_of",
]

SETTINGS_FROM = "settings_from"


def _say_added(name: str, extra: list[str]) -> None:
    if extra and os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0":  # once, not by every rank
        print(f"[trackstream] {name} adds: {' '.join(extra)}", file=sys.stderr, flush=True)


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
