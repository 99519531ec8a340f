"""Hydra CLI for the real-video shard pipeline: `python -m trackstream.data.prepare input=... output=...`.

Only this entry point knows about Hydra: it turns the composed config into a typed
`PrepareConfig` plus plain-dict component specs and calls `data.prepare_shards.run_prepare`.
See conf/prepare.yaml for every option and trackstream/data/prepare_shards.py for the design.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from trackstream.data.prepare_shards import PrepareConfig, PrepareRefused, run_prepare
from trackstream.data.trackers import tracker_nodes
from trackstream.models.formats.files import remove_run_folder

COMPONENTS = ("tracker", "text_encoder", "latent_encoder")


def config_from_hydra(cfg: DictConfig) -> tuple[PrepareConfig, dict]:
    """Split a composed config into PrepareConfig and component specs (plain dicts or None)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    specs = {k: data.pop(k, None) for k in COMPONENTS}
    known = {f.name for f in dataclasses.fields(PrepareConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown prepare option(s) {unknown}; valid options: {sorted(known)}")
    if "extensions" in data:
        data["extensions"] = tuple(data["extensions"])
    return PrepareConfig(**data), specs


for (_group, _name), _node in tracker_nodes().items():  # tracker=<name>: data.trackers.TrackerConfig nodes
    ConfigStore.instance().store(group=_group, name=_name, node=_node)

# absolute, so main() also runs in-process (a relative path resolves against the package when imported)
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="prepare")
def main(cfg: DictConfig) -> None:
    try:
        pcfg, specs = config_from_hydra(cfg)
        summary = run_prepare(pcfg, **specs)
    except (PrepareRefused, ValueError) as err:  # ValueError: a user's value (the house's convention)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _remove_own_log_dir(str(cfg.output))
        raise SystemExit(f"error: {err}") from None  # one line naming the input / component, exit status 1
    keys = ("complete", "num_inputs", "num_samples", "num_skipped", "skipped_by_reason", "uncaptioned", "split_at_cut")
    print(json.dumps({k: summary[k] for k in keys}, indent=1))
    for line in notes(summary):
        print(line)
    if summary["upscaled"]:
        print(
            f"note: {summary['upscaled']} of {summary['num_samples']} samples come from sources smaller than "
            f"{pcfg.width}x{pcfg.height}, upscaled up to {summary['max_upscale']:.1f}x; skip them with "
            "min_source_height= / min_source_width=, or prepare at a smaller height= / width="
        )
    print(f"report: {pcfg.output}/report.json")
    if summary["complete"] and summary["num_inputs"] and not summary["num_samples"]:
        # every input skipped is a setup error (an encoder that does not load, a wrong size), not data
        reasons = ", ".join(f"{k} x{n}" for k, n in summary["skipped_by_reason"].items())
        raise SystemExit(
            f"prepare wrote no sample: all {summary['num_inputs']} inputs were skipped ({reasons}); "
            f"the reasons per input are in {pcfg.output}/report.json"
        )


def notes(summary: dict) -> list[str]:
    """The summary's counts a person should know of, one line each."""
    out = []
    if summary["uncaptioned"]:
        how = {"empty": "empty captions", "filename": "their file names as captions"}[summary["missing_caption"]]
        out.append(
            f"note: {summary['uncaptioned']} videos without a caption: {how} (give captions by a sidecar .txt, a "
            "manifest or captions=; missing_caption=empty | filename | skip)"
        )
    cut = summary["skipped_by_reason"].get("scene_cut", 0)
    if summary["split_at_cut"] or cut:
        out.append(
            f"note: scene cuts: {summary['split_at_cut']} samples start after a cut, {cut} videos skipped for "
            "holding no num_frames frames of one shot (scene_cuts=split | drop | keep, scene_cut_threshold=)"
        )
    return out


def _remove_own_log_dir(output: str) -> None:
    """A refused run leaves no folder behind: Hydra made ``<output>/logs/<time>/`` (``.hydra/``, the job log)
    for this invocation (and ``<output>`` itself when new); remove what holds nothing else."""

    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if run_dir.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in run_dir.iterdir()):
        remove_run_folder(run_dir)
        for parent in (run_dir.parent, Path(output)):  # logs/, then the output folder, when now empty
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


if __name__ == "__main__":
    main()
