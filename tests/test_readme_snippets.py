"""The README's code runs as written.

Each fenced block is preceded by a line saying what it needs:

- ``<!-- runnable: NAME -->``: run here, on the tiny model, in a fresh folder that holds links to the repository's
  ``tools/``, configs and venv (the blocks of one NAME run in order in the same folder; a ``python`` block is executed,
  each command of a ``bash`` block is run by bash);
- ``*On a CPU, as written:*``: runs on a CPU after the set-up (the tools' own tests cover the same paths);
- ``*Needs ...:*``: needs a GPU, data or weights the set-up does not provide;
- ``<!-- config -->``: an mmseg config fragment, loaded by mmengine.

Every command line of every ``bash`` block that runs one of this repository's scripts or modules has its options
checked by that tool's own argument parser (and detectron2 ``KEY VALUE`` overrides against the config they modify).
"""

import argparse
import os
import re
import runpy
import shlex
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(?P<lang>\w+)\n(?P<code>.*?)^```$", re.M | re.S)
MARKER = re.compile(r"^(?:<!-- (runnable: [\w-]+|config) -->|\*(On a CPU, as written|Needs [^*]+):\*)\s*$")
# blocks kept by others, without markers: the set-up commands are CI's (tests/test_readme.py); the mutation-testing
# commands are maintained with that code
UNMARKED_SECTIONS = ("## Set up", "### Mutation testing")
LINKED = ("tools", "bench", "detectron2_configs", "mmseg_configs")


def blocks() -> list[dict]:
    found = []
    for match in BLOCK.finditer(README):
        before = README[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        headings = re.findall(r"^(#{1,4} .+)$", README[: match.start()], re.M)
        found.append(
            {
                "lang": match["lang"],
                "code": match["code"],
                "marker": (marker.group(1) or marker.group(2)) if marker else None,
                "section": headings[-1] if headings else "",
                "line": README[: match.start()].count("\n") + 1,
            }
        )
    return found


def commands(code: str) -> list[list[str]]:
    """The command lines of a bash block as argument lists: continuations joined, comments dropped, and each
    ``&&``/``|``/``;`` part apart."""
    lines = code.replace("\\\n", " ").splitlines()
    parts = []
    for line in lines:
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in words + ["&&"]:
            if word in ("&&", "|", ";", "||"):
                if current:
                    parts.append(current)
                current = []
            else:
                current.append(word)
    return parts


def repository_invocation(words: list[str]) -> tuple[str, str, list[str]] | None:
    """``("script", path, args)`` or ``("module", name, args)`` when the command runs this repository's code with
    a Python interpreter or torchrun; ``None`` otherwise."""
    while words and re.fullmatch(r"\w+=.*", words[0]):  # VAR=value prefixes
        words = words[1:]
    if not words:
        return None
    program = Path(words[0]).name
    rest = words[1:]
    if program == "torchrun":
        while rest and not rest[0].endswith(".py"):
            rest = rest[1:]
    elif program not in ("python", "python3"):
        return None
    if rest[:1] == ["-m"] and rest[1].startswith("pomp_plugins"):
        return "module", rest[1], rest[2:]
    if rest and rest[0].endswith(".py") and (ROOT / rest[0]).is_file():
        return "script", rest[0], rest[1:]
    return None


def readme_commands() -> list[tuple[str, list[str]]]:
    found = []
    for block in blocks():
        if block["lang"] != "bash":
            continue
        for words in commands(block["code"]):
            if repository_invocation(words):
                found.append((f"line {block['line']}: {shlex.join(words)}"[:150], words))
    return found


def test_every_block_says_what_it_needs():
    unmarked = [
        f"line {b['line']} ({b['section']})"
        for b in blocks()
        if b["marker"] is None and not b["section"].startswith(UNMARKED_SECTIONS)
    ]
    assert not unmarked, f"blocks without a marker of what they need: {unmarked}"
    assert len(readme_commands()) > 30


class Parsed(BaseException):
    """Raised by the patched ``parse_args`` once a tool's arguments have parsed."""

    def __init__(self, namespace: argparse.Namespace):
        self.namespace = namespace


def check_detectron2_overrides(namespace: argparse.Namespace) -> None:
    """``KEY VALUE`` pairs name config keys that exist (merged onto the config they modify)."""
    if not getattr(namespace, "opts", None) or not getattr(namespace, "config_file", None):
        return
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    from pomp_plugins.detectron2 import add_pomp_config

    cfg = get_cfg()
    add_pomp_config(cfg)
    if getattr(namespace, "zoo_config", None):
        cfg.merge_from_file(model_zoo.get_config_file(namespace.zoo_config))
    if (ROOT / namespace.config_file).is_file():
        cfg.merge_from_file(str(ROOT / namespace.config_file))
    cfg.merge_from_list(namespace.opts)


@pytest.mark.parametrize("words", [words for _, words in readme_commands()], ids=[i for i, _ in readme_commands()])
def test_readme_command_options_parse(words, monkeypatch, capsys):
    kind, target, args = repository_invocation(words)
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(parser, argv=None, namespace=None):
        raise Parsed(original(parser, argv, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    monkeypatch.setattr(sys, "argv", [target, *args])
    monkeypatch.chdir(ROOT)
    try:
        if kind == "module":
            runpy.run_module(target, run_name="__main__", alter_sys=False)
        else:
            runpy.run_path(str(ROOT / target), run_name="__main__")
    except Parsed as parsed:
        check_detectron2_overrides(parsed.namespace)
        return
    except SystemExit as exit:
        assert exit.code in (0, None), f"{shlex.join(words)}: {capsys.readouterr().err.strip()}"
        return
    pytest.fail(f"{shlex.join(words)}: the tool never parsed its arguments")


def runnable_groups() -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for block in blocks():
        if block["marker"] and block["marker"].startswith("runnable: "):
            groups[block["marker"].removeprefix("runnable: ")].append(block)
    return dict(groups)


@pytest.mark.parametrize("name", sorted(runnable_groups()))
def test_runnable_blocks_run(name, tmp_path, monkeypatch):
    for link in LINKED:
        (tmp_path / link).symlink_to(ROOT / link)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))  # .venv/bin/python is the interpreter running the tests
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "POMP_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    monkeypatch.setenv("POMP_CACHE_DIR", env["POMP_CACHE_DIR"])
    monkeypatch.chdir(tmp_path)
    for block in runnable_groups()[name]:
        if block["lang"] == "bash":
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block["code"]],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert result.returncode == 0, f"README line {block['line']}:\n{result.stderr[-3000:]}"
        else:
            exec(compile(block["code"], f"README.md:{block['line']}", "exec"), {"__name__": "__readme__"})


def test_config_fragments_load(tmp_path):
    from mmengine.config import Config

    fragments = [b for b in blocks() if b["marker"] == "config"]
    assert fragments
    for index, block in enumerate(fragments):
        path = tmp_path / f"fragment_{index}.py"
        path.write_text(block["code"])
        cfg = Config.fromfile(str(path))
        assert cfg.model.decode_head.type, f"README line {block['line']}"
