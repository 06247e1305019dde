"""Every measured number in the README is the value of a committed benchmark result, rounded as written.

In the README's source a measured number is followed by ``<!-- FILE.json: EXPR -->``: ``FILE`` in bench/results/,
``EXPR`` a key path into it (``results.n_ctx_4.ours.ms_per_step``, ``results[0].seconds``) or arithmetic of such
paths (``100*ratios.x``, ``a/b``). The number before the comment must equal EXPR's value to the precision it is
written with. A goal rather than a measurement is marked ``<!-- target -->``. The measurement sections may hold no
untagged timing, size or ratio, every cited result must say where and when it was measured, and the provenance table
must be bench/provenance.py's rendering of provenance.json.
"""

import importlib.util
import json
import re
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = (ROOT / "README.md").read_text()
TARGET = re.compile(r"(?P<number>[+-]?\d[\d,]*(?:\.\d+)?(?:e-?\d+)?)(?P<unit>[^<>\d|`]{0,12}?)<!-- target -->")
# sections whose every timing, memory size, speed or ratio must be tagged
MEASUREMENT_SECTIONS = ("## Benchmarks", "### Cost (bench/detectron2_head.py)", "### Benchmark\n")
UNTAGGED_MEASUREMENT = re.compile(r"(?<![\w.-])\d[\d,]*(?:\.\d+)?\s?(?:ms|s|GiB|MiB|images/s|x|%)(?![\w-]| \d)")


def _numbers_module():
    spec = importlib.util.spec_from_file_location("readme_numbers", ROOT / "bench" / "readme_numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


numbers = _numbers_module()
TAG, evaluate, load = numbers.TAG, numbers.evaluate, numbers.load


def tags() -> list[re.Match]:
    return list(TAG.finditer(README))


def test_the_readme_tags_its_numbers():
    files = {tag["file"] for tag in tags()}
    assert len(tags()) > 60 and len(files) >= 7


@pytest.mark.parametrize("tag", tags(), ids=lambda tag: f"{tag['number']}{tag['unit'].strip()}:{tag['expr']}")
def test_each_tagged_number_is_its_results_value(tag):
    written = Decimal(tag["number"].replace(",", ""))
    value = evaluate(load(tag["file"]), tag["expr"])
    tolerance = float(Decimal(1).scaleb(written.as_tuple().exponent)) / 2
    assert abs(value - float(written)) <= tolerance * (1 + 1e-9), (
        f"README says {tag['number']}, {tag['file']} {tag['expr']} = {value:.6g}"
    )


def test_measurement_sections_have_no_untagged_numbers():
    untagged = []
    for heading in MEASUREMENT_SECTIONS:
        start = README.index(heading)
        level = heading.split(" ")[0]
        end = min(
            (i for i in (README.find(f"\n{h} ", start + 1) for h in ("#", "##", "###")[: len(level)]) if i > 0),
            default=len(README),
        )
        text = TARGET.sub("", TAG.sub("", README[start:end]))
        text = re.sub(r"<!-- provenance-table -->.*?<!-- /provenance-table -->", "", text, flags=re.S)
        text = re.sub(r"`[^`]*`", "", text)  # file names and options, e.g. `x86_64-2threads.json`
        untagged += [f"{heading.strip()}: {match.group(0)!r}" for match in UNTAGGED_MEASUREMENT.finditer(text)]
    assert not untagged, f"numbers without a source: {untagged}"


def provenance_module():
    spec = importlib.util.spec_from_file_location("provenance", ROOT / "bench" / "provenance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_cited_result_says_where_and_when_it_was_measured():
    provenance = json.loads((RESULTS / "provenance.json").read_text())["results"]
    for name in sorted({tag["file"] for tag in tags()}):
        entry = provenance.get(name) or load(name).get("provenance")
        assert entry, f"{name} has no provenance"
        assert entry["machine"] and entry["commit"] and "threads" in entry, name
        assert entry["threads"] is not None or "H200" in entry["machine"], f"{name}: CPU threads not recorded"
        if entry.get("stale"):
            assert "stale" in README, "stale results must be said to be stale"


def test_the_provenance_table_is_the_committed_provenance():
    table = README.split("<!-- provenance-table -->\n", 1)[1].split("\n<!-- /provenance-table -->", 1)[0]
    provenance = json.loads((RESULTS / "provenance.json").read_text())
    assert table == provenance_module().render_table(provenance)


def test_new_results_record_their_own_provenance(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_common", ROOT / "bench" / "common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    common.write_result({"benchmark": "x", "machine": "test machine"}, str(tmp_path / "x.json"))
    recorded = json.loads((tmp_path / "x.json").read_text())["provenance"]
    assert recorded["machine"] == "test machine" and recorded["threads"] >= 1 and recorded["command"]
    assert recorded["commit"] is None or re.fullmatch(r"[0-9a-f]{7,}(-dirty)?", recorded["commit"])


def test_data_facts_of_the_imagenet21k_p_section():
    from pomp_plugins.prompt import get_vocabulary

    names = get_vocabulary("imagenet21k-p").names
    counts = Counter(names)
    shared = sum(count > 1 for count in counts.values())
    section = " ".join(README.split("### ImageNet-21K-P class names", 1)[1].split("\n### ", 1)[0].split())
    assert f"{len(names):,} prompt names" in section and f"{len(counts):,} distinct names" in section
    assert f"{shared:,} names stand for more than one class" in section and counts["monitor"] == 4
