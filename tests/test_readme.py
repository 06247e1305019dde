"""The README's two set-up commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_commands() -> list[str]:
    """The set-up section's commands that run the installer (the section also holds the CUDA recipe that comes
    before it)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [block for block in re.findall(r"```bash\n(.+?)\n```", section, re.S) if "tools/install.sh" in block]


def test_readme_has_exactly_two_setup_commands():
    demo, tests = setup_commands()
    assert demo == "bash tools/install.sh && .venv/bin/python tools/demo.py"
    lint = ".venv/bin/ruff check . && .venv/bin/ruff format --check ."
    assert tests == f"bash tools/install.sh && {lint} && .venv/bin/python -m pytest"


def test_ci_runs_the_readme_test_command():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert setup_commands()[1] in ci_lines
    assert "export HF_HUB_OFFLINE=1" in ci_lines
