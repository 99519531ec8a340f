"""Shipped release folders (assets/tiny-teacher, assets/tiny-student) are sha256-checked against their
manifest.json when loaded, once per process; an altered or missing file is a one-line error naming the folder
and the fix, before anything is generated."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from trackstream.models.formats import files

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def releases(tmp_path, monkeypatch):
    """Copies of both shipped folders (manifests included), and a fresh per-process record of checks."""
    monkeypatch.setattr(files, "_CHECKED", {})
    for name in ("tiny-teacher", "tiny-student"):
        shutil.copytree(ROOT / "assets" / name, tmp_path / name)
    return tmp_path


def _generate_argv(root: Path) -> list[str]:
    import cv2

    rng = np.random.default_rng(0)
    cv2.imwrite(str(root / "image.png"), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    np.save(root / "tracks.npy", (rng.random((17, 4, 2)) * 63).astype(np.float32))
    args = {
        "--student": root / "tiny-student" / "student",
        "--codec": root / "tiny-teacher" / "codec.pt",
        "--image": root / "image.png",
        "--tracks": root / "tracks.npy",
        "--out": root / "out.mp4",
        "--device": "cpu",
        "--dtype": "float32",
    }
    return [str(x) for kv in args.items() for x in kv]


def test_an_intact_release_is_checked_once_per_process(releases, monkeypatch):
    calls = []
    real = files.release_mismatches
    monkeypatch.setattr(files, "release_mismatches", lambda d, m: calls.append(Path(d).name) or real(d, m))
    student = releases / "tiny-student" / "student"
    assert files.check_shipped(student) == (releases / "tiny-student").resolve()
    assert files.check_shipped(student / "heads.pt") == (releases / "tiny-student").resolve()
    assert files.check_shipped(releases / "tiny-teacher" / "codec.pt") == (releases / "tiny-teacher").resolve()
    assert calls == ["tiny-student", "tiny-teacher"]  # each folder hashed once, however often it is loaded
    assert files.check_shipped(releases / "image-that-is-nowhere") is None  # outside a release: not checked


@pytest.mark.parametrize(
    ("folder", "target", "change"),
    [
        ("tiny-student", "student/heads.pt", "altered"),
        ("tiny-student", "student/dit/diffusion_pytorch_model.safetensors", "missing"),
        ("tiny-teacher", "codec.pt", "altered"),
    ],
)
def test_stream_generate_refuses_an_altered_release_in_one_line(releases, capsys, folder, target, change):
    from trackstream.stream.generate import main

    path = releases / folder / target
    if change == "altered":
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF  # one bit pattern flipped at the end: a file that may still load, but is not the one shipped
        path.write_bytes(bytes(data))
    else:
        path.unlink()
    with pytest.raises(SystemExit) as exit_:
        main(_generate_argv(releases))
    assert exit_.value.code == 2 and not (releases / "out.mp4").exists()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Traceback" not in line and f"release {(releases / folder).resolve()} is not intact" in line
    assert f"{change}" in line and target in line and "git checkout --" in line


def test_load_export_the_demo_and_dragstream_use_loads_only_intact_releases(releases):
    from trackstream.models.network import CodecRef, Network

    (releases / "tiny-student" / "student" / "network.json").write_text('{"edited": true}\n')
    with pytest.raises(ValueError, match=r"is not intact: altered .*network\.json"):
        Network.open(releases / "tiny-student" / "student").for_inference(
            codec=CodecRef("tiny-ae", str(releases / "tiny-teacher" / "codec.pt"))
        )
