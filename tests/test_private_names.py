"""A name with a leading underscore is private to its module: no module of ``trackstream/`` imports another
module's ``_name`` (``from x import _name``, relative imports included). What another module needs is public
in its home, so that its owner sees who depends on it."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_module(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute name of the module ``node`` imports from (``from .x import y`` resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_imports(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        module, is_package = _module(path), path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _imported_module(node, module, is_package)
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and source != module:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {source}.{alias.name}")
    return found


@pytest.mark.slow
def test_no_module_imports_another_modules_private_names():
    assert private_imports(ROOT / "trackstream") == []


def test_the_check_sees_absolute_and_relative_imports(tmp_path):
    pkg = tmp_path / "trackstream" / "models" / "codecs"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("from .b import _table\nfrom trackstream.models.c import _x, y\nfrom . import b\n")
    old, globals()["ROOT"] = ROOT, tmp_path
    try:
        found = private_imports(tmp_path / "trackstream")
    finally:
        globals()["ROOT"] = old
    assert found == [
        "trackstream/models/codecs/a.py:1 imports trackstream.models.codecs.b._table",
        "trackstream/models/codecs/a.py:2 imports trackstream.models.c._x",
    ]
