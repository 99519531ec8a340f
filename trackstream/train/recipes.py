"""Recipes read outside a run: ``compose_recipe`` composes conf/train.yaml with overrides exactly as
``python -m trackstream.train`` does and validates it (memory plans, speed benchmarks); ``family_facts``
reads one model family's facts from conf/family (the benchmarks that take a flavor rather than a recipe)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from trackstream.train.config import register_configs, validate
from trackstream.train.train_config import FamilyConfig, ScheduleConfig, TrainConfig

__all__ = ["CONFIG_DIR", "FAMILY_DIR", "Family", "compose_recipe", "family_facts"]

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
FAMILY_DIR = Path(CONFIG_DIR) / "family"


def compose_recipe(overrides: list[str]) -> TrainConfig:
    """conf/train.yaml + ``overrides`` (e.g. ``["experiment=dmd_wan1.3b_480p"]``), validated into a
    TrainConfig; an override that does not compose is a ValueError naming it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[*overrides, "paths.output_dir=."])
    except Exception as e:  # Hydra's parse / composition errors: one line, the override named by Hydra
        msg = " ".join(str(e).split()).split(" Config search path")[0]
        raise ValueError(f"the overrides {' '.join(overrides)!r} do not compose: {msg} (fix the override)") from None
    finally:
        GlobalHydra.instance().clear()
    return validate(cfg)


@dataclass(frozen=True)
class Family:
    height: int
    width: int
    num_frames: int
    fps: int
    shift: float
    student_steps: int
    first_chunk_frames: Optional[int]


def family_facts(name: str) -> Family:
    """conf/family/<name>.yaml's facts; what the file leaves out is its dataclass's default."""
    from omegaconf import OmegaConf

    path = FAMILY_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in FAMILY_DIR.glob("*.yaml"))
        raise ValueError(f"family {name!r}: no {path}; known: {', '.join(known)}")
    raw = OmegaConf.to_container(OmegaConf.load(path))
    data, schedule, family = raw["data"], raw.get("schedule", {}), raw.get("family", {})
    return Family(
        height=int(data["height"]),
        width=int(data["width"]),
        num_frames=int(data["num_frames"]),
        fps=int(data["fps"]),
        shift=float(schedule.get("shift", ScheduleConfig.shift)),
        student_steps=int(schedule.get("student_steps", ScheduleConfig.student_steps)),
        first_chunk_frames=family.get("first_chunk_frames", FamilyConfig.first_chunk_frames),
    )
