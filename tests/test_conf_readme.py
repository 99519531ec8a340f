"""conf/README.md's table of config groups says what conf/ holds: each group's row names exactly the files of
that folder (by stem), a row's name patterns (``tiny_*``) each match some file and together every file, and every
folder of conf/ with YAML files has a row."""

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _rows() -> dict[str, list[str]]:
    """group folder -> the names in its row's files column (backticked words)."""
    rows = {}
    for line in (CONF / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        group = re.match(r"`([\w/]+)/`", cells[0])
        if group:
            rows[group.group(1)] = re.findall(r"`([^`]+)`", cells[1])
    return rows


def _stems(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.yaml")}


def test_every_group_row_names_the_files_of_its_folder():
    rows = _rows()
    folders = {p.parent.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml") if p.parent != CONF}
    assert folders - {"local"} <= set(rows), f"conf/README.md has no row for {sorted(folders - set(rows))}"
    for group, names in rows.items():
        files = _stems(CONF / group)
        assert files, f"conf/README.md: `{group}/` is no folder of conf/"
        patterns = [n for n in names if "*" in n]
        listed = set(names) - set(patterns)
        assert listed <= files, f"`{group}/`: {sorted(listed - files)} named but not in conf/{group}/"
        for pattern in patterns:
            assert fnmatch.filter(files, pattern), f"`{group}/`: {pattern} matches no file"
        unnamed = {f for f in files - listed if not any(fnmatch.fnmatch(f, p) for p in patterns)}
        assert not unnamed, f"conf/{group}/ holds {sorted(unnamed)}: add them to conf/README.md's row"


def test_the_stage_row_names_every_stage_schema():
    from trackstream.train.registry import STAGES

    text = (CONF / "README.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `stage/`"))
    assert set(_rows()["stage"]) - {"teacher_finetune"} == set(STAGES)
    for stage in STAGES.values():
        assert f"`{stage.schema.__name__}`" in row, stage.schema.__name__
