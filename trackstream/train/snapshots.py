"""Generator snapshots of a DMD run (``stage.snapshot_every=N``), for a curve of held-out figures against
generator updates: the generator is written to ``<run_dir>/snapshots/gen_XXXXX.pt`` at 0 updates (the
student it starts from), every N generator updates and at the end.
A snapshot is a plain dict (no project classes, so it loads with ``weights_only=True`` whatever the
packages are called later):
  generator_updates, step    where it was taken (step = updates x update_ratio)
  ema                        full state dict with the EMA weights: exactly what the stage's export
                             (``finish``) would ship at that point
  generator                  full state dict of the raw trained weights (absent in a thinned copy)
Snapshots are written atomically and only ever rewritten with identical content (a resumed run
replays the steps after its checkpoint bit-identically), so a crash between a snapshot and the
checkpoint of the same step is harmless. ``snapshot_to_network`` turns one into an exported
network folder (what ``models.motion_wan.load_network`` and the stream evaluation read).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from trackstream.models.motion_wan import save_network
from trackstream.models.network import Network
from trackstream.train.plan import StagePlan
from trackstream.trainer.dist import Runtime
from trackstream.trainer.loop import Hook
from trackstream.trainer.trained_network import TrainedNetwork
from trackstream.trainer.weights import full_state_dict

__all__ = [
    "SNAPSHOT_DIR",
    "with_snapshots",
    "snapshot_path",
    "list_snapshots",
    "write_snapshot",
    "read_snapshot",
    "snapshot_to_network",
]

SNAPSHOT_DIR = "snapshots"
_NAME = re.compile(r"^gen_(\d{5,})\.pt$")


def snapshot_path(directory: Path, updates: int) -> Path:
    return Path(directory) / f"gen_{updates:05d}.pt"


def list_snapshots(directory: Path) -> dict[int, Path]:
    """{generator updates: file} of the complete snapshots in ``directory``, in update order."""
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    found = {int(m.group(1)): p for p in directory.iterdir() if (m := _NAME.match(p.name))}
    return dict(sorted(found.items()))


def write_snapshot(generator: TrainedNetwork, directory: Path, *, step: int, runtime: Runtime) -> Path:
    """The generator now (raw and EMA weights) -> ``gen_<updates>.pt``. Collective under FSDP
    (``full_state_dict`` gathers on every rank); only rank 0 writes."""
    updates = generator.num_updates
    ema = full_state_dict(generator, use_ema=True)
    raw = full_state_dict(generator, use_ema=False)
    path = snapshot_path(directory, updates)
    if runtime.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "generator_updates": updates,
            "step": step,
            "ema": {k: v.clone() for k, v in ema.items()},
            "generator": {k: v.clone() for k, v in raw.items()},
        }
        tmp = path.with_name(f".tmp-{path.name}")
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic: a listed snapshot is always complete
    runtime.barrier()
    return path


def read_snapshot(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def snapshot_to_network(path: Path, out_dir: Path, *, like: Path, weights: str = "ema") -> Path:
    """An exported network folder from a snapshot: the weights of ``weights`` ("ema" or "generator")
    with the architecture and streaming conventions of ``like`` (the run's ODE-init or DMD export)."""
    snap = read_snapshot(path)
    if weights not in snap:
        raise ValueError(
            f"{path} has no {weights!r} weights (it holds {sorted(k for k in snap if k in ('ema', 'generator'))})"
        )
    meta = Network.open(like, "like").meta
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    return save_network(
        snap[weights],
        out_dir,
        model_cfg=meta["model"],
        text_encoder_dim=int(meta["text_encoder_dim"]),
        ema=weights == "ema",
        conventions=meta.get("conventions"),
    )


def with_snapshots(plan: StagePlan, run_dir: Path, runtime: Runtime, *, every: int, update_ratio: int) -> StagePlan:
    """The DMD plan plus a generator snapshot every ``every`` generator updates and when training ends."""
    generator = plan.networks["generator"]
    directory = Path(run_dir) / SNAPSHOT_DIR
    # The plan is built before the loop restores a checkpoint, so the generator still holds its
    # starting weights here, whether or not this run resumes: that is the curve's point 0.
    if not snapshot_path(directory, 0).is_file():
        write_snapshot(generator, directory, step=0, runtime=runtime)

    def periodic(step: int, logger) -> None:
        write_snapshot(generator, directory, step=step, runtime=runtime)

    # Loop steps at which the generator has just made a multiple of ``every`` updates (it updates on
    # the last step of each update_ratio block); the loop skips hooks at max_steps.
    plan.hooks.append(Hook(every=every * update_ratio, fn=periodic))
    finish = plan.finish

    def finish_with_snapshot(result, logger=None) -> dict:
        write_snapshot(generator, directory, step=result.step, runtime=runtime)
        out = finish(result, logger)
        out["snapshots"] = {str(n): str(p) for n, p in list_snapshots(directory).items()}
        return out

    plan.finish = finish_with_snapshot
    return plan
