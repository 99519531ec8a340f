"""``TRACKSTREAM_OVERRIDES`` (trackstream/data/hydra_args.py): extra Hydra overrides from the environment, appended
after the command line's own by every Hydra command (train / pairs, eval, prepare), said on stderr; a value that is
not ``key=value`` overrides is refused in one line before anything runs. ``compose_once``: the composition Hydra
makes only to read ``hydra.mode`` is skipped, as no config sets it."""

from pathlib import Path

import pytest
import yaml
from conftest import cli_env

from trackstream.data.hydra_args import OVERRIDES_ENV, append_env_overrides, compose_once

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
    import json

    from trackstream.pipeline.run import main

    (tmp_path / "sizes.json").write_text(json.dumps({"teacher_steps": -1}))  # another preset: refused at once
    monkeypatch.setenv(OVERRIDES_ENV, "trainer.max_steps=2")
    assert main(["--run-dir", str(tmp_path)]) == 2
    assert f"{OVERRIDES_ENV}='trainer.max_steps=2' applies to every stage" in capsys.readouterr().out
