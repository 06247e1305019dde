"""The package's layering, read from the import statements: the core imports no other sub-package, ``images``
only the core, neither ``pretrain`` nor ``classification`` imports the other, and each toolkit adapter imports only
the core (a user with one toolkit installed can use its plugin)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pomp_plugins"

#: sub-package -> the sibling sub-packages it may import
ALLOWED = {
    "prompt": set(),
    "images": {"prompt"},
    "pretrain": {"prompt", "images"},
    "classification": {"prompt", "images"},
    "detectron2": {"prompt"},
    "mmseg": {"prompt"},
}


def imported_subpackages(path: Path, package: Path = PACKAGE) -> set[str]:
    """The ``pomp_plugins`` sub-packages that a module imports (absolute or relative, anywhere in the file)."""
    parts = path.relative_to(package.parent).with_suffix("").parts  # ("pomp_plugins", "pretrain", "trainer")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's own package
                base = list(parts[: len(parts) - node.level])
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [alias.name] for alias in node.names] if not node.module else [target]
            else:
                names = [(node.module or "").split(".")]
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        else:
            continue
        found |= {name[1] for name in names if len(name) > 1 and name[0] == "pomp_plugins"}
    return found


@pytest.mark.parametrize("subpackage", sorted(ALLOWED))
def test_subpackages_import_only_the_layers_below_them(subpackage):
    modules = sorted((PACKAGE / subpackage).rglob("*.py"))
    assert modules
    wrong = {
        str(module.relative_to(PACKAGE)): sorted(imported - ALLOWED[subpackage] - {subpackage})
        for module in modules
        if (imported := imported_subpackages(module)) - ALLOWED[subpackage] - {subpackage}
    }
    assert not wrong, f"{subpackage} imports what it may not: {wrong}"


def test_the_import_reader_sees_relative_and_absolute_imports(tmp_path):
    module = PACKAGE / "pretrain" / "trainer.py"
    assert {"prompt", "images"} <= imported_subpackages(module)
    assert "classification" not in imported_subpackages(module)
    # the reader itself: a relative import of a sibling package and an absolute one both count
    fake = tmp_path / "pomp_plugins" / "pretrain" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..classification.zeroshot import f\nimport pomp_plugins.mmseg\nfrom .. import images\n")
    assert imported_subpackages(fake, tmp_path / "pomp_plugins") == {"classification", "mmseg", "images"}
