"""LoRA through PEFT (trackstream/models/lora.py): merged = base + adapter, the trainable count as
configured, PEFT's folder format read back by PEFT itself, a teacher fine-tune and a DMD stage trained as
LoRA, exported merged (and to diffusers), the adapter loaded onto its base, and an exact resume."""

import copy
import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from test_docs_run import TINY_LORA, reader_folder, run_documented

from conftest import cli_env, stopped_at
from trackstream.models.lora import LoraConfig, add_lora, load_adapter, merge_adapter, merge_state_dict, save_adapter
from trackstream.models.motion_wan import ModelConfig, build_motion_wan, load_network

ROOT = Path(__file__).resolve().parents[1]
COMMON = [
    "debug=tiny",
    "data.num_frames=25",
    "trainer.num_threads=1",
    "eval.enabled=false",
    "logger.progress_bar=false",
]


def _net(seed=0):
    torch.manual_seed(seed)
    return build_motion_wan(ModelConfig(), text_encoder_dim=384)


def _perturb(net, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g))


def _linears(net):
    return {n: m for n, m in net.named_modules() if type(m).__name__ == "Linear" and "lora_" not in n}


def test_merged_equals_base_plus_adapter_and_counts_are_as_configured():
    base = _net()
    net = copy.deepcopy(base)
    cfg = LoraConfig(rank=4, alpha=8)
    count = add_lora(net, cfg)
    adapted = [n for n in _linears(base) if any(n.endswith("." + t) for t in cfg.targets)]
    assert count == sum(4 * (m.in_features + m.out_features) for n, m in _linears(base).items() if n in adapted)
    full = sum(p.numel() for p in base.track_encoder.parameters())
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == count + full
    x = {n: torch.randn(3, m.in_features) for n, m in _linears(base).items()}
    before = {n: net.get_submodule(n)(x[n]) for n in adapted}
    for n in adapted:  # B = 0 at the start: the adapted network computes what the base did
        torch.testing.assert_close(before[n], base.get_submodule(n)(x[n]))
    _perturb(net)
    merged = copy.deepcopy(base)
    merged.load_state_dict(merge_state_dict(net.state_dict(), cfg), strict=True)
    sd = net.state_dict()
    for n in adapted:
        a, b = sd[f"{n}.lora_A.default.weight"], sd[f"{n}.lora_B.default.weight"]
        want = base.get_submodule(n).weight + 2.0 * b @ a  # scale alpha / r = 2
        torch.testing.assert_close(merged.get_submodule(n).weight, want)
        torch.testing.assert_close(merged.get_submodule(n)(x[n]), net.get_submodule(n)(x[n]), rtol=1e-4, atol=1e-4)
    untouched = [k for k in base.state_dict() if not any(k.startswith(n + ".") for n in adapted + ["track_encoder"])]
    assert all(torch.equal(merged.state_dict()[k], base.state_dict()[k]) for k in untouched)


def test_the_adapter_folder_is_peft_s_own_and_loads_back(tmp_path):
    from peft import PeftModel

    base = _net()
    net = copy.deepcopy(base)
    cfg = LoraConfig(rank=2)
    add_lora(net, cfg)
    _perturb(net)
    save_adapter(net.state_dict(), tmp_path / "a", cfg)
    conf = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert conf["peft_type"] == "LORA" and conf["r"] == 2 and conf["modules_to_save"] == ["track_encoder"]
    peft = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "a"))  # PEFT reads it itself
    x = torch.randn(2, 5, base.dit.dim)
    q = "dit.blocks.0.self_attn.q"
    torch.testing.assert_close(peft.base_model.model.get_submodule(q)(x), net.get_submodule(q)(x))
    live = load_adapter(copy.deepcopy(base), tmp_path / "a", merge=False)  # adapters to train on
    torch.testing.assert_close(live.get_submodule(q)(x), net.get_submodule(q)(x))
    plain = load_adapter(copy.deepcopy(base), tmp_path / "a")  # merged: a plain network again
    assert type(plain.get_submodule(q)).__name__ == "Linear"
    torch.testing.assert_close(plain.get_submodule(q)(x), net.get_submodule(q)(x), rtol=1e-4, atol=1e-4)
    assert torch.equal(
        plain.track_encoder.state_dict()["head.proj.weight"], net.state_dict()["track_encoder.head.proj.weight"]
    )
    with pytest.raises(ValueError, match="not a PEFT adapter folder"):
        merge_adapter(base.state_dict(), tmp_path, field="model.adapter")
    other = build_motion_wan(ModelConfig(overrides={"dim": 64, "ffn_dim": 128}), text_encoder_dim=384)
    with pytest.raises(ValueError, match="another base"):
        merge_adapter(other.state_dict(), tmp_path / "a", field="model.adapter")
    with pytest.raises(ValueError, match=r"model.lora.targets \['attn.nope'\] name no Linear"):
        add_lora(copy.deepcopy(base), LoraConfig(rank=2, targets=["attn.nope"]))
    with pytest.raises(ValueError, match="model.lora.rank"):
        LoraConfig(rank=-1)


def _cli(run_module, *args: str) -> dict:
    run_module("trackstream.train", *COMMON, *args, timeout=300)
    run_dir = Path(next(a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")))
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow
def test_a_lora_fine_tune_freezes_its_base_exports_merged_and_resumes_exactly(
    tmp_path, run_module, tiny_teacher_run, caplog
):
    from trackstream.trainer.weights import initialise

    base = tiny_teacher_run / "export" / "teacher"
    lora = ["experiment=tiny_teacher", f"model.init_from={base}", "model.lora.rank=4", "ema.enabled=false"]
    _cli(run_module, *lora, "trainer.max_steps=4", "trainer.ckpt_every=2", f"hydra.run.dir={tmp_path / 'ft'}")
    ft = tmp_path / "ft" / "export" / "teacher"
    assert (ft / "adapter" / "adapter_config.json").is_file()
    assert json.loads((ft / "network.json").read_text())["model"]["lora"]["rank"] == 0  # the export is merged
    b, f = load_network(base).state_dict(), load_network(ft).state_dict()
    adapted = {k for k in f if any(k.endswith(f"{t}.weight") for t in LoraConfig().targets)}
    changed = {k for k in f if not torch.equal(f[k], b[k])}
    assert changed and changed <= adapted | {k for k in f if k.startswith("track_encoder.")}  # the base stayed frozen
    assert all(torch.equal(f[k], v) for k, v in merge_adapter(b, ft / "adapter").items())  # export = base + adapter

    # the adapter with its base, as a starting point: model.init_from=BASE model.adapter=FOLDER
    net = load_network(base)  # the base's architecture
    with caplog.at_level(logging.INFO, logger="trackstream.trainer.weights"):
        initialise(net, init_from=str(base), adapter=str(ft / "adapter"))
    assert all(torch.equal(net.state_dict()[k], v) for k, v in f.items())
    assert f"merged into model.init_from={base}: {len(changed)} weight tensors changed" in caplog.text  # said

    # the base's codec (its run's), read from the base as its settings are: none fitted
    assert yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())["codec"]["checkpoint"] == str(
        tiny_teacher_run / "codec" / "codec.pt"
    )
    assert not (tmp_path / "ft" / "codec").exists()
    # resumed from the step-2 checkpoint to 4: the same adapters as 4 straight
    stopped_at(tmp_path / "ft", tmp_path / "resumed", 2)
    res = _cli(
        run_module, *lora, "trainer.max_steps=4", "trainer.ckpt_every=2", f"hydra.run.dir={tmp_path / 'resumed'}"
    )
    assert res["resumed_from"].endswith("step_00000002")
    r = load_network(tmp_path / "resumed" / "export" / "teacher").state_dict()
    assert all(torch.equal(r[k], f[k]) for k in f)

    # the merged export goes to diffusers as any network does
    out = tmp_path / "diffusers"
    run_module("trackstream.cli", "export", "--network", ft, "--format", "diffusers", "--out", out, timeout=300)
    from diffusers import WanTransformer3DModel

    assert WanTransformer3DModel.from_pretrained(str(next(p.parent for p in out.rglob("config.json")))) is not None


@pytest.mark.slow
def test_dmd_trains_generator_and_critic_as_lora(tmp_path, run_module):
    from distill_helpers import tiny_teacher_run

    teacher = tiny_teacher_run(tmp_path, student="student", pairs="pairs")
    res = _cli(
        run_module,
        "experiment=tiny_dmd",
        "stage.rollout_horizons=1",
        f"stage.teacher={teacher}",
        f"stage.student={tmp_path / 'student'}",
        f"stage.pairs={tmp_path / 'pairs'}",
        "model.lora.rank=2",
        "trainer.max_steps=2",
        "stage.update_ratio=2",
        f"hydra.run.dir={tmp_path / 'dmd'}",
    )
    assert (res["generator_updates"], res["critic_updates"]) == (1, 2)
    log = (tmp_path / "dmd" / "train.log").read_text()
    assert "generator: LoRA rank 2" in log and "critic: LoRA rank 2" in log
    out = tmp_path / "dmd" / "export" / "student"
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and load_network(out) is not None


@pytest.mark.slow
@pytest.mark.multiproc
def test_lora_under_fsdp_on_two_processes_keeps_the_base_and_exports_merged(tmp_path, srun, tiny_teacher_run):
    import shutil

    base = tmp_path / "base"  # the export alone, no run around it: no codec recorded, so the stage fits one
    shutil.copytree(tiny_teacher_run / "export" / "teacher", base)
    run = tmp_path / "fsdp"
    args = [*COMMON, "experiment=tiny_teacher", "parallel=fsdp", f"model.init_from={base}", "model.lora.rank=4"]
    srun(
        2, "-m", "trackstream.train", *args, "trainer.max_steps=2", f"hydra.run.dir={run}",
        timeout=400, env=cli_env(OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert "fsdp x 2" in (run / "train.log").read_text() and "dit: LoRA rank 4" in (run / "train.log").read_text()
    assert (run / "codec" / "codec.pt").is_file()  # the codec fitted under FSDP too (gathered whole, then its stats)
    out = run / "export" / "teacher"
    b, f = load_network(base).state_dict(), load_network(out).state_dict()
    assert all(torch.equal(f[k], v) for k, v in merge_adapter(b, out / "adapter").items())
    changed = {k for k in f if not torch.equal(f[k], b[k])}
    adapted = {k for k in f if any(k.endswith(f"{t}.weight") for t in LoraConfig().targets)}
    assert changed and changed <= adapted | {k for k in f if k.startswith("track_encoder.")}


@pytest.mark.slow
def test_a_fine_tune_of_the_shipped_teacher_takes_its_codec_instead_of_fitting_one(tmp_path):
    """docs/recipes.md's tiny LoRA line, as written (one step on a small pool: overrides after its own):
    model.init_from names the shipped teacher, no codec.checkpoint; the run reads the release's codec (no fit),
    records it in its config.yaml, and says where its settings came from."""
    run = tmp_path / "ft"
    folder = reader_folder(tmp_path / "reader")
    shrink = (
        "data.pool_size=8",
        "data.batch_size=2",
        "trainer.max_steps=1",
        "trainer.num_threads=1",
        "logger.progress_bar=false",
    )
    run_documented(TINY_LORA, folder, *shrink, f"hydra.run.dir={run}")
    ran = yaml.safe_load((run / "config.yaml").read_text())  # the words after the line's own won
    assert ran["data"]["pool_size"] == 8 and ran["trainer"]["max_steps"] == 1 and ran["model"]["lora"]["rank"] == 8
    assert ran["codec"]["checkpoint"] == "assets/tiny-teacher/codec.pt" and not (run / "codec").exists()  # no fit
    said = "model.init_from=assets/tiny-teacher/teacher: settings read from assets/tiny-teacher/config.yaml"
    assert said in (run / "train.log").read_text()
