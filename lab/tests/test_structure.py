"""lab/structure.py's measures on a package written here: the import table, arrows up, and the trip of one
parameter through the calls that hand it (or a part of it) on."""

from pathlib import Path

from lab.structure import measure, trip


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / "trackstream" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_trip_follows_the_parameter_and_its_parts_and_counts_climbs(tmp_path):
    _write(
        tmp_path,
        {
            "__init__.py": "",
            "models/__init__.py": "",
            "models/net.py": "def build(width):\n    return width\n\ndef unrelated(x):\n    return x\n",
            "data/__init__.py": "",
            "data/clips.py": (
                "from dataclasses import dataclass\n\n@dataclass\nclass Clips:\n    size: int\n\n"
                "def clips(data):\n    return Clips(data.size)\n"
            ),
            "train/__init__.py": "",
            "train/stage.py": (
                "from trackstream.data.clips import clips\nfrom trackstream.models.net import build, unrelated\n\n"
                "def run(cfg):\n    m = cfg.model\n    build(m.width)\n    clips(data=cfg.data)\n"
                "    unrelated(3)\n    helper(cfg)\n\ndef helper(c):\n    build(c.model.width)\n"
            ),
        },
    )
    t = trip(tmp_path, "trackstream.train.stage", "run", "cfg")
    assert t["files"] == [
        "trackstream/data/clips.py",
        "trackstream/models/net.py",
        "trackstream/train/stage.py",
    ]
    # stage -> net (down) -> clips (up) -> clips' dataclass (same file) -> helper in stage (up); helper hands
    # the same part to build again, a function already entered with it: not a second entry. 2 climbs
    assert t["order"] == [
        "trackstream/train/stage.py",
        "trackstream/models/net.py",
        "trackstream/data/clips.py",
        "trackstream/train/stage.py",
    ]
    assert t["climbs"] == 2
    m = measure(tmp_path)
    assert m["imports"] == {"train -> data": 1, "train -> models": 1}
    assert m["arrows_up"] == [] and m["mutual_packages"] == []
