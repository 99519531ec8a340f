"""What a student export's own records say it was trained on, and what that means for a photo.

A run writes its resolved ``config.yaml`` beside the stage that exported the network (``RUN/dmd/config.yaml`` for
``RUN/dmd/export/student``; a release folder holds it beside its network: ``assets/tiny-student/config.yaml``);
``models.network.Network`` reads it.
Its ``data`` node is the training world: ``source: synthetic`` (the sprite world of ``data.synthetic``, at
``data.height`` x ``data.width``) or ``source: shards`` (prepared videos). ``network.json`` itself records the
architecture and conventions, not the data, so the run's config is the record read here; an export with no run
config beside it (converted or downloaded weights) has no recorded world, and nothing is claimed about it.

A student that knows only the synthetic world cannot stream a photo: its picture turns into a grainy block mosaic
within the first chunks and into coloured noise where the tracks end. ``photo_notice`` is the one line that says
so; ``trackstream generate`` prints it and the demo shows it after an upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = ["TrainedWorld", "trained_world", "photo_notice"]

DOC = "docs/embedded-world.md"


@dataclass(frozen=True)
class TrainedWorld:
    source: str  # data.source: "synthetic" or "shards"
    height: int
    width: int
    config: Path  # the run config it was read from

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"


def trained_world(network) -> Optional[TrainedWorld]:
    """The training world the run config of ``network`` (a ``models.network.Network`` or its folder) records
    (``data.source`` and frame size), or None when it has no run config or its config names no data source."""
    from trackstream.models.network import Network

    network = Network.of(network, "--student")
    data = network.recorded("data")
    if network.config_path is None or not isinstance(data, dict) or not isinstance(data.get("source"), str):
        return None
    return TrainedWorld(
        source=data["source"],
        height=int(data.get("height", 0)),
        width=int(data.get("width", 0)),
        config=network.config_path,
    )


def photo_notice(world: Optional[TrainedWorld]) -> Optional[str]:
    """One line for a person giving a student a photo, when its recorded ``world`` is the synthetic one; None
    otherwise (weights trained on real videos, or with no recorded world). It names no server path: the demo
    sends it to the page."""
    if world is None or not world.synthetic:
        return None
    return (
        f"this student was trained only on the synthetic world ({world.width}x{world.height} sprites over textured "
        "backgrounds; its run config says data.source=synthetic): a photo is outside it, so expect the picture to "
        "turn into a grainy block mosaic within a few frames and into coloured noise where the tracks end. "
        f"Its own scenes show what it learned ({DOC})"
    )
