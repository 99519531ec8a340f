"""A distillation network's starting weights (``trainer.weights.load_student``): the teacher itself, an
exported folder, or a Wan checkpoint -- into the teacher's network, or into a network of another flavor
(a 14B teacher, a 1.3B student) that keeps the teacher's track head and text projection."""

from dataclasses import asdict

import pytest
import torch

from trackstream.models.flavors import build_wan
from trackstream.models.motion_wan import ModelConfig, build_motion_wan, save_network
from trackstream.models.wan_io import save_wan
from trackstream.trainer.weights import load_student

SMALL = dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_len=32)
WIDE = dict(dim=96, ffn_dim=192, num_heads=3, num_layers=3, text_len=32)
TEXT_DIM = 4096


def _model(flavor: str, overrides: dict, **kw) -> ModelConfig:
    return ModelConfig(flavor=flavor, layout="fun_control", text_encoder="umt5", overrides=overrides, **kw)


def _export(folder, cfg: ModelConfig, seed: int):
    torch.manual_seed(seed)
    net = build_motion_wan(cfg, text_encoder_dim=TEXT_DIM, device="cpu")
    save_network(net.state_dict(), folder, model_cfg=asdict(cfg), text_encoder_dim=TEXT_DIM, ema=False)
    return net


@pytest.fixture
def teacher_14b(tmp_path):
    cfg = _model("wan2.1-fun-14b-control", WIDE)
    return tmp_path / "teacher", _export(tmp_path / "teacher", cfg, seed=0)


def test_a_checkpoint_of_another_flavor_gets_its_own_dit_and_the_teachers_heads(teacher_14b, tmp_path):
    folder, teacher = teacher_14b
    torch.manual_seed(1)
    release = build_wan("wan2.1-fun-1.3b-control", device="cpu", **SMALL)  # a Fun-1.3B-Control release's DiT
    save_wan(release, tmp_path / "Wan2.1-Fun-1.3B-Control")
    student_cfg = _model("wan2.1-fun-1.3b-control", SMALL)
    net, model = load_student(str(tmp_path / "Wan2.1-Fun-1.3B-Control"), folder, model=student_cfg)
    assert model["flavor"] == "wan2.1-fun-1.3b-control" and model["overrides"] == SMALL
    assert model["track_embed_dim"] == teacher.track_embed_dim and model["init_from"] is None
    for k, v in release.state_dict().items():
        torch.testing.assert_close(net.dit.state_dict()[k], v, rtol=0, atol=0)
    heads = {k: v for k, v in teacher.state_dict().items() if not k.startswith("dit.")}
    assert heads and all(torch.equal(net.state_dict()[k], v) for k, v in heads.items())


def test_no_starting_weights_starts_the_student_as_the_teacher_and_says_the_flavor_is_unused(teacher_14b, caplog):
    folder, _ = teacher_14b
    with caplog.at_level("WARNING", logger="trackstream.trainer.weights"):
        net, model = load_student(None, folder, model=_model("wan2.1-fun-1.3b-control", SMALL))
    assert model["flavor"] == "wan2.1-fun-14b-control" and net.dit.dim == 96
    assert "model.flavor=wan2.1-fun-1.3b-control is unused" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="trackstream.trainer.weights"):
        net, model = load_student(None, folder, model=_model("wan2.1-fun-14b-control", {}))  # same flavor
    assert model["flavor"] == "wan2.1-fun-14b-control" and net.dit.dim == 96 and not caplog.text


def test_an_export_that_reads_the_conditions_differently_is_refused(teacher_14b, tmp_path):
    folder, _ = teacher_14b
    other = _model("wan2.1-fun-1.3b-control", SMALL, track_embed_dim=32)
    _export(tmp_path / "other", other, seed=2)
    with pytest.raises(ValueError, match=r"stage.critic=.* differs from the teacher in track_embed_dim"):
        load_student(str(tmp_path / "other"), folder, model=other, field="stage.critic")
    fine = _model("wan2.1-fun-1.3b-control", SMALL)
    _export(tmp_path / "fine", fine, seed=3)
    net, model = load_student(str(tmp_path / "fine"), folder, model=fine)
    assert model["flavor"] == "wan2.1-fun-1.3b-control" and net.dit.dim == 64


def test_a_recipe_that_expects_another_teacher_is_refused_before_loading(teacher_14b):
    from trackstream.train.exports import NetworkExport

    folder, _ = teacher_14b
    tiny = _model("tiny", {})
    with pytest.raises(ValueError, match=r"is a 'wan2.1-fun-14b-control' network but this recipe distils from a"):
        NetworkExport(folder).check_teacher_of(tiny.text_encoder, flavor="wan2.1-fun-1.3b-control")
    small = _model("wan2.1-fun-1.3b-control", SMALL)
    # the flavor the recipe names: no complaint
    NetworkExport(folder).check_teacher_of(small.text_encoder, flavor="wan2.1-fun-14b-control")
