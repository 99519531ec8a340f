"""trackstream/data/command_line.py: ``settings_from=DIR``, the word every Hydra command (train / pairs, eval,
prepare) expands into the settings a teacher's stages share with it (``settings_of``), where it stands on the line."""

from pathlib import Path

import pytest
import yaml

from trackstream.data.command_line import expand_settings_from, settings_of

ROOT = Path(__file__).resolve().parents[1]


def test_settings_from_stands_for_the_teachers_settings_where_it_is(tmp_path, capsys):
    """``settings_from=DIR``: the shipped teacher's network, codec options, shift and world in place of the word (a
    folder or its config.yaml), so later words win; a folder without a config is refused naming it."""
    shipped = yaml.safe_load((ROOT / "assets/tiny-teacher/config.yaml").read_text())
    want = settings_of(shipped)
    assert "++model.overrides={" in want[2] and f"schedule.shift={shipped['schedule']['shift']}" == want[0]
    argv = ["prog", "experiment=tiny_dmd", f"settings_from={ROOT / 'assets/tiny-teacher'}", "schedule.shift=1.0"]
    assert expand_settings_from(argv) == want and argv == ["prog", "experiment=tiny_dmd", *want, "schedule.shift=1.0"]
    assert "settings_from adds: schedule.shift=" in capsys.readouterr().err
    argv = ["prog", f"settings_from={ROOT / 'assets/tiny-teacher/config.yaml'}"]
    assert expand_settings_from(argv) == want
    assert expand_settings_from(["prog", "a=1"]) == []
    for where, said in [(tmp_path, "no config.yaml there"), (ROOT / "conf/train.yaml", "lacks")]:
        with pytest.raises(ValueError, match=f"settings_from={where}: .*{said}"):
            expand_settings_from(["prog", f"settings_from={where}"])
