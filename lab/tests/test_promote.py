"""lab.promote on copies of the shipped pair: a staged (teacher, student) replaces the shipped folders, the
student's manifest re-pointed and still intact; a mismatched or altered pair is refused before anything moves."""

from __future__ import annotations

import json
import shutil

import pytest

from lab.promote import main, promote
from trackstream.models.formats.files import sha256
from trackstream.pipeline.releases import ASSET_DIR, STUDENT_DIR, AssetError, shipped_dmd_student, verify_asset


@pytest.fixture
def tree(tmp_path):
    """tmp/assets/ with an old shipped pair and a staged pair (copies of the real releases)."""
    assets = tmp_path / "assets"
    for name, src in (
        ("tiny-teacher", ASSET_DIR),
        ("tiny-student", STUDENT_DIR),
        ("teacher-staged", ASSET_DIR),
        ("student-staged", STUDENT_DIR),
    ):
        shutil.copytree(src, assets / name)
    return assets


def test_a_staged_pair_replaces_the_shipped_one(tree):
    old_student = sha256(tree / "tiny-student" / "manifest.json")
    m = promote(
        tree / "teacher-staged",
        tree / "student-staged",
        teacher_dest=tree / "tiny-teacher",
        student_dest=tree / "tiny-student",
    )
    assert not (tree / "teacher-staged").exists() and not (tree / "student-staged").exists()
    assert m["name"] == "tiny-student"
    assert m["teacher_release"]["dir"] == "assets/tiny-teacher"
    assert m["codec"]["path"] == "assets/tiny-teacher/codec.pt"
    assert m["promoted"]["from"] == {"teacher": "assets/teacher-staged", "student": "assets/student-staged"}
    assert m["promoted"]["replaced"]["assets/tiny-student"]["manifest_sha256"] == old_student
    on_disk = json.loads((tree / "tiny-student" / "manifest.json").read_text())
    assert on_disk == m
    verify_asset(tree / "tiny-teacher")
    # the pair loads as make run loads it: the student distilled from this teacher
    dmd, _ = shipped_dmd_student(tree / "tiny-teacher", tree / "tiny-student")
    assert (dmd / "network.json").is_file()


def test_a_student_of_another_teacher_is_refused_before_anything_moves(tree, capsys):
    teacher_manifest = tree / "teacher-staged" / "manifest.json"
    m = json.loads(teacher_manifest.read_text())
    m["name"] = "another-teacher"
    teacher_manifest.write_text(json.dumps(m))
    args = ["--teacher", str(tree / "teacher-staged"), "--student", str(tree / "student-staged")]
    args += ["--teacher-dest", str(tree / "tiny-teacher"), "--student-dest", str(tree / "tiny-student")]
    assert main(args) == 2
    assert "promote the student together with the teacher it was distilled from" in capsys.readouterr().err
    assert (tree / "teacher-staged").is_dir() and (tree / "student-staged").is_dir()
    assert json.loads((tree / "tiny-student" / "manifest.json").read_text()) == json.loads(
        (STUDENT_DIR / "manifest.json").read_text()
    )


def test_an_altered_staged_file_is_refused(tree):
    (tree / "student-staged" / "student" / "heads.pt").write_bytes(b"not the shipped heads")
    with pytest.raises(AssetError, match="altered"):
        promote(
            tree / "teacher-staged",
            tree / "student-staged",
            teacher_dest=tree / "tiny-teacher",
            student_dest=tree / "tiny-student",
        )
    assert (tree / "tiny-student" / "student" / "heads.pt").read_bytes() == (
        STUDENT_DIR / "student" / "heads.pt"
    ).read_bytes()


def test_a_staged_folder_outside_the_assets_root_is_refused_before_anything_moves(tree, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "student"
    shutil.copytree(tree / "student-staged", elsewhere)
    with pytest.raises(ValueError, match="not inside"):
        promote(
            tree / "teacher-staged", elsewhere, teacher_dest=tree / "tiny-teacher", student_dest=tree / "tiny-student"
        )
    assert (tree / "teacher-staged").is_dir() and elsewhere.is_dir()
