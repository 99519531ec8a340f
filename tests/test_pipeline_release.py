"""make run's teacher stage fine-tunes a release as the release was trained: its network (depth, width, track
channels and splatting), codec options, noise shift, world, frame size and clip length and its clean-context
training come from the release's config.yaml (``pipeline.stage_calls.release_settings``); the fine-tune's
own recipe (mid-frame masking, learning rate, steps) stays its own. On the shipped release these overrides
change nothing: make run composes the same fine-tune as before."""

from pathlib import Path

import yaml
from hydra_helpers import compose_job, typed
from omegaconf import OmegaConf, open_dict

from trackstream.data.command_line import hydra_value
from trackstream.pipeline.releases import ASSET_DIR
from trackstream.pipeline.stage_calls import release_settings

FINETUNE = "experiment=tiny_teacher_finetune"


def test_the_shipped_release_composes_the_same_fine_tune(tmp_path):
    world = OmegaConf.to_container(OmegaConf.load(ASSET_DIR / "config.yaml"), resolve=True)["data"]["world"]
    before = compose_job(tmp_path, FINETUNE, f"++data.world={hydra_value(world)}")
    after = compose_job(tmp_path, FINETUNE, *release_settings(ASSET_DIR))
    for key in ("model", "data", "codec", "schedule", "stage", "optim", "trainer"):
        assert OmegaConf.to_container(before[key], resolve=True) == OmegaConf.to_container(after[key], resolve=True), (
            key
        )


def test_a_deeper_objects_world_release_is_fine_tuned_as_itself(tmp_path):
    """A release trained as the objects-world teacher (4 layers, bilinear splatting, 25-frame clips, clean
    context chunks): the fine-tune builds that network on that world, or its weights would not load."""
    release = compose_job(
        tmp_path, "experiment=tiny_teacher_objects", "model.track_splat=bilinear", "+model.overrides.num_layers=4"
    )
    asset = tmp_path / "release"
    asset.mkdir()
    with open_dict(release):
        del release["hydra"]
    resolved = OmegaConf.to_container(release, resolve=True)
    (asset / "config.yaml").write_text(yaml.safe_dump(resolved))  # what a run writes: resolved, no hydra node

    t = typed(tmp_path / "run", FINETUNE, *release_settings(asset))
    assert t.model.overrides["num_layers"] == 4 and t.model.track_splat == "bilinear"
    assert t.data.num_frames == 25 and t.stage.clean_prefix_prob == 0.5
    assert t.data.world["object_clips"] == 0.25
    assert t.stage.mid_frame_mask_prob == 0.2 and t.trainer.max_steps == 40  # the fine-tune's own recipe


def test_a_release_without_a_config_adds_nothing(tmp_path):
    assert release_settings(Path(tmp_path)) == []


def test_scratch_trains_the_shipped_release_recipe(tmp_path):
    """--sizes scratch trains the teacher the shipped release was trained as (its manifest's command,
    tests/test_teacher_asset.py), so make run's later stages meet the network and world they expect."""
    from trackstream.pipeline.presets import RELEASE_RECIPE, SCRATCH

    assert SCRATCH.teacher_from == "scratch" and SCRATCH.dmd_from == "ode_init"
    t = typed(tmp_path / "run", *RELEASE_RECIPE, *SCRATCH.teacher)
    release = OmegaConf.load(ASSET_DIR / "config.yaml")
    assert t.model.overrides["num_layers"] == release.model.overrides.num_layers == 4
    assert t.model.track_splat == release.model.track_splat and t.data.num_frames == release.data.num_frames
    assert t.data.world["object_clips"] == release.data.world.object_clips
