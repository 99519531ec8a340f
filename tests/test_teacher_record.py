"""A stage given a network reads its settings from it (``train.teacher_record``): the network's architecture,
text encoder and tracks (network.json), its codec, and the world, frame size, fps, track grid, number of tracks
and noise shift it was trained on (the config recorded with it), whichever folder names it (a run directory, its
export, a release folder); the command line sets the stage's own choices, and an override that contradicts the
network is refused in one line before any work."""

import shutil
import sys
from pathlib import Path

import pytest
import yaml
from hydra_helpers import stage_job
from omegaconf import OmegaConf

from conftest import cli_env, run_command
from trackstream.models.network import Network
from trackstream.train.config import validate

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "assets" / "tiny-teacher"
TF = ("experiment=tiny_teacher_forcing", "debug=tiny")


def _as_run(tmp_path: Path) -> Path:
    """The shipped teacher laid out as the run that trained it: config.yaml, export/teacher, codec/codec.pt."""
    run = tmp_path / "teacher_run"
    shutil.copytree(SHIPPED / "teacher", run / "export" / "teacher")
    (run / "codec").mkdir()
    shutil.copyfile(SHIPPED / "codec.pt", run / "codec" / "codec.pt")
    shutil.copyfile(SHIPPED / "config.yaml", run / "config.yaml")
    return run


@pytest.mark.slow
def test_the_three_layouts_give_one_record(tmp_path):
    run = _as_run(tmp_path)
    for spec, network, codec in [
        (SHIPPED, SHIPPED / "teacher", SHIPPED / "codec.pt"),
        (SHIPPED / "teacher", SHIPPED / "teacher", SHIPPED / "codec.pt"),
        (run, run / "export" / "teacher", run / "codec" / "codec.pt"),
        (run / "export" / "teacher", run / "export" / "teacher", run / "codec" / "codec.pt"),
    ]:
        found = Network.find(str(spec), "stage.teacher")
        assert (found.folder, found.codec_file) == (network, codec), spec
        assert found.config == OmegaConf.to_container(OmegaConf.load(SHIPPED / "config.yaml"), resolve=True)
    # not a recorded network: a Wan checkpoint entry, a missing path (the stage says why)
    assert Network.find(f"{SHIPPED}/teacher::generator_ema", "stage.student") is None
    assert Network.find(str(tmp_path / "missing"), "stage.teacher") is None


def test_a_student_run_records_its_teachers_codec(tmp_path):
    """A student's run names the codec it ran with (or only its teacher): that codec is its latent space."""
    run = tmp_path / "tf"
    shutil.copytree(SHIPPED / "teacher", run / "export" / "student")
    recorded = yaml.safe_load((SHIPPED / "config.yaml").read_text())
    recorded["stage"] = {"name": "teacher_forcing", "teacher": str(SHIPPED / "teacher")}
    (run / "config.yaml").write_text(yaml.safe_dump(recorded))  # codec.checkpoint null: its teacher's
    assert Network.find(str(run), "stage.teacher").codec_file == SHIPPED / "codec.pt"
    recorded["codec"]["checkpoint"] = str(SHIPPED / "codec.pt")
    (run / "config.yaml").write_text(yaml.safe_dump(recorded))
    assert Network.find(str(run / "export" / "student"), "stage.student").codec_file == SHIPPED / "codec.pt"


def test_a_folder_of_several_networks_is_refused_naming_them():
    with pytest.raises(ValueError, match=r"stage.student=.*tiny-student holds 2 networks \(dmd, student\): name one"):
        Network.find(str(ROOT / "assets" / "tiny-student"), "stage.student")


@pytest.mark.slow
def test_the_stage_reads_the_teachers_settings_from_any_of_its_folders(tmp_path):
    shipped = OmegaConf.to_container(OmegaConf.load(SHIPPED / "config.yaml"), resolve=True)
    run = _as_run(tmp_path)
    read = {}
    for spec in (SHIPPED, SHIPPED / "teacher", run, run / "export" / "teacher"):
        t = validate(stage_job(tmp_path / "tf", *TF, f"stage.teacher={spec}"))
        assert Path(t.stage.teacher).name == "teacher" and (Path(t.stage.teacher) / "network.json").is_file()
        assert t.model.overrides == shipped["model"]["overrides"] and t.model.track_splat == "bilinear"
        assert (t.model.track_channels, t.model.text_encoder) == (32, "minilm")
        assert t.codec.options == shipped["codec"]["options"]  # not debug=tiny's narrower codec
        assert t.data.world == shipped["data"]["world"] and t.data.num_tracks == shipped["data"]["num_tracks"]
        assert (t.data.height, t.data.width, t.data.fps, t.data.grid_size) == (64, 64, 16, 16)
        assert t.schedule.shift == 3.0
        assert t.data.pool_size == 16 and t.trainer.max_steps == 4  # the stage's own choices (debug=tiny)
        read[spec] = Path(t.codec.checkpoint).read_bytes()
    assert len(set(read.values())) == 1  # one codec, wherever it lies


@pytest.mark.parametrize(
    "override, field",
    [
        ("+model.overrides.dim=64", "model.overrides.dim"),
        ("++model.overrides={num_layers: 2}", "model.overrides"),
        ("model.track_channels=16", "model.track_channels"),
        ("codec=taehv-wan2.1", "codec.name"),
        ("codec.checkpoint=null", "codec.checkpoint"),
        ("data.height=32", "data.height"),
        ("++data.world.object_clips=0.5", "data.world.object_clips"),
        ("schedule.shift=5.0", "schedule.shift"),
    ],
)
@pytest.mark.slow
def test_an_override_that_contradicts_the_teacher_is_refused_in_one_line(tmp_path, override, field):
    with pytest.raises(ValueError) as err:
        stage_job(tmp_path / "tf", *TF, f"stage.teacher={SHIPPED}", override)
    said = str(err.value)
    assert said.startswith(f"{override} contradicts stage.teacher={SHIPPED}, made with {field}=") and "\n" not in said
    assert f"drop {override}" in said


@pytest.mark.slow
def test_an_override_that_agrees_with_the_teacher_is_taken(tmp_path):
    t = validate(
        stage_job(
            tmp_path / "tf",
            *TF,
            f"stage.teacher={SHIPPED}",
            "+model.overrides.num_layers=4",
            "+model.overrides.dim=128",
            "schedule.shift=3",
            f"codec.checkpoint={_as_run(tmp_path) / 'codec/codec.pt'}",
        )  # fmt: skip
    )
    assert t.model.overrides["num_layers"] == 4 and t.schedule.shift == 3.0


@pytest.mark.slow
def test_a_student_of_another_size_keeps_its_own_dit(tmp_path):
    """A stage whose network is of another flavor (a 14B teacher's 1.3B student) sets its DiT itself; the rest
    (tracks, codec, world) is still the teacher's."""
    t = validate(stage_job(tmp_path / "tf", *TF, f"stage.teacher={SHIPPED}", "model.flavor=tiny-i2v"))
    assert t.model.overrides == {"text_len": 64} and t.model.track_channels == 32 and t.schedule.shift == 3.0


@pytest.mark.slow
def test_an_export_fills_the_encoders_and_codec_it_was_trained_with_where_the_stage_names_none(tmp_path):
    """An export records the encoder folders its network ran with (network.json) and its run the pretrained codec
    (a TrackWan teacher fine-tuned from its bundle: the bundle's umT5, CLIP, image processor and VAE): a stage
    given it takes those where it names nothing that exists; what the line names is kept, a recorded folder that
    is not on this machine fills nothing."""
    import json

    run = _as_run(tmp_path)
    parts = {k: tmp_path / "bundle" / k for k in ("text_encoder", "image_encoder", "image_processor", "vae")}
    for folder in parts.values():
        folder.mkdir(parents=True)
    meta = json.loads((run / "export/teacher/network.json").read_text())
    meta["model"] |= {
        "text_encoder_path": str(parts["text_encoder"]),
        "image_encoder_path": str(parts["image_encoder"]),
    }
    meta["model"]["image_processor"] = str(tmp_path / "moved" / "image_processor")  # not here: fills nothing
    (run / "export/teacher/network.json").write_text(json.dumps(meta))
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    recorded["codec"] = {"name": "wan2.1-vae", "checkpoint": str(parts["vae"]), "options": {}}
    (run / "config.yaml").write_text(yaml.safe_dump(recorded))
    (run / "codec" / "codec.pt").unlink()  # its run fitted none: the codec is the pretrained one it names
    mine = tmp_path / "my_clip"
    mine.mkdir()
    line = (*TF, f"stage.teacher={run}", "codec=wan2.1-vae", f"model.image_encoder_path={mine}")
    t = stage_job(tmp_path / "tf", *line)
    assert t.model.text_encoder_path == str(parts["text_encoder"]) and t.codec.checkpoint == str(parts["vae"])
    assert t.model.image_encoder_path == str(mine) and t.model.get("image_processor") is None
    t = stage_job(tmp_path / "tf2", *line, f"codec.checkpoint={mine}")  # the line's codec file is kept
    assert t.codec.checkpoint == str(mine)


@pytest.mark.slow
def test_rl_reads_its_students_run(tmp_path):
    """RL is given no teacher: its student's run gives the settings (and the codec) it was made with."""
    run = tmp_path / "dmd"
    shutil.copytree(SHIPPED / "teacher", run / "export" / "student")
    recorded = yaml.safe_load((SHIPPED / "config.yaml").read_text())
    recorded["codec"]["checkpoint"] = str(SHIPPED / "codec.pt")
    (run / "config.yaml").write_text(yaml.safe_dump(recorded))
    t = validate(stage_job(tmp_path / "rl", "experiment=rl_tiny", f"stage.student={run}"))
    assert t.stage.student == str(run / "export" / "student") and t.codec.checkpoint == str(SHIPPED / "codec.pt")
    assert t.data.world == recorded["data"]["world"] and t.model.overrides == recorded["model"]["overrides"]


@pytest.mark.slow
def test_the_command_refuses_a_contradiction_before_any_work(tmp_path):
    """Through the CLI: status 2, one line naming the override, the teacher and the fix, no run directory left."""
    run = tmp_path / "refused"
    r = run_command(
        [sys.executable, "-m", "trackstream.train", "experiment=tiny_teacher_forcing", f"stage.teacher={SHIPPED}",
         "+model.overrides.dim=64", f"hydra.run.dir={run}"],
        timeout=300, env=cli_env(),
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: +model.overrides.dim=64 contradicts stage.teacher={SHIPPED}, made with model.overrides.dim=128 "
        f"({SHIPPED}/teacher/network.json): drop +model.overrides.dim=64 (the stage reads model.overrides.dim from "
        "stage.teacher) or give stage.teacher a network made with it"
    ]
    assert "Traceback" not in r.stderr and not run.exists()
