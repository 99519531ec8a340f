"""A codec has one name (the registry's, ``wan2.1-vae``) on every path, and its weights may be a file, a Wan
release folder or a TrackStream release folder wherever a codec is named (``models.codecs.codec_checkpoint``)."""

from pathlib import Path

import pytest
import torch

from trackstream.models.codecs import build_codec, codec_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "assets" / "tiny-teacher"
STUDENT = ROOT / "assets" / "tiny-student" / "student"


def test_a_trackstream_release_folder_is_its_codec_pt():
    assert codec_checkpoint("tiny-ae", TEACHER) == str(TEACHER / "codec.pt")
    a, b = build_codec("tiny-ae", checkpoint=str(TEACHER)), build_codec("tiny-ae", checkpoint=str(TEACHER / "codec.pt"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="is a release whose codec is 'tiny-ae' .*name the codec tiny-ae") as err:
        codec_checkpoint("wan2.1-vae", TEACHER, field="--codec")
    assert str(err.value).startswith("--codec=") and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="is a release without codec.pt"):
        codec_checkpoint("tiny-ae", STUDENT.parent)


def test_a_wan_release_folder_holds_only_a_wan_vae(tmp_path):
    (tmp_path / "Wan2.1_VAE.pth").write_bytes(b"")  # never read: the name decides first
    with pytest.raises(ValueError, match="is a Wan release folder, which holds a Wan VAE, not 'taehv-wan2.1'"):
        codec_checkpoint("taehv-wan2.1", tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        codec_checkpoint("tiny-ae", tmp_path / "nowhere")


def test_the_demo_takes_a_release_folder_as_its_codec():
    from trackstream.models.network import Network
    from trackstream.stream.demo.session import DemoModel

    # --codec <a release folder> (no --codec-name: the student's own codec name), as the demo's flags resolve it
    codec = Network.open(STUDENT, "--student").codec_for(checkpoint=str(TEACHER))
    assert (codec.name, codec.checkpoint) == ("tiny-ae", str(TEACHER / "codec.pt"))
    model = DemoModel(STUDENT, codec, num_scenes=1, device="cpu")
    assert model.height > 0


def test_an_old_codec_group_name_is_one_line_naming_the_new_one(monkeypatch, capsys):
    import sys

    from trackstream.train.app import main

    monkeypatch.setattr(sys, "argv", ["train", "experiment=tiny_teacher", "codec=wan2.1_vae"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: codec='wan2.1_vae' is not a codec name; it is spelled wan2.1-vae")


def test_eval_takes_the_codec_as_train_does():
    from trackstream.eval.generate import GenerateConfig

    cfg = GenerateConfig(codec={"name": "tiny-ae", "checkpoint": str(TEACHER)})
    assert (cfg.codec.name, cfg.codec.checkpoint) == ("tiny-ae", str(TEACHER))
    with pytest.raises(ValueError, match=r"write generate.codec.checkpoint=x.pt \(and generate.codec.name\)"):
        GenerateConfig(codec="x.pt")
    with pytest.raises(ValueError, match="generate.codec.name='taehv' is not a codec name; it is spelled taehv-wan2.1"):
        GenerateConfig(codec={"name": "taehv"})


def test_eval_names_the_codec_node_for_a_flat_key(monkeypatch, capsys):
    import sys

    from trackstream.eval.__main__ import entry

    monkeypatch.setattr(sys, "argv", ["eval", "run=x", "generate.codec_name=wan2.1-vae"])
    with pytest.raises(SystemExit) as exit_:
        entry()
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().endswith("write generate.codec.name=wan2.1-vae")
