"""Every code block of README.md and docs/ is executed, so the docs cannot drift from the code.

- ```python blocks run, in order, one namespace per page, in a temporary folder.
- ```bash blocks are dry-run: every command must be one we know, and its flags must parse
  (``fusionkit`` commands, and the example scripts that call them, are parsed and the run
  configuration is built, with its files and keys checked; scripts and modules must
  exist). Nothing is trained or installed.
- Every ``pip install`` anywhere in the pages installs this project from a checkout (``.``
  with extras that exist, or a wheel built from it) or a package it depends on: never
  ``fusionkit`` from the index, which is another project.
- ```toml blocks must be valid run configurations.
Blocks without a language (diagrams) and ```text blocks are prose.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import shlex
import sys
from pathlib import Path

import pytest

from fusionkit import cli
from fusionkit.errors import ConfigError
from fusionkit.models.cmath.config import from_dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = set(PROJECT["optional-dependencies"])
REQUIREMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
DEPENDENCIES = {
    REQUIREMENT.match(req).group(0).lower()
    for req in itertools.chain(PROJECT["dependencies"], *PROJECT["optional-dependencies"].values())
} - {PROJECT["name"]}
EXAMPLES = {"examples/cmath/train.py": "train", "examples/cmath/predict.py": "predict"}


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


def install_specs(line: str) -> list[str]:
    """What the ``pip install`` commands of a line ask for (options and comments dropped)."""
    specs = []
    for part in line.split(" #")[0].split("&&"):
        words = shlex.split(part)
        if words[:2] == ["pip", "install"]:
            specs += [w for w in words[2:] if not w.startswith("-")]
    return specs


def check_install(spec: str) -> None:
    """``spec`` installs this project from a checkout or a wheel built from it, or a
    package it depends on; never another project of the index."""
    local = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", spec)
    if local:
        unknown = set((local.group(1) or "").split(",")) - EXTRAS - {""}
        assert not unknown, f"pip extras {unknown} not in pyproject ({sorted(EXTRAS)})"
        return
    if spec.endswith(".whl") or spec.startswith(("dist/", "./")):
        return
    name = REQUIREMENT.match(spec).group(0).lower()
    assert name in DEPENDENCIES, f"pip install {spec}: not this project nor one of its dependencies"


def dry_run(words: list[str]) -> None:
    """Check one shell command of the docs without running it."""
    head, rest = words[0], words[1:]
    if head in ("git", "cd", "mkdocs", "apt-get", "bash"):
        if head == "bash":
            assert (ROOT / rest[0]).is_file(), f"{rest[0]} does not exist"
        return
    if head == "pip":
        for spec in install_specs(" ".join(shlex.quote(w) for w in words)):
            check_install(spec)
        return
    if head == "torchrun":
        start = next(i for i, w in enumerate(rest) if w == "-m" or w.endswith(".py"))
        return dry_run(["python", *rest[start:]])
    if head == "fusionkit":
        return dry_run(["python", "-m", "fusionkit", *rest])
    assert head == "python", f"a command the docs test does not know: {words}"
    target, args = _python_target(rest)
    if target in EXAMPLES:
        args, target = [EXAMPLES[target], *args], "fusionkit"
    if target == "fusionkit":
        parsed = cli.parser().parse_args(args)
        if parsed.command in ("train", "features"):
            cli._config(parsed)
    elif target.endswith(".py"):
        assert (ROOT / target).is_file(), f"{target} does not exist"
    else:
        assert importlib.util.find_spec(target) is not None, f"module {target} does not exist"


def test_every_install_line_installs_this_project():
    lines = [
        line for page in PAGES for line in re.findall(r"pip install [^`\n]*", page.read_text())
    ]
    assert lines, "no install line found"
    for line in lines:
        for spec in install_specs(line):
            check_install(spec)


def test_the_install_check_refuses_another_project():
    for spec in ("fusionkit", "fusionkit[text]", "fusionkit==0.10.1", "requests"):
        with pytest.raises(AssertionError):
            check_install(spec)
    check_install(".[text,audio]")
    check_install("torch==2.13.0")


def _python_pages():
    """Pages with python blocks; those that train a model are end-to-end runs (slow)."""
    for page in PAGES:
        code = blocks(page, "python")
        if code:
            slow = any("cli.main(" in block or "fit(" in block for block in code)
            yield pytest.param(page, id=page.name, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("page", _python_pages())
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(blocks(page, "python")):
        exec(compile(block, f"{page.name}[python block {i}]", "exec", dont_inherit=True), namespace)


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "bash")], ids=lambda p: p.name)
def test_shell_blocks_parse(page):
    for block in blocks(page, "bash"):
        for words in _commands(block):
            dry_run(words)


def test_toml_blocks_are_configs():
    for page in PAGES:
        for block in blocks(page, "toml"):
            from_dict(tomllib.loads(block))


def test_the_dry_run_catches_a_wrong_flag_and_an_unknown_command():
    with pytest.raises(SystemExit):
        dry_run(shlex.split("python examples/cmath/train.py --epoch 3"))
    with pytest.raises(ConfigError, match=r"model\.nope"):
        dry_run(shlex.split("fusionkit train --set model.nope=1"))
    with pytest.raises(AssertionError, match="does not know"):
        dry_run(["rm", "-rf", "/"])
