"""trackstream/data/command_line.py: ``TRACKSTREAM_OVERRIDES``, extra Hydra overrides from the environment, appended
after the command line's own by every Hydra command (train / pairs, eval, prepare), said on stderr; a value that is
not ``key=value`` overrides is refused in one line before anything runs. ``TRACKSTREAM_ARGS``: the same for every
argparse command (each ``main`` in trackstream/ and lab/ parses ``command_args``). ``compose_once``: the
composition Hydra makes only to read ``hydra.mode`` is skipped, as no config sets it."""

import argparse
import ast
import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import cli_env

from trackstream.data.command_line import (
    ARGS_ENV,
    OVERRIDES_ENV,
    append_env_overrides,
    command_args,
    compose_once,
)

ROOT = Path(__file__).resolve().parents[1]


def test_the_overrides_are_appended_in_shell_words(monkeypatch, capsys):
    monkeypatch.setenv(OVERRIDES_ENV, "trainer.max_steps=2 'runs={a: x, b: y}'")
    argv = ["prog", "experiment=tiny_teacher"]
    assert append_env_overrides(argv) == ["trainer.max_steps=2", "runs={a: x, b: y}"]
    assert argv == ["prog", "experiment=tiny_teacher", "trainer.max_steps=2", "runs={a: x, b: y}"]
    assert f"{OVERRIDES_ENV} adds: trainer.max_steps=2 runs={{a: x, b: y}}" in capsys.readouterr().err
    argv = ["prog", "a=1", "--cfg", "job"]  # before Hydra's flags, after the line's overrides
    append_env_overrides(argv)
    assert argv == ["prog", "a=1", "trainer.max_steps=2", "runs={a: x, b: y}", "--cfg", "job"]
    capsys.readouterr()
    monkeypatch.setenv("RANK", "1")  # another rank of a launch adds them too, without saying so again
    assert append_env_overrides(["prog"]) == ["trainer.max_steps=2", "runs={a: x, b: y}"]
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("RANK")
    monkeypatch.setenv(OVERRIDES_ENV, "")
    assert append_env_overrides(argv) == [] and len(argv) == 6 and capsys.readouterr().err == ""


@pytest.mark.parametrize("value,said", [("--cfg job", "is not key=value"), ("a='b", "quote as a shell would")])
def test_a_value_that_is_not_overrides_is_refused(monkeypatch, value, said):
    monkeypatch.setenv(OVERRIDES_ENV, value)
    with pytest.raises(ValueError, match=f"{OVERRIDES_ENV}.*{said}"):
        append_env_overrides(["prog"])


@pytest.mark.slow
def test_every_hydra_command_takes_them(run_module):
    env = cli_env(**{OVERRIDES_ENV: "trainer.max_steps=7"})
    r = run_module("trackstream.stages", "experiment=tiny_teacher", "trainer.max_steps=3", "--cfg", "job", env=env)
    assert "max_steps: 7" in r.stdout and f"{OVERRIDES_ENV} adds: trainer.max_steps=7" in r.stderr  # after: it wins
    bad = run_module("trackstream.stages", "experiment=tiny_teacher", check=False, env=cli_env(**{OVERRIDES_ENV: "x"}))
    err = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(err) == 1 and "'x' is not key=value" in err[0], bad.stderr


@pytest.mark.parametrize(
    "module,value,shown", [("eval", "out=elsewhere", "out: elsewhere"), ("prepare", "input=v", "input: v")]
)
def test_eval_and_prepare_take_them_too(monkeypatch, capsys, module, value, shown):
    """Their entries, in-process (``--cfg job``: Hydra prints the composed job and stops)."""
    import importlib

    from hydra.core.global_hydra import GlobalHydra

    entry = importlib.import_module(
        {"eval": "trackstream.eval.__main__", "prepare": "trackstream.data.prepare"}[module]
    ).entry
    from hydra._internal.hydra import Hydra

    monkeypatch.setattr(Hydra, "get_mode", Hydra.get_mode)  # the entry's compose_once, undone after the test
    monkeypatch.setenv(OVERRIDES_ENV, value)
    monkeypatch.setattr("sys.argv", [module, "--cfg", "job"])
    GlobalHydra.instance().clear()
    try:
        entry()
    finally:
        GlobalHydra.instance().clear()
    assert shown in capsys.readouterr().out


def test_no_config_sets_the_mode_so_one_composition_is_enough(monkeypatch):
    """Hydra's first composition only reads ``hydra.mode``: unset in every file of conf/ (so the skipped composition
    would have found it unset), and kept when the command line sets it."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.hydra import Hydra
    from hydra.core.global_hydra import GlobalHydra

    from trackstream.eval.conf_nodes import register_nodes
    from trackstream.stages.config import register_configs
    from trackstream.stages.recipes import CONFIG_DIR

    def sets_mode(path: Path) -> bool:  # hydra: {mode: ...}, a conf/hydra file's own mode:, or hydra.mode=
        node = yaml.safe_load(path.read_text()) or {}
        hydra = node if "hydra" in path.relative_to(ROOT / "conf").parts else node.get("hydra") or {}
        return "mode" in hydra or "hydra.mode" in path.read_text()

    setting = [p.relative_to(ROOT) for p in (ROOT / "conf").rglob("*.yaml") if sets_mode(p)]
    assert not setting, f"{setting} set hydra.mode: compose_once would skip it (remove compose_once or the setting)"
    register_configs(), register_nodes()  # the schemas the apps register as they start
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for name in ("train", "eval", "prepare"):
            assert compose(name, return_hydra_config=True).hydra.mode is None, name
    GlobalHydra.instance().clear()
    monkeypatch.setattr(Hydra, "get_mode", Hydra.get_mode)  # undone after the test
    assert not compose_once(["prog", "a=1", "hydra.mode=MULTIRUN"]) and Hydra.get_mode is not None
    assert compose_once(["prog", "a=1", "-m"]) and Hydra.get_mode(None, "train", []) is None


def test_make_run_says_that_they_apply_to_every_stage(monkeypatch, tmp_path, capsys):
    """``make run`` (trackstream.pipeline) passes its environment to every stage command: it says so first."""

    from trackstream.pipeline.run import main

    (tmp_path / "sizes.json").write_text(json.dumps({"teacher_steps": -1}))  # another preset: refused at once
    monkeypatch.setenv(OVERRIDES_ENV, "trainer.max_steps=2")
    assert main(["--run-dir", str(tmp_path)]) == 2
    assert f"{OVERRIDES_ENV}='trainer.max_steps=2' applies to every stage" in capsys.readouterr().out


def test_argparse_commands_take_trackstream_args_after_their_own(monkeypatch, capsys):
    """On the process's own line only, and consumed: an in-process call with its own argv, and the commands it
    launches, do not see the variable."""
    ap = argparse.ArgumentParser(prog="bench")
    ap.add_argument("--scenes", type=int, default=24)
    ap.add_argument("--set", action="append", default=[])
    monkeypatch.setattr("sys.argv", ["bench", "--scenes", "24", "--set", "x=1"])
    monkeypatch.setenv(ARGS_ENV, "--scenes 2 --set 'a=b c'")
    assert ap.parse_args(command_args(ap, ["--scenes", "5"])).scenes == 5  # a caller's argv: as given
    args = ap.parse_args(command_args(ap))
    assert args.scenes == 2 and args.set == ["x=1", "a=b c"]  # the later option wins; a repeated one gains it
    assert f"{ARGS_ENV} adds: --scenes 2 --set a=b c" in capsys.readouterr().err
    assert ARGS_ENV not in os.environ and command_args(ap) == ["--scenes", "24", "--set", "x=1"]
    for value, said in [("ship --x 1", "'ship' is not an option"), ("--a 'b", "quote as a shell would")]:
        monkeypatch.setenv(ARGS_ENV, value)
        with pytest.raises(SystemExit) as done:
            command_args(ap)
        err = capsys.readouterr().err.strip().splitlines()
        assert done.value.code == 2 and ARGS_ENV in err[-1] and said in err[-1], err


def test_every_argparse_main_parses_command_args():
    """Every parser call in the product and the lab reads ``command_args(parser, argv)``, directly or through a name
    its function assigned from it: a documented command of either shrinks through ``TRACKSTREAM_ARGS``."""
    methods = {"parse_args", "parse_known_args", "parse_intermixed_args"}

    def from_command_args(node) -> bool:
        return isinstance(node, ast.Call) and getattr(node.func, "id", None) == "command_args"

    bare, calls = [], 0
    for path in [*(ROOT / "trackstream").rglob("*.py"), *(ROOT / "lab").rglob("*.py")]:
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            named = {t.id for n in ast.walk(fn) if isinstance(n, ast.Assign) and from_command_args(n.value)
                     for t in n.targets if isinstance(t, ast.Name)}  # fmt: skip
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in methods:
                    calls += 1
                    arg = node.args[0] if node.args else None
                    if not (from_command_args(arg) or (isinstance(arg, ast.Name) and arg.id in named)):
                        bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert calls > 40 and not bare, f"parse without command_args (TRACKSTREAM_ARGS ignored): {bare}"
