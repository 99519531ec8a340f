"""``TRACKSTREAM_OVERRIDES`` (trackstream/data/hydra_args.py): extra Hydra overrides from the environment, appended
after the command line's own by every Hydra command (train / pairs, eval, prepare), said on stderr; a value that is
not ``key=value`` overrides is refused in one line before anything runs."""

import pytest
from conftest import cli_env

from trackstream.data.hydra_args import OVERRIDES_ENV, append_env_overrides


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
    monkeypatch.setenv(OVERRIDES_ENV, value)
    monkeypatch.setattr("sys.argv", [module, "--cfg", "job"])
    GlobalHydra.instance().clear()
    try:
        entry()
    finally:
        GlobalHydra.instance().clear()
    assert shown in capsys.readouterr().out
