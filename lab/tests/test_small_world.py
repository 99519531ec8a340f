"""The small world model's recipe and its device chain driver (lab/small_world.py): the small_* experiments
compose on model=small and a world with still cameras; packs split, chunk and fall back within the device's
limits; the driver refuses what it cannot run in one line. The chain itself, rehearsed at shrunk widths:
lab/tests/test_small_world_chain.py."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from hydra_helpers import typed
from omegaconf import OmegaConf
from test_docs_run import MINILM, run_documented

from lab.scaling_probe import parse_size, plot, size_overrides
from lab.small_world import main
from lab.small_world_state import pack, progress, unpack

ROOT = Path(__file__).resolve().parents[2]

EXPERIMENTS = ("small_teacher", "small_ode_init", "small_dmd", "small_rl")


def test_the_small_experiments_compose_on_one_model_size_and_a_world_with_still_cameras(tmp_path):
    size = OmegaConf.load(Path(__file__).parents[2] / "conf/model/small.yaml").overrides
    cfgs = {e: typed(tmp_path, f"experiment={e}") for e in EXPERIMENTS}
    for name, t in cfgs.items():
        assert t.model.flavor == "tiny" and t.trainer.precision == "auto", name  # bf16 autocast on CUDA
        assert {k: t.model.overrides[k] for k in size} == dict(size), name  # the size lives in model/small.yaml
        assert t.model.overrides["patch_size"] == [1, 1, 1] and t.model.track_channels == 32, name
        assert t.schedule.shift == 3.0 and (t.data.height, t.data.width) == (64, 64), name
    teacher = cfgs["small_teacher"]
    world = teacher.data.world
    assert world["camera_pan_prob"] == 0.5 and world["num_sprites"][0] >= 1  # the drag scenes' still camera
    assert world["texture_scale"] == 4.0 and world["caption_motion"] is False
    assert teacher.optim.decay_steps == teacher.trainer.max_steps and teacher.trainer.log_every == 1
    assert teacher.stage.clean_first_frame and teacher.stage.correspondence_weight > 0
    assert cfgs["small_dmd"].stage.update_ratio == 5 and cfgs["small_rl"].stage.group_size >= 2
    resized = typed(tmp_path, "experiment=small_teacher", *size_overrides("4x256"))
    assert (resized.model.overrides["num_layers"], resized.model.overrides["num_heads"]) == (4, 4)


def test_probe_sizes_are_checked_and_its_json_plots_on_cpu(tmp_path):
    assert parse_size("8x384") == (8, 384)
    for bad in ("8", "8x100", "0x128", "ax128"):
        with pytest.raises(ValueError, match="LAYERSxWIDTH"):
            parse_size(bad)
    point = {"step": 10, "epe_with_tracks": 3.0, "epe_without_tracks": 9.0, "epe_ratio_with_over_without": 1 / 3}
    rec = {
        "params": 1e6,
        "seconds_per_step": 0.1,
        "max_memory_gib": 1.0,
        "points": [{**point, "psnr_with_tracks": 20.0}],
    }
    plot({"sizes": {"2x128": rec}, "device": "test"}, tmp_path)
    assert (tmp_path / "probe.png").stat().st_size > 0 and "| 2x128 | 1.0M | 0.100 |" in (
        tmp_path / "probe.md"
    ).read_text()


# ----------------------------------------------------------------------------- pack limits (no training)


def _fake_run(root: Path, big: int) -> Path:
    """A run directory whose teacher is done (a ``big``-byte export file) and whose ODE init is running
    (a 2 MiB checkpoint)."""
    teacher = root / "teacher"
    (teacher / "export/teacher/dit").mkdir(parents=True)
    (teacher / "codec").mkdir()
    (teacher / "results.json").write_text(json.dumps({"status": "done", "step": 4}))
    (teacher / "metrics.jsonl").write_text('{"step": 1, "train/loss": 1.0}\n')
    (teacher / "export/teacher/dit/weights.bin").write_bytes(os.urandom(big))
    torch.save({"w": torch.zeros(3)}, teacher / "codec/codec.pt")
    ckpt = root / "ode_init/checkpoints/step_00000002"
    ckpt.mkdir(parents=True)
    torch.save({"w": torch.randint(0, 255, (2 * 2**20,), dtype=torch.uint8)}, ckpt / "model.pt")  # the big one
    torch.save({"step": 2, "where": str(root)}, ckpt / "meta.pt")
    rows = [{"step": s, "train/loss": 1.0 / s} for s in (1, 2, 3)]
    (root / "ode_init/metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "chain.json").write_text("{}")
    return root


def test_a_pack_splits_chunks_and_falls_back_within_the_devices_limits(tmp_path):
    src = _fake_run(tmp_path / "src", big=3 * 2**19 + 5)
    meta = pack(src, tmp_path / "out", part_mib=1.0, max_mib=8.0)
    assert meta["mode"] == "exact" and meta["progress"]["stage"] == "ode_init" and meta["progress"]["step"] == 2
    assert len(meta["parts"]) <= 7 and all(b <= 1.05 * 2**20 + 2**16 for b in meta["bytes"].values())
    assert sorted(meta["chunked"]) == [
        "ode_init/checkpoints/step_00000002/model.pt",
        "teacher/export/teacher/dit/weights.bin",
    ]
    unpack(tmp_path / "moved", tmp_path / "out")
    moved = tmp_path / "moved"
    assert (moved / "teacher/export/teacher/dit/weights.bin").read_bytes() == (
        src / "teacher/export/teacher/dit/weights.bin"
    ).read_bytes()
    assert torch.load(moved / "ode_init/checkpoints/step_00000002/meta.pt")["where"] == str(moved)  # paths moved
    ckpt = "ode_init/checkpoints/step_00000002/model.pt"
    assert torch.equal(torch.load(moved / ckpt)["w"], torch.load(src / ckpt)["w"])
    assert [json.loads(x)["step"] for x in (moved / "ode_init/metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert progress(moved)["key"] == [1, 2]
    with pytest.raises(Exception, match="already at"):
        unpack(moved, tmp_path / "out")
    # over the limit: the finished stages only (the running one restarts), then logs only
    assert pack(src, tmp_path / "b", part_mib=1.0, max_mib=3.0)["mode"] == "boundary"
    logs = pack(src, tmp_path / "c", part_mib=1.0, max_mib=1.0)
    assert logs["mode"] == "logs" and unpack(tmp_path / "never", tmp_path / "c") is None


def test_finished_exports_travel_in_bf16_when_float32_is_over_the_limit(tmp_path):
    from safetensors.torch import load_file, save_file

    src = _fake_run(tmp_path / "src", big=1024)
    dit = src / "teacher/export/teacher/dit/diffusion_pytorch_model.safetensors"
    weights = {"w": torch.randn(3 * 2**18), "i": torch.arange(5)}  # 3 MiB of float32
    save_file(weights, str(dit))
    assert pack(src, tmp_path / "b", part_mib=1.0, max_mib=3.0)["mode"] == "boundary-bf16"  # 1.5 MiB in bf16
    unpack(tmp_path / "moved", tmp_path / "b")
    back = load_file(str(tmp_path / "moved/teacher/export/teacher/dit/diffusion_pytorch_model.safetensors"))
    assert back["w"].dtype == torch.bfloat16 and torch.equal(back["w"], weights["w"].bfloat16())
    assert torch.equal(back["i"], weights["i"])  # integer tensors as they were
    assert progress(tmp_path / "moved")["done"] == ["teacher"]


def test_the_driver_refuses_unknown_stages_and_other_overrides_in_one_line(tmp_path, capsys):
    assert main(["run", "--run-dir", str(tmp_path / "r"), "--stage-set", "ode:trainer.max_steps=3"]) == 2
    assert main(["run", "--run-dir", str(tmp_path / "r"), "--stop-at", "dmd"]) == 2
    (tmp_path / "r").mkdir()
    (tmp_path / "r/chain.json").write_text(json.dumps({"common": ["a=1"], "stages": {}}))
    assert main(["run", "--run-dir", str(tmp_path / "r"), "--budget-min", "0"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 3 and all(line.startswith("[small_world] error:") for line in err), err
    assert "unknown stages" in err[0] and "STAGE:STEP" in err[1] and "--set" in err[2]


@pytest.mark.slow
def test_the_pruned_minilm_encodes_the_worlds_texts_as_the_full_one_and_other_words_as_unk(tmp_path):
    """``small_world minilm`` (pruned by default) against ``--no-prune``: for ~200 world captions (both
    caption_motion variants, 0-2 sprites, still and panning cameras), drag-scene captions and the null
    text, the pruned tokenizer gives the full one's ids through the kept-id map, and the bf16 encoders
    give the same embeddings bit for bit; a word outside the world's vocabulary becomes [UNK]."""
    from transformers import AutoTokenizer

    from lab.carry_minilm import PRUNE_RECORD, write_minilm
    from trackstream.data.synthetic import SyntheticWorld
    from trackstream.eval.drag_scenes import render_scene
    from trackstream.models.text_encoders import MiniLMTextEncoder

    # docs/small-world.md's line as written, in a folder holding lab/ as the repository root does
    (tmp_path / "lab").symlink_to(ROOT / "lab")
    print(run_documented(MINILM, tmp_path).stdout)  # the measured sizes (pytest -s shows them)
    full_size = write_minilm(tmp_path / "full", prune=False)
    size = sum(p.stat().st_size for p in (tmp_path / ".minilm").iterdir())  # pruning is the default
    assert size < 24 * 2**20 and full_size > 40 * 2**20, (size, full_size)
    kept = json.loads((tmp_path / ".minilm" / PRUNE_RECORD).read_text())["original_ids"]
    full = MiniLMTextEncoder.from_pretrained(tmp_path / "full")
    pruned = MiniLMTextEncoder.from_pretrained(tmp_path / ".minilm")
    assert pruned.model.vocab_size == len(kept) < 100
    assert pruned.model.embeddings.word_embeddings.weight.shape[0] == len(kept)
    assert full.model.embeddings.word_embeddings.weight.dtype == torch.bfloat16
    assert pruned.model.embeddings.word_embeddings.weight.dtype == torch.bfloat16

    worlds = [
        SyntheticWorld(height=32, width=32, num_sprites=(1, 2), camera_pan_prob=0.5, caption_motion=True),
        SyntheticWorld(height=32, width=32, num_sprites=(1, 2), camera_pan_prob=0.5, caption_motion=False),
        SyntheticWorld(height=32, width=32, num_sprites=(0, 2), camera_pan_prob=1.0, caption_motion=True),
        SyntheticWorld(height=32, width=32, num_sprites=(1, 1), camera_pan_prob=0.0, caption_motion=True),
    ]
    texts = [w.generate(seed)["caption"] for w in worlds for seed in range(50)]
    texts += [render_scene(i)[0].caption for i in range(4)] + [""]
    assert any("empty scene" in t for t in texts) and any("pans" in t for t in texts)
    assert any("Static camera" in t for t in texts) and any("spinning" in t for t in texts)

    new_id = torch.full((full.model.vocab_size,), -1, dtype=torch.long)
    new_id[torch.tensor(kept)] = torch.arange(len(kept))
    ids_full, mask_full = full.tokenize(texts)
    ids_pruned, mask_pruned = pruned.tokenize(texts)
    assert not (ids_full == full.tokenizer.unk_token_id).any()  # the world's words are all in the vocabulary
    assert torch.equal(mask_full, mask_pruned) and torch.equal(new_id[ids_full], ids_pruned)
    vocab_only = tmp_path / "vocab-only"  # vocab.txt agrees with tokenizer.json: built from it alone, same ids
    shutil.copytree(tmp_path / ".minilm", vocab_only, ignore=shutil.ignore_patterns("tokenizer.json", "*.safetensors"))
    assert AutoTokenizer.from_pretrained(vocab_only)(texts, padding="longest", return_tensors="pt")["input_ids"].equal(
        ids_pruned
    )
    emb_full, len_full = full.encode(texts)
    emb_pruned, len_pruned = pruned.encode(texts)
    assert torch.equal(len_full, len_pruned) and torch.equal(emb_full, emb_pruned)  # exact

    ids, _ = pruned.tokenize(["A striped zebra moves to the right."])
    tokens = pruned.tokenizer.convert_ids_to_tokens(ids[0])
    assert tokens == ["[CLS]", "a", "striped", "[UNK]", "moves", "to", "the", "right", ".", "[SEP]"]
    assert "zebra" in full.tokenizer.convert_ids_to_tokens(full.tokenize(["zebra"])[0][0])
