"""Where each committed benchmark result comes from, and whether the code it timed has changed since.

Results written by ``bench/common.py``'s ``write_result`` carry their own ``provenance`` (commit, threads, machine,
command). Older results do not: for them this script takes from git the commit that last wrote the file. For every
result it lists the commits that changed the timed code after that commit (``stale`` when there is any besides
formatting), and writes ``bench/results/provenance.json``. The README's provenance table is ``render_table()`` of
that file (tests/test_readme_numbers.py compares the two)::

    .venv/bin/python bench/provenance.py            # rewrite bench/results/provenance.json and the README's table
    .venv/bin/python bench/provenance.py --table    # print the README's table
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PROVENANCE = RESULTS / "provenance.json"
# result-file prefix -> the code its numbers time
TIMED_CODE = {
    "pretrain_step": [
        "bench/pretrain_step.py",
        "bench/common.py",
        "pomp_plugins/pretrain/objective.py",
        "pomp_plugins/pretrain/gradient.py",
        "pomp_plugins/pretrain/cuda_graphs.py",
        "pomp_plugins/prompt/text_encoder.py",
        "pomp_plugins/prompt/loss.py",
        "pomp_plugins/prompt/clip.py",
    ],
    "profile_pretrain_step": [
        "bench/profile_pretrain_step.py",
        "pomp_plugins/pretrain/objective.py",
        "pomp_plugins/prompt/text_encoder.py",
        "pomp_plugins/prompt/loss.py",
        "pomp_plugins/prompt/clip.py",
    ],
    "pretrain_e2e": [
        "bench/pretrain_e2e.py",
        "pomp_plugins/pretrain",
        "pomp_plugins/classification/image_folder.py",
        "pomp_plugins/prompt/text_encoder.py",
        "pomp_plugins/prompt/loss.py",
        "pomp_plugins/prompt/clip.py",
    ],
    "encode_vocab": [
        "bench/encode_vocab.py",
        "bench/common.py",
        "pomp_plugins/prompt/text_encoder.py",
        "pomp_plugins/prompt/clip.py",
    ],
    "detectron2_head": [
        "bench/detectron2_head.py",
        "bench/common.py",
        "pomp_plugins/detectron2/roi_heads.py",
        "pomp_plugins/detectron2/fast_rcnn.py",
        "pomp_plugins/detectron2/zero_shot.py",
        "pomp_plugins/detectron2/vocabulary.py",
        "pomp_plugins/prompt/text_encoder.py",
        "pomp_plugins/prompt/cache.py",
        "pomp_plugins/prompt/clip.py",
    ],
    "mmseg_head": [
        "bench/mmseg_head.py",
        "bench/common.py",
        "pomp_plugins/mmseg/zsseg_head.py",
        "pomp_plugins/mmseg/drop_in.py",
        "pomp_plugins/mmseg/classifier.py",
        "mmseg_configs/_base_/models",
    ],
}
# commits that only reformatted code (ruff), which changes no timing
FORMATTING_ONLY = ("18309ba",)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def threads_of(result: dict) -> int | None:
    """CPU threads as the result records them (``omp_num_threads``, or ``N threads`` in ``machine``)."""
    if "omp_num_threads" in result:
        return int(result["omp_num_threads"])
    match = re.search(r"(\d+) threads?", result.get("machine", ""))
    return int(match.group(1)) if match else None


def entry_for(path: Path) -> dict:
    """The result's own ``provenance`` (newer results), else the commit that last wrote it (from git); plus the
    commits that changed the timed code since."""
    result = json.loads(path.read_text())
    benchmark = next(prefix for prefix in sorted(TIMED_CODE, key=len, reverse=True) if path.name.startswith(prefix))
    recorded = result.get("provenance")
    if recorded and recorded.get("commit"):
        commit = recorded["commit"].removesuffix("-dirty")
        entry = {"benchmark": benchmark, **recorded}
    else:
        commit = git("log", "-1", "--format=%h", "--", str(path.relative_to(ROOT)))
        entry = {
            "benchmark": benchmark,
            "machine": result.get("machine"),
            "threads": threads_of(result),
            "commit": commit,
            "recorded": "reconstructed from git: the commit that last wrote the file",
        }
    entry["commit_date"] = git("log", "-1", "--format=%ad", "--date=short", commit)
    changed = [
        line
        for line in git("log", "--format=%h %s", f"{commit}..HEAD", "--", *TIMED_CODE[benchmark]).splitlines()
        if line and not line.startswith(FORMATTING_ONLY)
    ]
    entry["code_changed_since"] = [line[:100] for line in changed]
    entry["stale"] = bool(changed) or entry["commit"].endswith("-dirty")
    return entry


def collect() -> dict:
    names = sorted(p for p in RESULTS.glob("*.json") if p != PROVENANCE and not p.name.startswith("mutation"))
    return {"as_of": git("rev-parse", "--short", "HEAD"), "results": {p.name: entry_for(p) for p in names}}


def render_table(provenance: dict) -> str:
    """The README's table: each result file, where and when it was measured, and whether it is stale."""
    rows = [
        "| result (`bench/results/`) | machine | CPU threads | commit | since then |",
        "|---|---|---|---|---|",
    ]
    for name, entry in provenance["results"].items():
        threads = "not recorded" if entry["threads"] is None else str(entry["threads"])
        changes = len(entry["code_changed_since"])
        since = (
            f"**stale**: {changes} commit{'s' * (changes != 1)} changed the timed code" if entry["stale"] else "current"
        )
        rows.append(
            f"| `{name}` | {entry['machine']} | {threads} | {entry['commit']} ({entry['commit_date']}) | {since} |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", action="store_true", help="print the README's table of the committed file instead")
    args = parser.parse_args(argv)
    if args.table:
        print(render_table(json.loads(PROVENANCE.read_text())))
        return 0
    provenance = collect()
    PROVENANCE.write_text(json.dumps(provenance, indent=2) + "\n")
    readme = ROOT / "README.md"
    start, end = "<!-- provenance-table -->\n", "\n<!-- /provenance-table -->"
    text = readme.read_text()
    if start in text and end in text:
        before, rest = text.split(start, 1)
        readme.write_text(before + start + render_table(provenance) + end + rest.split(end, 1)[1])
    print(f"wrote {PROVENANCE} and the README's table")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
