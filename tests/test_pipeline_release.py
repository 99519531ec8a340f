"""make run's teacher stage fine-tunes a release as the release was trained: given the release's network
(``model.init_from``), the stage reads its network (depth, width, track channels and splatting), codec, noise
shift, world and frame size from the record beside it (``train.teacher_record``); the fine-tune's own recipe
(mid-frame masking, learning rate, steps, clip length, clean-context training) stays its own. On the shipped
release this changes nothing but the world: make run composes the same fine-tune as before."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from hydra_helpers import compose_job, stage_job
from omegaconf import OmegaConf, open_dict

from trackstream.models.motion_wan import ModelConfig
from trackstream.pipeline.releases import ASSET_DIR
from trackstream.train.config import validate

FINETUNE = "experiment=tiny_teacher_finetune"


def _plain(cfg, key):
    return OmegaConf.to_container(cfg[key], resolve=True)


@pytest.mark.slow
def test_the_shipped_release_composes_the_same_fine_tune(tmp_path):
    release = OmegaConf.to_container(OmegaConf.load(ASSET_DIR / "config.yaml"), resolve=True)
    before = compose_job(tmp_path, FINETUNE)
    with open_dict(before):
        before.data.world = release["data"]["world"]
    after = stage_job(tmp_path, FINETUNE, f"model.init_from={ASSET_DIR / 'teacher'}")
    for key in ("data", "schedule", "stage", "optim", "trainer"):
        assert _plain(before, key) == _plain(after, key), key
    assert {**_plain(before, "model"), "init_from": None} == {**_plain(after, "model"), "init_from": None}
    assert _plain(after, "codec") == {**_plain(before, "codec"), "checkpoint": str(ASSET_DIR / "codec.pt")}


def _release(tmp_path: Path, *recipe: str) -> Path:
    """A release folder as lab.ship_teacher lays it out: config.yaml (resolved, no hydra node), teacher/ with the
    network's network.json."""
    composed = compose_job(tmp_path, *recipe)
    with open_dict(composed):
        del composed["hydra"]
    resolved = OmegaConf.to_container(composed, resolve=True)
    asset = tmp_path / "release"
    (asset / "teacher").mkdir(parents=True)
    (asset / "config.yaml").write_text(yaml.safe_dump(resolved))
    model = asdict(ModelConfig(**{**resolved["model"], "lora": {}}))
    (asset / "teacher" / "network.json").write_text(json.dumps({"model": model, "text_encoder_dim": 384}))
    return asset


@pytest.mark.slow
def test_a_deeper_objects_world_release_is_fine_tuned_as_itself(tmp_path):
    """A release trained as the objects-world teacher (4 layers, bilinear splatting, 25-frame clips, clean
    context chunks): the fine-tune builds that network on that world, or its weights would not load."""
    asset = _release(
        tmp_path, "experiment=tiny_teacher_objects", "model.track_splat=bilinear", "+model.overrides.num_layers=4"
    )
    t = validate(stage_job(tmp_path / "run", "experiment=tiny_teacher", f"model.init_from={asset}"))
    assert t.model.init_from == str(asset / "teacher")  # the release folder names its network
    assert t.model.overrides["num_layers"] == 4 and t.model.track_splat == "bilinear"
    assert t.data.world["object_clips"] == 0.25
    assert t.trainer.max_steps == 1500 and t.data.num_frames == 17  # tiny_teacher's own recipe
    t = validate(stage_job(tmp_path / "run", FINETUNE, f"model.init_from={asset}"))
    assert t.data.num_frames == 25 and t.stage.clean_prefix_prob == 0.5  # the fine-tune's recipe (the release's)
    assert t.stage.mid_frame_mask_prob == 0.2 and t.trainer.max_steps == 40


@pytest.mark.slow
def test_a_fine_tune_may_move_its_network_to_other_data_not_to_another_network(tmp_path):
    """A fine-tune's data settings are its own where the line sets them; its network's are not."""
    asset = _release(tmp_path, "experiment=tiny_teacher_objects")
    t = validate(stage_job(tmp_path / "run", FINETUNE, f"model.init_from={asset}", "data.world.object_clips=0.5"))
    assert t.data.world["object_clips"] == 0.5 and t.data.world["objects"]["num_sprites"] == [2, 3]
    try:
        stage_job(tmp_path / "run", FINETUNE, f"model.init_from={asset}", "model.track_channels=8")
    except ValueError as err:
        assert str(err).startswith("model.track_channels=8 contradicts model.init_from=") and "\n" not in str(err)
    else:
        raise AssertionError("another network was not refused")


@pytest.mark.slow
def test_scratch_trains_the_shipped_release_recipe(tmp_path):
    """--sizes scratch trains the teacher the shipped release was trained as (its manifest's command,
    tests/test_teacher_asset.py), so make run's later stages meet the network and world they expect."""
    from hydra_helpers import typed

    from trackstream.pipeline.presets import RELEASE_RECIPE, SCRATCH

    assert SCRATCH.teacher_from == "scratch" and SCRATCH.dmd_from == "ode_init"
    t = typed(tmp_path / "run", *RELEASE_RECIPE, *SCRATCH.teacher)
    release = OmegaConf.load(ASSET_DIR / "config.yaml")
    assert t.model.overrides["num_layers"] == release.model.overrides.num_layers == 4
    assert t.model.track_splat == release.model.track_splat and t.data.num_frames == release.data.num_frames
    assert t.data.world["object_clips"] == release.data.world.object_clips
