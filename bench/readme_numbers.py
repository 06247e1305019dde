#!/usr/bin/env python
"""The README's measured numbers and the committed results they come from.

In the README's source a measured number is followed by ``<!-- FILE.json: EXPR -->``: ``FILE`` in bench/results/,
``EXPR`` a key path into it (``results.n_ctx_4.ours.ms_per_step``, ``results[0].seconds``) or arithmetic of such
paths (``100*ratios.x``, ``a/b``). tests/test_readme_numbers.py checks each number against its value;

    .venv/bin/python bench/readme_numbers.py --update

rewrites every tagged number from the results after a benchmark rerun, at the precision it is written with (and
prints each change, so the prose around a changed number can be checked).
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import re
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
NUMBER = r"(?P<number>[+-]?\d[\d,]*(?:\.\d+)?(?:e-?\d+)?)(?P<unit>[^<>\d|`]{0,12}?)"
TAG = re.compile(NUMBER + r"<!-- (?P<file>[\w.-]+\.json): (?P<expr>[^>]+?) -->")
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def lookup(result: dict, path: str) -> float:
    value = result
    for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        value = value[int(index)] if index else value[key]
    return float(value)


def evaluate(result: dict, expr: str) -> float:
    """EXPR's value: numbers, key paths and + - * / with parentheses."""
    paths = {}

    def name_for(match: re.Match) -> str:
        paths[f"_p{len(paths)}"] = match.group(0)
        return f"_p{len(paths) - 1}"

    code = re.sub(r"[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*|\[\d+\])*", name_for, expr)

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            return OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name):
            return lookup(result, paths[node.id])
        raise ValueError(f"not an expression of result keys: {expr!r}")

    return walk(ast.parse(code, mode="eval"))


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def written_like(value: float, written: str) -> str:
    """``value`` in the form of ``written``: its decimals, thousands separators, sign and exponent notation."""
    if "e" in written:
        digits = len(written.split("e")[0].split(".")[1]) if "." in written.split("e")[0] else 0
        return f"{value:.{digits}e}".replace("e-0", "e-").replace("e+00", "e0")
    decimals = -Decimal(written.replace(",", "")).as_tuple().exponent
    text = f"{value:{',' if ',' in written else ''}.{max(decimals, 0)}f}"
    return f"+{text}" if written.startswith("+") and value >= 0 else text


def update(text: str) -> tuple[str, list[str]]:
    """``text`` with every tagged number rewritten from its result, and the changes made."""
    changes = []

    def rewrite(tag: re.Match) -> str:
        new = written_like(evaluate(load(tag["file"]), tag["expr"]), tag["number"])
        if new != tag["number"]:
            changes.append(f"{tag['number']} -> {new}{tag['unit']} ({tag['file']}: {tag['expr']})")
        return tag.group(0).replace(tag["number"], new, 1)

    return TAG.sub(rewrite, text), changes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="rewrite the README's tagged numbers from the results")
    args = parser.parse_args()
    text, changes = update(README.read_text())
    print("\n".join(changes) or "every tagged number equals its result")
    if args.update and changes:
        README.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
