"""Every command the docs show runs: each ``trackstream ...`` / ``python -m trackstream...`` /
``python -m lab....`` / ``torchrun ... -m trackstream...`` line in a shell code block of README.md or
docs/**/*.md is accepted by the real front end, without doing the work.

* argparse commands: the module's ``main(argv)`` is called with ``ArgumentParser.parse_*`` patched to
  stop right after the parse (the parser ``main`` builds, unknown flags / wrong choices / missing
  arguments are argparse's exit 2); nothing past the parse runs.
* Hydra apps (train, pairs, eval, prepare, and ``trackstream plan``'s overrides): the app's primary config
  is composed with the command's overrides through Hydra's compose API, as the app does (a key or a group
  option that does not exist fails); ``hydra.*`` overrides and ``--help`` / ``--cfg`` flags are Hydra's own.

Doc notation the test reads, not a shell: ``<fill in>`` is one value (one word here, whatever it holds),
``[optional part]`` at the start of a word is checked with the part included, a lone ``...`` (the rest as
above) is dropped.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import shlex
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "conf" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}

# a command line: optional `nice -n N` / `env` / `VAR=value` prefixes, then one of the documented front ends
COMMAND = re.compile(
    r"^(?:(?:nice(?:\s+-n\s*-?\d+)?|env|time)\s+|[A-Za-z_]\w*=(?:\"[^\"]*\"|'[^']*'|\S*)\s+)*"
    r"(?P<cmd>trackstream\s|python3?\s+-m\s+(?:trackstream|lab\.)|torchrun\s|srun\s|accelerate\s+launch\s).*"
)
# the first word of a code line that is a shell command (not a file tree or a table that mentions one)
SHELL_WORD = re.compile(r"^(?:[A-Za-z_]\w*=\S*|python3?|trackstream|torchrun|srun|accelerate|nice|env|time)$")

HYDRA_APPS = {  # module -> its primary config in conf/ (trackstream.train.recipes.CONFIG_DIR)
    "trackstream.train": "train",
    "trackstream.train.pairs": "train",
    "trackstream.eval": "eval",
    "trackstream.data.prepare": "prepare",
}

# (doc:line) -> why it is not checked. Keep it short: fix the doc instead where it can be a runnable example.
SKIP: dict[str, str] = {}


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _code_lines(path: Path):
    """(line number, text) of the lines in shell fences and indented code blocks."""
    fence, prev_blank, indented = None, True, False
    for no, line in enumerate(path.read_text().splitlines(), 1):
        m = re.match(r"^\s*(```+|~~~+)\s*([\w+-]*)", line)
        if fence is None and m:
            fence = (m.group(1), m.group(2).lower())
        elif fence is not None:
            if line.strip().startswith(fence[0]):
                fence = None
            elif fence[1] in SHELL_FENCES:
                yield no, line
        elif line.startswith("    ") and line.strip() and (prev_blank or indented):
            indented = True
            yield no, line
        elif line.strip():
            indented = False
        prev_blank = fence is None and not line.strip()


def _split_compound(line: str) -> list[str]:
    """A shell line split on ``;``, ``&&``, ``||`` and ``|`` outside quotes."""
    parts, cur, quote, i = [], "", None, 0
    while i < len(line):
        ch = line[i]
        if quote:
            quote = None if ch == quote else quote
            cur += ch
        elif ch in "'\"":
            quote = ch
            cur += ch
        elif line[i : i + 2] in ("&&", "||"):
            parts.append(cur)
            cur, i = "", i + 1
        elif ch in ";|":
            parts.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    return [p.strip() for p in [*parts, cur] if p.strip()]


def extract(path: Path) -> list[tuple[str, str]]:
    """("doc:line", command) for every documented command in ``path``, continuations joined."""
    found, buf, start = [], None, 0
    for no, raw in _code_lines(path):
        text = _strip_comment(raw.strip())
        if buf is not None:
            buf += " " + text.removesuffix("\\").strip()
            if text.endswith("\\"):
                continue
            line, buf = buf, None
        elif text.endswith("\\"):
            buf, start = text[:-1].strip(), no
            continue
        else:
            line, start = text, no
        if not line or not SHELL_WORD.match(line.split()[0]):
            continue
        for part in _split_compound(line):
            part = re.sub(r"(\s+\d?>&?\d*\s*\S*)+$", "", part)  # output redirections: 2>&1, > file
            if COMMAND.match(part):
                found.append((f"{path.relative_to(ROOT)}:{start}", part))
    return found


COMMANDS = [c for p in DOCS for c in extract(p)]


def test_the_docs_show_commands():
    assert len(COMMANDS) > 80, f"only {len(COMMANDS)} documented commands found: the extractor is broken"
    assert set(SKIP) <= {where for where, _ in COMMANDS}, "a SKIP entry names no documented command"


def words(command: str) -> list[str]:
    """The command's argv in the docs' notation (module docstring)."""
    return shlex.split(plain(re.sub(r"<[^<>]*(?:<[^<>]*>[^<>]*)*>", "PLACEHOLDER", command)))  # <fill in>


def plain(command: str) -> str:
    """The shell line the docs' notation stands for: ``[optional part]`` included, a lone ``...`` dropped."""
    text, stack = "", []  # stack: per open bracket, whether it is [optional] notation (it starts a word)
    for i, ch in enumerate(command):
        if ch == "[":
            stack.append(i == 0 or command[i - 1].isspace())
            text += "" if stack[-1] else ch
        elif ch == "]" and stack:
            text += "" if stack.pop() else ch
        else:
            text += ch
    assert not stack, f"unbalanced [ ] in {command!r}"
    return re.sub(r"(?<!\S)\.\.\.(?!\S)", "", text)  # a lone, unquoted ... (the rest as above)


def module_and_args(argv: list[str]) -> tuple[str, list[str]]:
    """The Python module a command runs and the arguments it gets (``VAR=value`` / ``env`` / ``time`` / ``nice``
    prefixes dropped)."""
    from trackstream.cli import COMMANDS as CLI

    while argv and (re.fullmatch(r"[A-Za-z_]\w*=.*", argv[0]) or argv[0] in ("env", "time", "nice")):
        argv = argv[3:] if argv[:2] == ["nice", "-n"] else argv[1:]
    if argv[0] == "trackstream":
        assert len(argv) > 1 and argv[1] in CLI, f"`trackstream {argv[1:2]}` is not a command of trackstream/cli.py"
        return CLI[argv[1]][0], argv[2:]
    i = argv.index("-m")  # python -m M, torchrun ... -m M, srun ... python -m M
    return argv[i + 1], argv[i + 2 :]


class _Parsed(Exception):
    def __init__(self, namespace, extras):
        super().__init__("parsed")
        self.namespace, self.extras = namespace, extras


def _stop_after_parse(monkeypatch):
    """``ArgumentParser.parse_*`` raise ``_Parsed`` when the outermost parse returns (sub-parsers and the
    parse_args -> parse_known_args chain parse normally)."""
    depth = [0]

    def wrap(name):
        original = getattr(argparse.ArgumentParser, name)

        def parse(self, *args, **kwargs):
            depth[0] += 1
            try:
                result = original(self, *args, **kwargs)
            finally:
                depth[0] -= 1
            if depth[0]:
                return result
            ns, extras = result if isinstance(result, tuple) else (result, [])
            raise _Parsed(ns, extras)

        monkeypatch.setattr(argparse.ArgumentParser, name, parse)

    for name in ("parse_args", "parse_known_args", "parse_intermixed_args", "parse_known_intermixed_args"):
        wrap(name)


def _compose(primary: str, overrides: list[str]) -> None:
    from trackstream.eval.conf_nodes import register_nodes
    from trackstream.train.config import register_configs
    from trackstream.train.recipes import CONFIG_DIR

    register_configs()
    register_nodes()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            compose(primary, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def check_hydra(module: str, args: list[str]) -> None:
    """Hydra's flags are Hydra's (``--cfg job`` etc.); ``hydra.*`` / ``hydra/...`` overrides configure Hydra
    itself (launcher, run dir); a multirun sweep (``-m key=a,b``) is checked at its first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    flags = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--resolve", "--multirun", "-m"}
    values = {"job", "hydra", "all", "defaults", "config", "searchpath", "plugins", "defaults-tree"}
    bad = [a for a in args if a.startswith("-") and a not in flags]
    assert not bad, f"{bad[0]} is not a flag of a Hydra app"
    overrides = [a for a in args if a not in flags and a not in values]
    overrides = [a for a in overrides if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    if "-m" in args or "--multirun" in args:
        parsed = OverridesParser.create().parse_overrides(overrides)
        overrides = [
            f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override() else o.input_line
            for o in parsed
        ]
    if module in ("trackstream.train", "trackstream.train.pairs"):
        from trackstream.trainer.codec import check_codec_overrides

        check_codec_overrides(overrides)
    elif module == "trackstream.eval":
        from trackstream.eval.generate import check_codec_overrides

        check_codec_overrides(overrides)
    _compose(HYDRA_APPS[module], overrides)


def check_argparse(module: str, args: list[str], monkeypatch) -> argparse.Namespace:
    try:
        mod = importlib.import_module(module)
        main = mod.main
    except (ImportError, AttributeError):
        mod = importlib.import_module(module + ".__main__")
        main = mod.main
    _stop_after_parse(monkeypatch)
    monkeypatch.setattr(sys, "argv", [module, *args])
    try:
        main(args) if inspect.signature(main).parameters else main()
    except _Parsed as done:
        if module == "trackstream.bench.plan":  # the rest are train overrides (plan_of -> compose_recipe)
            bad = [o for o in done.extras if o.startswith("-")]
            assert not bad, f"unknown option {bad[0]}"
            if not done.namespace.table:
                _compose("train", done.extras)
        else:
            assert not done.extras, done.extras
        if module == "trackstream.pipeline.export_network":  # --format is checked after the parse, not by choices
            from trackstream.pipeline.export_network import FORMATS

            assert done.namespace.format in (*FORMATS, "pipeline"), f"--format {done.namespace.format}"
        return done.namespace
    raise AssertionError(f"{module}.main returned without parsing its arguments")


@pytest.mark.slow
@pytest.mark.parametrize("where,command", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_is_accepted(where, command, monkeypatch, capsys):
    if where in SKIP:
        pytest.skip(SKIP[where])
    module, args = module_and_args(words(command))
    try:
        if module in HYDRA_APPS:
            check_hydra(module, args)
        else:
            check_argparse(module, args, monkeypatch)
    except SystemExit as err:  # argparse's refusal (its message went to stderr)
        pytest.fail(
            f"{where}: `{command}` is refused (exit {err.code}): {capsys.readouterr().err.strip().splitlines()[-1:]}"
        )
    except Exception as err:  # noqa: BLE001 - Hydra's composition / grammar errors, the codec name checks
        msg = " ".join(str(err).split())[:400]
        pytest.fail(f"{where}: `{command}` is refused: {type(err).__name__}: {msg}")
