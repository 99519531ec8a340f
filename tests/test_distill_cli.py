"""The distillation stages through the real CLI at debug sizes: the session's tiny teacher -> ode_init (generates the
ODE pairs, regresses, exports) -> dmd (two optimizers, 5:1, exports), then a DMD resume."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from trackstream.distill.pair_shards import load_ode_pairs
from trackstream.models.causal import CausalConfig
from trackstream.models.motion_wan import load_network

ROOT = Path(__file__).resolve().parents[1]
COMMON = [
    "debug=tiny",
    "data.num_frames=25",
    "trainer.num_threads=1",
    "eval.enabled=false",
    "logger.progress_bar=false",
]


def _cli(run_module, *args: str) -> dict:
    run_module("trackstream.stages", *COMMON, *args, timeout=300)
    run_dir = Path(next(a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")))
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow
def test_ode_init_then_dmd_through_the_cli(tmp_path, run_module, tiny_teacher_run):
    o, d = tmp_path / "ode", tmp_path / "dmd"
    teacher = tiny_teacher_run / "export" / "teacher"  # the session's tiny teacher, trained through the CLI
    assert (teacher / "network.json").is_file()

    res = _cli(
        run_module,
        "experiment=tiny_ode_init",
        f"stage.teacher={teacher}",
        "stage.ode_pairs.num_pairs=4",
        "stage.ode_pairs.teacher_steps=6",
        "stage.ode_pairs.batch_size=2",
        "stage.ode_pairs.shard_size=2",
        f"hydra.run.dir={o}",
    )
    assert res["status"] == "done" and res["num_pairs"] == 4
    cfg = OmegaConf.load(o / "config.yaml")
    pairs = load_ode_pairs(res["pairs"], student_steps=cfg.schedule.student_steps, shift=cfg.schedule.shift)
    assert pairs["trajectory"].shape[:2] == (4, 4) and (o / "export" / "student" / "network.json").is_file()

    dmd = [
        f"stage.teacher={teacher}",
        f"stage.student={o / 'export' / 'student'}",
        f"stage.pairs={res['pairs']}",
        f"hydra.run.dir={d}",
        "trainer.ckpt_every=5",
    ]
    res = _cli(run_module, "experiment=tiny_dmd", "trainer.max_steps=5", *dmd)
    assert (res["generator_updates"], res["critic_updates"]) == (1, 5)
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [("train/loss/generator" in r) for r in rows] == [False] * 4 + [True]
    res = _cli(run_module, "experiment=tiny_dmd", "trainer.max_steps=10", *dmd)  # resumes at step 5, keeps the phase
    assert res["resumed_from"].endswith("step_00000005")
    assert (res["generator_updates"], res["critic_updates"]) == (2, 10)
    student = torch.load(d / "export" / "student" / "heads.pt", weights_only=True)
    assert student  # the exported student carries its track head / text projection
    # ... and how it streams (CausalConfig + the step grid), read back typed
    conv = load_network(d / "export" / "student").conventions
    assert conv.clean_first_frame and conv.streaming.steps == cfg.schedule.student_steps
    assert conv.streaming.causal == CausalConfig(3, 1, 1, first_chunk_frames=1)
    assert conv.streaming.name == "c3s1w1k3"
