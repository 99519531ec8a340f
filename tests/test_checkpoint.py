"""Checkpoint adapters: official file / sharded / folder, diffusers folder, round trips, errors."""

import json

import pytest
import torch
from safetensors.torch import save_file

from trackstream.models.flavors import build_wan, flavor_config
from trackstream.models.formats.checkpoint import read_state_dict
from trackstream.models.formats.wan_formats import CheckpointError, diffusers_to_official, official_to_diffusers
from trackstream.models.wan_io import load_wan, save_wan


def _rand(model):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    return model


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("flavor", ["tiny", "tiny-i2v"])
def test_round_trip_official_ours_diffusers_ours(tmp_path, flavor):
    model = _rand(build_wan(flavor))
    # "official" on disk: a single safetensors file with the official config.json
    off = save_wan(model, tmp_path / "official")
    assert json.loads((off / "config.json").read_text())["_class_name"] == "WanModel"
    ours = load_wan(off)
    dif = save_wan(ours, tmp_path / "diffusers", fmt="diffusers")
    cfg = json.loads((dif / "config.json").read_text())
    assert cfg["_class_name"] == "WanTransformer3DModel"
    back = load_wan(dif)
    assert _same(model, ours) and _same(model, back)
    assert back.config() == model.config()


def test_diffusers_folder_loads_into_diffusers_class(tmp_path):
    """Our diffusers export is readable by diffusers itself (strict)."""
    from diffusers import WanTransformer3DModel

    model = _rand(build_wan("tiny-i2v", text_len=512))
    dif = save_wan(model, tmp_path / "pipe" / "transformer", fmt="diffusers")
    theirs = WanTransformer3DModel.from_pretrained(str(dif))
    assert set(theirs.state_dict()) == set(official_to_diffusers(model.state_dict()))
    # and a pipeline root (transformer/ inside) is resolved by our loader
    assert _same(load_wan(tmp_path / "pipe"), model)


def test_sharded_index_and_pth(tmp_path):
    model = _rand(build_wan("tiny"))
    out = save_wan(model, tmp_path / "sharded", max_shard_bytes=200_000)
    shards = sorted(out.glob("diffusion_pytorch_model-*-of-*.safetensors"))
    assert len(shards) > 1 and (out / "diffusion_pytorch_model.safetensors.index.json").exists()
    assert _same(load_wan(out), model)
    assert _same(load_wan(out / "diffusion_pytorch_model.safetensors.index.json"), model)
    # a bare .pth with wrapper prefixes and no config: config from the flavor registry
    torch.save({f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}, tmp_path / "m.pth")
    assert _same(load_wan(tmp_path / "m.pth", config=flavor_config("tiny")), model)
    torch.save({"generator_ema": model.state_dict(), "step": 3}, tmp_path / "train.pt")
    assert _same(load_wan(tmp_path / "train.pt", config=flavor_config("tiny"), subkey="generator_ema"), model)
    with pytest.raises(CheckpointError, match="subkey"):
        load_wan(tmp_path / "train.pt", config=flavor_config("tiny"))


def test_wrong_checkpoint_errors(tmp_path):
    model = _rand(build_wan("tiny"))
    sd = model.state_dict()
    # a missing block and an extra key, official format
    bad = {k: v for k, v in sd.items() if not k.startswith("blocks.1.")}
    bad["blocks.0.self_attn.extra.weight"] = torch.zeros(1)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_wan(tmp_path / "bad.safetensors", config=flavor_config("tiny"))
    msg = str(err.value)
    assert "detected format: official" in msg and "blocks.1.cross_attn.k.bias" in msg and "extra" in msg
    # the right keys for another flavor: shape mismatch reported
    save_file(official_to_diffusers(sd), str(tmp_path / "d.safetensors"))
    with pytest.raises(CheckpointError, match=r"(?s)detected format: diffusers.*shape mismatches: blocks.0.ffn.0.bias"):
        load_wan(tmp_path / "d.safetensors", config=flavor_config("tiny", ffn_dim=256))
    # not a Wan checkpoint at all
    save_file({"foo.weight": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointError, match="cannot tell the format"):
        load_wan(tmp_path / "x.safetensors", config=flavor_config("tiny"))
    with pytest.raises(CheckpointError, match="no config.json"):
        load_wan(tmp_path / "d.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope")


def test_diffusers_ignored_key_and_unmapped(tmp_path):
    sd = official_to_diffusers(_rand(build_wan("tiny-i2v")).state_dict())
    sd["blocks.0.attn2.norm_added_q.weight"] = torch.ones(128)  # diffusers itself ignores it
    assert "blocks.0.attn2.norm_added_q.weight" not in diffusers_to_official(sd)
    sd["blocks.0.attn2.mystery.weight"] = torch.ones(1)
    save_file(sd, str(tmp_path / "d.safetensors"))
    with pytest.raises(CheckpointError, match="mystery"):
        load_wan(tmp_path / "d.safetensors", config=flavor_config("tiny-i2v"))
