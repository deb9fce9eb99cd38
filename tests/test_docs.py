"""Every code block of README.md and docs/ is executed, so the docs cannot drift from the code.

- ```python blocks run, in order, one namespace per page, in a temporary folder.
- ```bash blocks are dry-run: every command must be one we know, and its flags must parse
  (train.py and predict.py arguments are parsed and the run configuration is built, with
  its files and keys checked; ``pip install -e ".[x]"`` extras must exist; scripts and
  modules must exist). Nothing is trained or installed.
- ```toml blocks must be valid run configurations.
Blocks without a language (diagrams) and ```text blocks are prose.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

from examples.cmath import predict, train
from examples.cmath.config import ConfigError, build
from examples.cmath.config import RunConfig as _RunConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
EXTRAS = set(
    tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
)


def blocks(page: Path, language: str) -> list[str]:
    return [code for lang, code in FENCE.findall(page.read_text()) if lang == language]


def _commands(code: str) -> list[list[str]]:
    code = code.replace("\\\n", " ")
    out = []
    for line in code.splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            out += [shlex.split(part) for part in line.split("&&")]
    return out


def _python_target(words: list[str]) -> tuple[str, list[str]]:
    """(script path or module name, its arguments) of a ``python ...`` command."""
    if words[0] == "-m":
        return words[1], words[2:]
    return words[0], words[1:]


def dry_run(words: list[str]) -> None:
    """Check one shell command of the docs without running it."""
    head, rest = words[0], words[1:]
    if head in ("git", "cd", "mkdocs"):
        return
    if head == "pip":
        assert rest[0] == "install", words
        for spec in rest[1:]:
            match = re.fullmatch(r"(?:-e )?\.?\[([\w,-]+)\]", spec.replace('"', ""))
            if match:
                unknown = set(match.group(1).split(",")) - EXTRAS
                assert not unknown, f"pip extras {unknown} not in pyproject ({sorted(EXTRAS)})"
        return
    if head == "torchrun":
        script = next(i for i, w in enumerate(rest) if w.endswith(".py"))
        return dry_run(["python", *rest[script:]])
    assert head == "python", f"a command the docs test does not know: {words}"
    target, args = _python_target(rest)
    if target in ("examples/cmath/train.py", "examples.cmath.train"):
        parsed = train.parse_args(args)
        if parsed.eval is None:
            train.configure(parsed)
    elif target in ("examples/cmath/predict.py", "examples.cmath.predict"):
        predict.parse_args(args)
    elif target.endswith(".py"):
        assert (ROOT / target).is_file(), f"{target} does not exist"
    else:
        assert importlib.util.find_spec(target) is not None, f"module {target} does not exist"


def _python_pages():
    """Pages with python blocks; those that train a model are end-to-end runs (slow)."""
    for page in PAGES:
        code = blocks(page, "python")
        if code:
            slow = any("train.main(" in block for block in code)
            yield pytest.param(page, id=page.name, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("page", _python_pages())
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(blocks(page, "python")):
        exec(compile(block, f"{page.name}[python block {i}]", "exec"), namespace)


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "bash")], ids=lambda p: p.name)
def test_shell_blocks_parse(page):
    for block in blocks(page, "bash"):
        for words in _commands(block):
            dry_run(words)


def test_toml_blocks_are_configs():
    for page in PAGES:
        for block in blocks(page, "toml"):
            build(_RunConfig, tomllib.loads(block))


def test_the_dry_run_catches_a_wrong_flag_and_an_unknown_command():
    with pytest.raises(SystemExit):
        dry_run(shlex.split("python examples/cmath/train.py --epoch 3"))
    with pytest.raises(ConfigError, match=r"model\.nope"):
        dry_run(shlex.split("python examples/cmath/train.py --set model.nope=1"))
    with pytest.raises(AssertionError, match="does not know"):
        dry_run(["rm", "-rf", "/"])
