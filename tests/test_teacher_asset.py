"""The shipped tiny teacher (assets/tiny-teacher): intact (its files against its manifest, the recipe it records),
its manifest's figures. That it follows tracks on held-out clips and that its release command reproduces it are the
lab's tests (lab/tests/test_shipped_quality.py, lab/tests/test_teacher_release.py): the lab ships it."""

from pathlib import Path

from trackstream.pipeline.releases import ASSET_DIR, verify_asset

ROOT = Path(__file__).resolve().parents[1]


# the training command's module as manifests recorded it over time; today's is trackstream.train
RECORDED_MODULES = ("train", "trackstream.train", "trackstream.stages")


def _manifest() -> dict:
    return verify_asset(ASSET_DIR)


def test_the_shipped_teacher_is_intact():
    m = _manifest()
    from trackstream.pipeline.presets import RELEASE_FINETUNE, RELEASE_RECIPE

    # what --sizes scratch trains: the base recipe, then (a fine-tune of that release) the placements fine-tune
    runs = [m["fine_tuned_from"]["release"], m] if "fine_tuned_from" in m else [m]
    for run, recipe in zip(runs, (RELEASE_RECIPE, RELEASE_FINETUNE)):
        cmd = run["command"].split()
        assert run["steps"] and run["git_commit"] and cmd[2] in RECORDED_MODULES  # as run at its commit
        assert tuple(a for a in cmd[3:] if not a.startswith(("hydra.", "model.init_from="))) == recipe, cmd
    # a fine-tune fits no codec: it keeps the one its base release fitted (that release's first codec losses)
    codec_losses = 0 if "fine_tuned_from" in m else 20
    assert len(m["first_losses"]["teacher"]) == 20 and len(m["first_losses"]["codec"]) == codec_losses
    assert m["bytes"] <= 20 * 2**20
    for key in ("epe_with_tracks", "epe_without_tracks", "epe_frozen_video", "psnr_with_tracks", "ssim_with_tracks"):
        assert key in m["held_out"], key
