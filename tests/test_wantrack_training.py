"""docs/wantrack.md's training from Track-v0, rehearsed: the page's DMD, LoRA DMD and RL lines as written (the
recipes dmd_trackv0_480p and rl_trackv0_480p), on a shrunk TrackWan teacher and Track-v0 bundle in their layout,
at the real 121 frames = 31 latents = a sampled one-latent chunk 0 + 10 chunks of 3, with only the DiT's widths
(the bundles') and the pixels (the 64x112 the bundles record) shrunk, one step each. Conditions come from the
synthetic world's clips (``data=synthetic``) instead of prepared shards. Each export records Track-v0's chunking
(the DMD ones the shift-6 grid they trained on, RL the student's own levels) and streams: the page's generate line
of the DMD export, and the engine on the other two in this process."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from docs_lines import WANTRACK_STREAM, WANTRACK_TRAINING
from release_helpers import write_wantrack_bundle
from test_docs_run import run_documented

from trackstream.models.formats.wantrack import fastvideo_sigmas

SIZE = (64, 112)  # the pixels the shrunk bundles record (training_config.yaml): the stages read them
SHRINK = (
    "data=synthetic",  # the synthetic world's clips in place of prepared shards
    "data.num_tracks=[10,20]",
    "stage.pool_size=2",
    "trainer.max_steps=2",
    "trainer.sample_every=0",  # no held-out samples: the exports are streamed below
    "trainer.global_batch=1",
    "trainer.num_threads=1",
    "trainer.log_every=1",
    "trainer.ckpt_every=2",
    "logger.wandb.enabled=false",
    "logger.progress_bar=false",
)
TRACK_V0 = {  # the chunking every export records: conf/family/wantrack_480p.yaml, Track-v0's own
    "chunk_frames": 3,
    "sink_chunks": 1,
    "window_chunks": None,
    "first_chunk_frames": 1,
    "window_frames": 2,
    "first_chunk_sampled": True,
    "steps": 4,
    "shift": 6.0,
}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wantrack_training")
    write_wantrack_bundle(root / "teacher", role="teacher", size=SIZE)
    write_wantrack_bundle(root / "Track-v0", role="student", size=SIZE, seed=1)
    g = np.random.default_rng(0)
    H, W = SIZE
    np.save(root / "tracks.npy", (g.uniform(0, 1, (121, 6, 2)) * [W - 1, H - 1]).astype(np.float32))
    cv2.imwrite(str(root / "first.png"), g.integers(0, 255, (H, W, 3), dtype=np.uint8))
    return root


def _train(run: str, root: Path, *shrink: str) -> tuple[dict, dict]:
    """The page's line for ``run`` as written, shrunk by ``shrink``: its results and its export's conventions."""
    variables = dict(D=root / "data", R=root / "runs", TEACHER=root / "teacher", TRACKV0=root / "Track-v0")
    run_documented(WANTRACK_TRAINING[run], root, *SHRINK, *shrink, variables=variables)
    out = root / "runs" / run
    results = json.loads((out / "results.json").read_text())
    meta = json.loads((Path(results["export"]) / "network.json").read_text())
    config = (out / "config.yaml").read_text()
    assert "window_frames: 2" in config and "first_chunk_sampled: true" in config and "num_frames: 121" in config
    return results, meta


def _streams(export: str, root: Path) -> None:
    """The export streams through the engine: generate in this process, two chunks (1 + 3 latents)."""
    from trackstream.stream.generate import main

    out = root / f"{Path(export).parents[1].name}.mp4"
    argv = ["--student", export, "--codec-name", "wan2.1-vae", "--codec", str(root / "teacher" / "vae")]
    argv += ["--image", str(root / "first.png"), "--tracks", str(root / "tracks.npy"), "--prompt", "a cat"]
    assert main([*argv, "--chunks", "2", "--fit", "resize", "--out", str(out)]) == 0
    assert out.stat().st_size > 0


@pytest.mark.slow
def test_dmd_lora_and_rl_continue_from_track_v0_and_their_exports_stream(bundles):
    root = bundles
    grid = [1.0, 6 * 0.75 / (1 + 5 * 0.75), 6 * 0.5 / (1 + 5 * 0.5), 6 * 0.25 / (1 + 5 * 0.25)]  # the shift-6 grid

    res, meta = _train("dmd_trackv0", root, "stage.update_ratio=1", "trainer.max_steps=1")
    assert (res["generator_updates"], res["critic_updates"]) == (1, 1)
    assert meta["conventions"]["causal"] == TRACK_V0  # no sigma_list: the grid it trained on
    assert meta["model"]["track_convention"] == "fastvideo" and meta["model"]["track_bias"]
    assert (meta["conventions"]["height"], meta["conventions"]["width"]) == SIZE
    run_documented(WANTRACK_STREAM, root, variables=dict(R=root / "runs", TEACHER=root / "teacher"))
    assert (root / "dmd_trackv0.mp4").stat().st_size > 0

    res, meta = _train("dmd_trackv0_lora", root, "model.lora.rank=4", "stage.update_ratio=1", "trainer.max_steps=1")
    assert (res["generator_updates"], res["critic_updates"]) == (1, 1)
    assert meta["conventions"]["causal"] == TRACK_V0 and meta["model"]["lora"]["rank"] == 0  # merged at export
    assert (Path(res["export"]) / "adapter").is_dir()
    _streams(res["export"], root)

    res, meta = _train("rl_trackv0", root, "stage.group_size=2", "trainer.max_steps=1")
    assert res["policy_updates"] == 1
    levels = meta["conventions"]["causal"].pop("sigma_list")  # Track-v0's own inference levels, kept
    assert meta["conventions"]["causal"] == TRACK_V0
    np.testing.assert_allclose(levels, fastvideo_sigmas(6.0), rtol=1e-6)
    assert not np.allclose(levels, grid, atol=1e-3)
    rows = [json.loads(x) for x in (root / "runs" / "rl_trackv0" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["train/rl/reward_motion"]) for r in rows if "train/rl/reward_motion" in r)
    _streams(res["export"], root)


@pytest.mark.slow
def test_the_trackwan_teacher_fine_tunes_from_its_bundle(bundles):
    """The page's teacher line as written: our teacher stage from the bundle's weights (its folded, biased track
    head, 52 input channels), at Track-v0's 121 frames, with the bundle's umT5, CLIP + image processor and VAE;
    shrunk to the bundle's DiT sizes and pixels, one step on the synthetic world's clips."""
    from trackstream.models.motion_wan import load_network

    root = bundles
    variables = dict(D=root / "data", R=root / "runs", TEACHER=root / "teacher")
    sizes = [f"+model.overrides.{k}={v}" for k, v in (("dim", 64), ("num_heads", 2), ("ffn_dim", 128))]
    sizes += ["+model.overrides.num_layers=2", "+model.overrides.text_dim=16", "data.height=64", "data.width=112"]
    shrink = ["data=synthetic", "data.eval_shards=null", "eval.enabled=false", "trainer.max_steps=1"]
    shrink += ["trainer.global_batch=1", "trainer.num_threads=1", "logger.wandb.enabled=false"]
    run_documented(WANTRACK_TRAINING["teacher_trackwan"], root, *shrink, *sizes, variables=variables)
    out = root / "runs" / "teacher_trackwan"
    config = (out / "config.yaml").read_text()
    assert "num_frames: 121" in config and "track_convention: fastvideo" in config
    # the line names none of the bundle's parts: the stage took its VAE, umT5 and CLIP from model.init_from's bundle
    typed = yaml.safe_load(config)
    assert typed["codec"]["checkpoint"].endswith("/vae") and typed["codec"]["name"] == "wan2.1-vae"
    assert typed["model"]["text_encoder_path"].endswith("/text_encoder")
    assert typed["model"]["image_encoder_path"].endswith("/image_encoder")
    export = load_network(out / "export" / "teacher")
    meta = json.loads((out / "export" / "teacher" / "network.json").read_text())["model"]
    assert meta["track_bias"] and meta["image_processor"].endswith("image_processor")
    assert export.dit.in_dim == 52 and export.track_encoder.head.proj.bias is not None
