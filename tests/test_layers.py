"""The package floors (layers.json): models, diffusion -> data -> train -> stream -> eval -> distill -> stages ->
pipeline, bench.

The checker is the workspace's (``../shared/tools/check_layers.py``, beside the checkout in CI); it
counts every import, lazy ones and "module:attr" strings included, and every import circle."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKER = ROOT.parent / "shared" / "tools" / "check_layers.py"


@pytest.mark.slow
@pytest.mark.skipif(not CHECKER.is_file(), reason=f"{CHECKER} is not beside this checkout")
def test_imports_only_go_down_the_floors():
    r = subprocess.run([sys.executable, str(CHECKER), str(ROOT)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "layers ok" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def test_one_namespace_and_every_package_on_a_floor():
    """Only ``trackstream`` at the top level (nothing generic like ``models`` or ``data`` to clash with a
    user's code), every package inside it has a floor in layers.json, and the engine sits below the
    inference, evaluation, distillation and application packages."""
    import json

    table = json.loads((ROOT / "layers.json").read_text())
    floors = set(table)
    assert all(table["trainer"] < table[p] for p in ("stream", "eval", "distill", "train"))
    assert {p.parent.name for p in ROOT.glob("*/__init__.py")} == {"trackstream"}
    packages = {p.parent.name for p in (ROOT / "trackstream").glob("*/__init__.py")}
    assert packages - floors == set(), f"packages without a floor: {sorted(packages - floors)}"


@pytest.mark.slow
def test_the_product_never_reaches_into_lab():
    """``lab/`` (our studies, shipping and packing tools; not installed) may import the product, never the
    reverse: no module of ``trackstream/`` imports it and no conf file names it as code, and every console
    command is a product module."""
    import ast
    import re

    from trackstream.cli import COMMANDS

    found = []
    for path in (ROOT / "trackstream").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = re.findall(r"^(lab)\.[a-z_.]+:[A-Za-z_]+$", node.value)
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n == "lab" or n.startswith("lab.")]
    for path in (ROOT / "conf").rglob("*.yaml"):
        found += [
            f"{path.relative_to(ROOT)}: {m}" for m in re.findall(r"^[^#\n]*\blab\.[a-z_]+:", path.read_text(), re.M)
        ]
    assert found == [], found
    assert all(module.startswith("trackstream.") for module, _ in COMMANDS.values())
    assert not (ROOT / "lab" / "__init__.py").exists()  # a folder of tools, not a package to install


@pytest.mark.slow
def test_the_console_front_lists_every_command_and_each_is_a_runnable_module(capsys):
    from trackstream.cli import COMMANDS, main

    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in COMMANDS)
    for name, (module, _) in COMMANDS.items():  # each target is a runnable module (or package with __main__)
        path = ROOT / Path(*module.split("."))
        assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), (name, module)
    assert main(["no-such-command"]) == 2
    assert main(["flavors"]) == 0 and "wan2.1-t2v-1.3b" in capsys.readouterr().out


@pytest.mark.slow  # a process of its own (the fork server's first command starts the server)
def test_the_console_front_runs_as_python_m(run_module):
    r = run_module("trackstream.cli", "generate", "--help", check=False, timeout=300)
    assert r.returncode == 0 and "--student" in r.stdout and "trackstream generate" in r.stdout, r.stderr[-2000:]


@pytest.mark.slow
def test_the_console_front_prints_a_refusal_the_module_exits_with(tmp_path, capsys):
    """A module that refuses with ``SystemExit("error: ...")`` says so through the front too (exit 1)."""
    from trackstream.cli import main

    (tmp_path / "in").mkdir()
    assert main(["prepare", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "in" in err[0], err
    assert main(["prepare", f"input={tmp_path / 'missing'}", f"output={tmp_path / 'out'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0] and not (tmp_path / "out").exists(), err


def test_the_install_puts_only_trackstream_at_top_level():
    """``make install`` (pip install -e .) maps one name and installs one console command."""
    from importlib.metadata import distribution

    dist = distribution("trackstream")
    assert dist.read_text("top_level.txt").split() == ["trackstream"]
    assert [(e.name, e.value) for e in dist.entry_points] == [("trackstream", "trackstream.cli:main")]
