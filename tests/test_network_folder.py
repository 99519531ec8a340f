"""``models.network.Network``: any folder a user names for a network (a release folder, its export, a run directory,
its export) opens to the same export and the codec of its latent space; a release finds its codec through its
manifest only where the file's sha256 matches; encoder folders and a codec recorded in network.json relative to it
go with the export when both are moved."""

import json
import shutil
from pathlib import Path

import pytest
from test_teacher_record import _as_run

from trackstream.models.motion_wan import load_network, save_network
from trackstream.models.network import CodecRef, Network, NotANetwork

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "assets" / "tiny-teacher"
STUDENT = ROOT / "assets" / "tiny-student"


@pytest.mark.slow
def test_the_four_layouts_open_to_the_same_network_and_codec(tmp_path):
    run = _as_run(tmp_path)
    codec_bytes = (TEACHER / "codec.pt").read_bytes()
    for spec, folder, home, codec in [
        (TEACHER, TEACHER / "teacher", TEACHER, TEACHER / "codec.pt"),
        (TEACHER / "teacher", TEACHER / "teacher", TEACHER, TEACHER / "codec.pt"),
        (run, run / "export" / "teacher", run, run / "codec" / "codec.pt"),
        (run / "export" / "teacher", run / "export" / "teacher", run, run / "codec" / "codec.pt"),
    ]:
        net = Network.open(spec, "stage.teacher")
        assert (net.folder, net.home, net.codec_file, net.config_path) == (folder, home, codec, home / "config.yaml")
        assert net.codec == CodecRef("tiny-ae", str(codec)) and Path(net.codec.checkpoint).read_bytes() == codec_bytes
        assert net.codec_for() == net.codec and net.recorded("data.source") == "synthetic" and not net.bundle
        assert (net.model.flavor, net.text_dim, net.conventions.schedule_shift) == ("tiny", 384, 3.0)
        assert Network.of(net) is net and Network.of(spec, "stage.teacher") == net
    with pytest.raises(NotANetwork) as err:  # a folder holding no network: one line naming the field and the fix
        Network.open(tmp_path / "teacher_run" / "codec", "--student")
    said = str(err.value)
    assert said.startswith(f"--student={str(tmp_path / 'teacher_run' / 'codec')!r} is not a network folder: give a ")
    assert "\n" not in said and isinstance(err.value, ValueError)


def test_the_shipped_students_codec_is_its_manifests_when_the_file_matches(tmp_path):
    shipped = Network.open(STUDENT / "student", "--student")
    assert shipped.codec == CodecRef("tiny-ae", str(TEACHER / "codec.pt"))  # assets/tiny-teacher/codec.pt
    copy = tmp_path / "tiny-student"  # the release laid out elsewhere, the teacher release's codec beside it
    shutil.copytree(STUDENT / "student", copy / "student")
    for name in ("manifest.json", "config.yaml"):
        shutil.copyfile(STUDENT / name, copy / name)
    (tmp_path / "tiny-teacher").mkdir()
    shutil.copyfile(TEACHER / "codec.pt", tmp_path / "tiny-teacher" / "codec.pt")
    assert Network.open(copy / "student").codec == CodecRef("tiny-ae", str(tmp_path / "tiny-teacher" / "codec.pt"))
    data = bytearray((tmp_path / "tiny-teacher" / "codec.pt").read_bytes())
    data[-1] ^= 0xFF  # another file under the manifest's name: not the codec it records
    (tmp_path / "tiny-teacher" / "codec.pt").write_bytes(bytes(data))
    altered = Network.open(copy / "student")
    assert altered.codec_file is None and altered.codec is None and altered.codec_name == "tiny-ae"
    with pytest.raises(ValueError, match=r"^no codec is recorded with .*: give --codec=<the codec it works in>"):
        altered.codec_for(field="--codec")


def test_encoder_folders_and_codec_recorded_relative_to_the_export_move_with_it(tmp_path):
    net = load_network(TEACHER / "teacher")
    meta = json.loads((TEACHER / "teacher" / "network.json").read_text())
    a = tmp_path / "a"
    (a / "encoder").mkdir(parents=True)
    (a / "encoder" / "config.json").write_text("{}")  # a stand-in for the text encoder's folder: never loaded here
    (a / "weights").mkdir()
    shutil.copyfile(TEACHER / "codec.pt", a / "weights" / "codec.pt")
    save_network(
        net.state_dict(),
        a / "net",
        model_cfg={**meta["model"], "text_encoder_path": str(a / "encoder")},
        text_encoder_dim=meta["text_encoder_dim"],
        ema=meta["ema"],
        conventions=meta["conventions"],
        codec={"name": "tiny-ae", "checkpoint": a / "weights" / "codec.pt"},
    )
    written = json.loads((a / "net" / "network.json").read_text())
    assert written["model"]["text_encoder_path"] == "../encoder"
    assert written["codec"] == {"name": "tiny-ae", "checkpoint": "../weights/codec.pt"}
    assert written["written_at"] == str((a / "net").resolve())

    def parts(folder: Path) -> tuple[str, CodecRef | None]:
        opened = Network.open(folder)
        return opened.meta["model"]["text_encoder_path"], opened.codec

    assert parts(a / "net") == (str(a / "encoder"), CodecRef("tiny-ae", str(a / "weights" / "codec.pt")))
    shutil.copytree(a / "net", tmp_path / "alone" / "net")  # the export alone: its parts where it was written
    assert parts(tmp_path / "alone" / "net") == parts(a / "net")
    b = tmp_path / "b"
    a.rename(b)  # the export and its parts moved together: read beside it
    assert parts(b / "net") == (str(b / "encoder"), CodecRef("tiny-ae", str(b / "weights" / "codec.pt")))
