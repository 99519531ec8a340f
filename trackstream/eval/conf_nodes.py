"""The eval command's Hydra config nodes, made from the dataclasses that define them, so no YAML file restates a
default (the training app registers its own: ``train.config.NODES``):

* ``sampler/default``: ``diffusion.samplers.SamplerConfig`` (the teacher's sampler), placed at
  ``generate.sampler`` by ``trackstream eval``;
* ``tracker/<name>``, one per ``data.trackers.TRACKERS`` name: ``TrackerConfig`` with that name, placed at
  ``tracker`` by ``trackstream eval`` (``lk_plain``) and ``trackstream prepare`` (``lk``), so both
  commands take ``tracker=cotracker3_offline tracker.checkpoint=/ckpt/scaled_offline.pth``.

``python -m trackstream.eval`` registers them before composing (prepare, floor below, its tracker nodes itself);
a command line overrides a field (``generate.sampler.guidance.w_text=4``) and never copies the node.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from trackstream.data.trackers import tracker_nodes
from trackstream.diffusion.samplers import SamplerConfig

__all__ = ["NODES", "register_nodes"]

# (group, name) -> the dataclass whose defaults are the node
NODES = {
    ("sampler", "default"): SamplerConfig,
}


def register_nodes() -> None:
    cs = ConfigStore.instance()
    for (group, name), node in {**NODES, **tracker_nodes()}.items():
        cs.store(group=group, name=name, node=node)
