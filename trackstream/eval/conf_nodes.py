"""Hydra config nodes made from the dataclasses that define them, so no YAML file restates a default.

Each setting that several commands and stages share is written once, as a dataclass next to the code
that uses it, and offered to Hydra here as a ConfigStore node:

* ``causal/c3s1w1``: ``models.causal.CausalConfig`` (MotionStream's chunking), placed at ``stage.causal``
  by the ODE-init, DMD and RL stages;
* ``guidance/joint``: ``diffusion.samplers.GuidanceConfig`` (joint text-motion guidance and its
  weights), placed at ``stage.guidance`` (DMD's real score) and ``stage.ode_pairs.guidance`` (ODE init);
* ``lora/disabled``: ``models.lora.LoraConfig`` (rank 0), placed at ``model.lora`` by every model file, so any
  stage takes ``model.lora.rank=64``;
* ``sampler/default``: ``diffusion.samplers.SamplerConfig`` (the teacher's sampler), placed at
  ``generate.sampler`` by ``trackstream eval``;
* ``tracker/<name>``, one per ``data.trackers.TRACKERS`` name: ``TrackerConfig`` with that name, placed at
  ``tracker`` by ``trackstream eval`` (``lk_plain``) and ``trackstream prepare`` (``lk``), so both
  commands take ``tracker=cotracker3_offline tracker.checkpoint=/ckpt/scaled_offline.pth``.

The Hydra commands register them before composing (prepare, floor below, its tracker nodes itself); a recipe overrides a field
(``stage.causal.window_chunks=2``, ``stage.guidance.w_text=4``) and never copies the node.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from trackstream.data.trackers import tracker_nodes
from trackstream.diffusion.samplers import GuidanceConfig, SamplerConfig
from trackstream.models.causal import CausalConfig
from trackstream.models.lora import LoraConfig

__all__ = ["NODES", "register_nodes"]

# (group, name) -> the dataclass whose defaults are the node
NODES = {
    ("causal", "c3s1w1"): CausalConfig,
    ("guidance", "joint"): GuidanceConfig,
    ("sampler", "default"): SamplerConfig,
    ("lora", "disabled"): LoraConfig,
}


def register_nodes() -> None:
    cs = ConfigStore.instance()
    for (group, name), node in {**NODES, **tracker_nodes()}.items():
        cs.store(group=group, name=name, node=node)
