#!/usr/bin/env python
"""Mutation testing of the formula modules with poodle, one module at a time, against its own fast tests only.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python tools/mutation_test.py [MODULE ...]

For each module of ``MODULES`` (all by default) poodle generates its mutants (one changed operator, comparison,
number, keyword, call, return ... per mutant) and runs the module's tests (``-x``, ``-m "not slow"``) on each,
with one worker. Writes ``bench/results/mutation/<module>.json`` (poodle's per-module JSON: every trial) and then
``bench/results/mutation_report.{json,md}`` from all of them: per-module generated / killed / survived / timed-out
counts and every survivor with the reason in ``SURVIVORS`` (an equivalent or harmless mutant), or flagged
UNEXPLAINED. ``--report-only`` rebuilds the report from the existing per-module files.

Each mutant's tests run in a child forked from a poodle worker that imported torch, open_clip and pytest once
(``runner``, poodle's runner hook): a fresh ``python -m pytest`` spends ~10 s importing on this 2-core machine, the
tests themselves ~1 s. The child imports ``pomp_plugins`` from poodle's mutated copy (first on ``sys.path``); the
parent never imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

_CASCADE, _C4 = "Detic_LbaseI_POMP_R5021k_640b64_4x_ft4x_max-size", "Detic_OVCOCO_POMP_R50_1x_max-size"
DETIC_PARITY = [
    f"tests/test_detic_parity.py::test_same_detections[{_CASCADE}-False]",
    f"tests/test_detic_parity.py::test_same_detections[{_CASCADE}-True]",
    f"tests/test_detic_parity.py::test_same_losses[{_CASCADE}]",
    f"tests/test_detic_parity.py::test_same_detections[{_C4}-False]",
    f"tests/test_detic_parity.py::test_same_losses[{_C4}]",
]

# module -> the fast tests that exercise it (smallest selection that covers it).
MODULES: dict[str, list[str]] = {
    "pomp_plugins/prompt/loss.py": ["tests/test_loss.py"],
    "pomp_plugins/prompt/text_encoder.py": ["tests/test_text_encoder.py", "tests/test_pretrain_text_encoder.py"],
    "pomp_plugins/prompt/packed_attention.py": ["tests/test_text_encoder.py", "tests/test_pretrain_text_encoder.py"],
    "pomp_plugins/prompt/classifier.py": ["tests/test_classifier.py"],
    "pomp_plugins/pretrain/data.py": [
        "tests/test_pretrain_data.py",
        "tests/test_pretrain_seeds.py",
        "tests/test_pretrain_randaugment.py",
    ],
    "pomp_plugins/pretrain/split.py": ["tests/test_pretrain_data.py", "tests/test_pretrain_seeds.py"],
    "pomp_plugins/pretrain/randaugment.py": ["tests/test_pretrain_randaugment.py"],
    "pomp_plugins/pretrain/gradient.py": ["tests/test_pretrain_step.py"],
    "pomp_plugins/pretrain/objective.py": [
        "tests/test_pretrain_step.py",
        "tests/test_pretrain_seeds.py",
        "tests/test_pretrain_text_encoder.py",
    ],
    # the in-process tests only: the file's tool tests start a fresh interpreter (~15 s a mutant)
    "pomp_plugins/images/accuracy.py": [
        "tests/test_eval_zeroshot.py::test_accuracy_counts_on_known_logits",
        "tests/test_zeroshot_metrics.py",
    ],
    "pomp_plugins/detectron2/zero_shot.py": [
        "tests/test_detectron2_classifier.py",
        "tests/test_detectron2_box_predictor.py",
    ],
    # Detic's own model (the test-only oracle) on one cascade (sigmoid CE, federated loss, image labels) and one C4
    # (ignored zero-count classes, image labels) config: the parity tests of these two pairs only (~35 s)
    "pomp_plugins/detectron2/fast_rcnn.py": [
        "tests/test_detectron2_box_predictor.py",
        "tests/test_detectron2_detector.py::test_image_label_loss_is_detics_max_size_loss",
        "tests/test_detectron2_detector.py::test_training_without_class_frequencies_fails_clearly",
        *DETIC_PARITY,
    ],
    "pomp_plugins/detectron2/roi_heads.py": ["tests/test_detectron2_roi_heads.py", *DETIC_PARITY],
    "pomp_plugins/mmseg/zsseg_head.py": ["tests/test_zsseg_head.py"],
    "pomp_plugins/mmseg/drop_in.py": ["tests/test_mmseg_drop_in.py"],
    "pomp_plugins/mmseg/classifier.py": [
        "tests/test_mmseg_drop_in.py::test_drop_in_masks_unseen_logits_in_training_only",
        "tests/test_mmseg_drop_in.py::test_a_training_step_with_a_split_has_the_loss_of_the_model_without_the_unseen_channels",
        "tests/test_zsseg_head.py",
        "tests/test_mmseg_classifier.py",
    ],
    "pomp_plugins/mmseg/clip_stage.py": ["tests/test_zsseg_head.py"],
    "pomp_plugins/mmseg/metric.py": ["tests/test_mmseg_metric.py"],
}

# Mutants poodle makes that cannot change a result, keyed by (module, line, mutant text). Anything that survives
# and is not here is reported UNEXPLAINED.
GPU_ONLY = (
    "equivalent on a CPU: the branch runs only with CUDA graphs on a CUDA device (the CPU tests assert it "
    "is not taken); tests/test_pretrain_cuda_graphs.py covers it on a GPU"
)
BATCHING = (
    "equivalent: the text batch size; batches are cut after their last EOT and results do not depend on "
    "it (tests/test_text_encoder.py::test_batching_and_length_sorting_do_not_change_results)"
)
ONE_ELEMENT = "equivalent: `new_zeros([1])` has one element, `[-1]` is `[0]`"
PLACEHOLDER = (
    "equivalent: the placeholder buffers `trained` and `seen` are replaced by `_set` before `__init__` returns; "
    "their first size never shows"
)
SURVIVORS: dict[tuple[str, int, str], str] = {
    ("pomp_plugins/pretrain/data.py", 29, "-1"): "equivalent: `generate_state(1)` has one word, `[-1]` is `[0]`",
    ("pomp_plugins/pretrain/data.py", 23, "5"): "harmless: PROMPT_INIT = 5 is still a tag of its own (the tests "
    "assert the four tags are distinct); it only changes which N(0, 0.02) draw a run seed starts from",
    ("pomp_plugins/pretrain/objective.py", 35, "257"): "equivalent: any token bucket gives the same numbers (the "
    "fixed layout only pads to a multiple of it; tests/test_pretrain_text_encoder.py checks other buckets); it "
    "changes how many CUDA-graph shapes a run captures",
    ("pomp_plugins/pretrain/objective.py", 57, "None"): GPU_ONLY,
    ("pomp_plugins/pretrain/objective.py", 112, "encoder.tower.packable"): GPU_ONLY,
    ("pomp_plugins/pretrain/objective.py", 114, "None"): GPU_ONLY,
    ("pomp_plugins/prompt/text_encoder.py", 180, "False"): "equivalent on a CPU (only CPU-to-CUDA copies take this "
    "branch); on a GPU a blocking copy gives the same values, only later",
    ("pomp_plugins/prompt/text_encoder.py", 226, "-1"): "equivalent: `cumsum` over the last dimension of a 1-D tensor "
    "is over dimension 0",
    ("pomp_plugins/classification/zeroshot.py", 31, "4097"): BATCHING,
    ("pomp_plugins/classification/zeroshot.py", 31, "4095"): BATCHING,
    ("pomp_plugins/classification/zeroshot.py", 81, "True"): "harmless: `dynamic=True` compiles shape-generic "
    "code for the same features (the tools compile only on request; slower, not different)",
    ("pomp_plugins/classification/zeroshot.py", 130, "' '"): "harmless: the progress bar's length (display only; "
    "ignored while the bar is off)",
    ("pomp_plugins/mmseg/classifier.py", 71, "1"): PLACEHOLDER,
    ("pomp_plugins/mmseg/classifier.py", 72, "1"): PLACEHOLDER,
    ("pomp_plugins/mmseg/clip_stage.py", 115, "+1"): "equivalent: the logits are `[K, C]`, dimension 1 is the last",
    ("pomp_plugins/mmseg/drop_in.py", 118, "' '"): "equivalent: `__new__` reads only `head_type` (`text_classifier` "
    "is `__init__`'s)",
    ("pomp_plugins/mmseg/drop_in.py", 125, "' '"): "equivalent: `__init__` never reads `head_type` (`__new__` chose "
    "the class from it)",
    ("pomp_plugins/mmseg/metric.py", 19, "a * b"): "equivalent on IoUs: for a, b in [0, 100] or NaN, `a + b` and "
    "`a * b` are NaN together",
    ("pomp_plugins/mmseg/metric.py", 84, "None"): "equivalent: without a split only mIoU is reported and the table has "
    "no split column; `iou[None]` has the same mean",
    ("pomp_plugins/detectron2/fast_rcnn.py", 200, "-1"): ONE_ELEMENT,
    ("pomp_plugins/detectron2/fast_rcnn.py", 242, "-1"): ONE_ELEMENT,
    ("pomp_plugins/detectron2/fast_rcnn.py", 202, "2"): "equivalent: the target gets one more column, which the "
    "next line cuts off with the background's (`target[:, :num_classes]`)",
    ("pomp_plugins/detectron2/roi_heads.py", 77, "-1"): "equivalent: every stage classifies the same inference "
    "classes (`set_test_class_embeddings` sets them all), the last stage's count is the first's",
    ("pomp_plugins/detectron2/roi_heads.py", 159, "-1"): "equivalent: every image's proposals are on the same device",
    ("pomp_plugins/detectron2/roi_heads.py", 269, "-1"): "equivalent: a zero (`* 0.0`) connected to the deltas "
    "instead of the scores; both are in the box losses of the same batch already",
    ("pomp_plugins/mmseg/zsseg_head.py", 279, "+2"): "equivalent: the images are `[B, 3, H, W]`, `shape[2:]` is "
    "`shape[-2:]`",
}

SAMPLE = 40  # mutants per module (~5 s each on 2 shared cores), unless SAMPLES says otherwise; 0: all
SAMPLES = {
    "pomp_plugins/prompt/loss.py": 0,
    "pomp_plugins/pretrain/gradient.py": 0,
    "pomp_plugins/pretrain/objective.py": 50,
    "pomp_plugins/pretrain/data.py": 50,
    # ~10 s a mutant (mmseg heads), ~30 s (Detic's parity tests): the new modules' run fits in about an hour
    "pomp_plugins/mmseg/classifier.py": 30,
    "pomp_plugins/mmseg/drop_in.py": 30,
    "pomp_plugins/detectron2/fast_rcnn.py": 30,
    "pomp_plugins/detectron2/roi_heads.py": 30,
}
TIMEOUT = "Trial Exceeded Timeout"  # poodle's reason code
PREIMPORTED = (
    *("torch", "torchvision", "numpy", "PIL.Image", "open_clip", "pytest", "tqdm.auto", "scipy"),
    *("detectron2.config", "detectron2.data", "detectron2.modeling", "mmseg.models", "mmseg.evaluation"),
)


def _preimport() -> None:
    import importlib

    for name in PREIMPORTED:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _run_tests(source_root: Path, timeout: float | None) -> tuple[int | None, str | None]:
    """Run ``$MUTATION_TESTS`` (in ``$MUTATION_TEST_ROOT``) on the package under ``source_root`` in a forked child.

    Returns pytest's exit code (``None``: timed out) and the first failing test's node id.
    """
    _preimport()
    tests = os.environ["MUTATION_TESTS"].split()
    failed = tempfile.NamedTemporaryFile(prefix="mutation-failed-", delete=False)
    failed.close()
    start = time.time()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 3
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1), os.dup2(devnull, 2)
            source = str(Path(source_root).resolve())
            sys.path.insert(0, source)
            os.environ["PYTHONPATH"] = os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])  # subprocesses
            os.chdir(os.environ.get("MUTATION_TEST_ROOT", ROOT))
            import pytest

            class FirstFailure:
                def pytest_runtest_logreport(self, report):
                    if report.failed and not Path(failed.name).read_text():
                        Path(failed.name).write_text(report.nodeid)

            code = int(
                pytest.main(["-x", "-q", "-m", "not slow", "-p", "no:cacheprovider", *tests], plugins=[FirstFailure()])
            )
        finally:
            os._exit(code)
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status), Path(failed.name).read_text() or None
            if timeout is not None and time.time() - start > timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None, None
            time.sleep(0.05)
    finally:
        os.unlink(failed.name)


def runner(config, run_folder: Path, mutant, timeout, *_, **__):
    """poodle's runner hook: the module's tests on the mutated copy in ``run_folder``."""
    from poodle.data_types import MutantTrialResult

    code, _ = _run_tests(run_folder, timeout)
    if code is None:
        return MutantTrialResult(
            found=False, reason_code=MutantTrialResult.RC_TIMEOUT, reason_desc=f"timeout {timeout:.0f} s"
        )
    if code == 0:
        return MutantTrialResult(found=False, reason_code=MutantTrialResult.RC_NOT_FOUND)
    if code == 1:
        return MutantTrialResult(found=True, reason_code=MutantTrialResult.RC_FOUND)
    # 2-4: collection/usage errors (e.g. the mutant does not import): caught, but say so
    return MutantTrialResult(found=True, reason_code=MutantTrialResult.RC_OTHER, reason_desc=f"pytest exit {code}")


def poodle_main() -> None:
    """poodle's command line, keeping at most ``$MUTATION_SAMPLE`` of its mutants (a fixed random sample per module,
    the same on every run) when that is set: a full run of the larger modules takes hours on 2 shared cores."""
    import random

    import poodle.cli
    import poodle.core

    create = poodle.core.create_mutants_for_all_mutators

    def sampled(work):
        mutants = create(work)
        Path(os.environ["MUTATION_COUNT_FILE"]).write_text(str(len(mutants)))
        limit = int(os.environ.get("MUTATION_SAMPLE") or 0)
        if limit and len(mutants) > limit:
            keep = set(random.Random(os.environ["MUTATION_MODULE"]).sample(range(len(mutants)), limit))
            work.echo(f"Sampled {limit} of {len(mutants)} mutants")
            mutants = [m for i, m in enumerate(mutants) if i in keep]
        return mutants

    poodle.core.create_mutants_for_all_mutators = sampled
    poodle.cli.main()


def slug(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def run_module(module: str, skip_mutators: list[str], tests_root: Path, sample: int) -> None:
    """poodle over ``module`` against its tests as they are in ``tests_root`` (e.g. a snapshot of the tests before a
    change); writes ``bench/results/mutation/<module>.json``."""
    out = RESULTS / "mutation" / f"{slug(module)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tests = [t for t in MODULES[module] if (tests_root / t.split("::")[0]).is_file()]
    with tempfile.TemporaryDirectory(prefix="mutation-") as work:
        config = Path(work) / "poodle.toml"
        config.write_text(
            "\n".join(
                [
                    "[tool.poodle]",
                    'source_folders = ["pomp_plugins"]',
                    f'only_files = ["{Path(module).relative_to("pomp_plugins")}"]',
                    "max_workers = 1",
                    f'work_folder = "{Path(work) / "runs"}"',
                    'runner = "mutation_test.runner"',
                    "min_timeout = 60",
                    "timeout_multiplier = 5",
                    f"skip_mutators = {json.dumps(skip_mutators)}",
                    'reporters = ["summary"]',
                    "[tool.poodle.reporter_opts]",
                    "json_report_found = true",
                    "",
                ]
            )
        )
        path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != ROOT]
        sample = SAMPLES.get(module, sample)
        env = {
            **os.environ,
            "MUTATION_TESTS": " ".join(tests),
            "MUTATION_TEST_ROOT": str(tests_root),
            "MUTATION_MODULE": module,
            "MUTATION_SAMPLE": str(sample),
            "MUTATION_COUNT_FILE": str(Path(work) / "count"),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tools"), *path]),
        }
        start = time.time()
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import mutation_test; mutation_test.poodle_main()",
                "-c",
                str(config),
                "--json",
                str(out),
            ],
            cwd=ROOT,
            env=env,
            check=True,
        )
        data = json.loads(out.read_text())
        data["module"], data["tests"], data["wall_s"] = module, tests, round(time.time() - start, 1)
        data["skip_mutators"], data["sample"] = skip_mutators, sample
        data["generated"] = int((Path(work) / "count").read_text())
        out.write_text(json.dumps(data, indent=1) + "\n")


def rerun_survivors(module: str) -> None:
    """Run the survivors of ``module``'s last poodle run against its current tests (``MODULES``); records in its JSON
    which test now kills each one (``rerun``). Mutants killed before stay killed: tests are only ever added."""
    from poodle.util import mutate_lines

    out = RESULTS / "mutation" / f"{slug(module)}.json"
    data = json.loads(out.read_text())
    os.environ.update(MUTATION_TESTS=" ".join(MODULES[module]), MUTATION_TEST_ROOT=str(ROOT), OMP_NUM_THREADS="1")
    rerun = {}
    with tempfile.TemporaryDirectory(prefix="mutation-rerun-") as work:
        shutil.copytree(
            ROOT / "pomp_plugins", Path(work) / "pomp_plugins", ignore=shutil.ignore_patterns("__pycache__")
        )
        target = Path(work) / module
        original = target.read_text()
        for trial in data["mutant_trials"]:
            if trial["result"]["found"]:
                continue
            mutant = SimpleNamespace(**trial["mutant"])
            target.write_text("".join(mutate_lines(mutant, original.splitlines(keepends=True))))
            code, failed = _run_tests(Path(work), timeout=180)
            killed_by = "timed out" if code is None else None if code == 0 else failed or f"pytest exit {code}"
            rerun[mutant_key(trial)] = {"exit": code, "killed_by": killed_by}
            print(f"{module}:{mutant.lineno} {mutant_line(trial)!r}: {killed_by or 'survives'}", flush=True)
        target.write_text(original)
    data["rerun"], data["rerun_tests"] = rerun, MODULES[module]
    out.write_text(json.dumps(data, indent=1) + "\n")


def mutant_key(trial: dict) -> str:
    mutant = trial["mutant"]
    where = (mutant["lineno"], mutant["col_offset"], mutant["end_lineno"], mutant["end_col_offset"], mutant["text"])
    return ":".join(map(str, where))


def mutant_line(trial: dict) -> str:
    mutant = trial["mutant"]
    if mutant["mutator_name"] == "Decorator":
        return f"{mutant['text'].splitlines()[0].strip()}  (its decorator removed)"
    diff = [
        line[1:].strip()
        for line in (mutant.get("unified_diff") or "").splitlines()
        if line.startswith("+") and not line.startswith("+++")
    ]
    return diff[0] if diff else mutant["text"]


def build_report() -> dict:
    lines = [
        "# Mutation testing report",
        "",
        "Generated by `tools/mutation_test.py`: poodle's mutants of each module, one worker, each against the "
        "module's own fast tests (`-x -m 'not slow'`). *Before*: the tests as they were when the module was first "
        "run (a snapshot of the tree: the README names the commits); *after*: the survivors run again against "
        "today's tests (a mutant killed before stays killed: tests were only added). Regenerate: see the README's "
        "Development section.",
        "",
        "| module | mutants generated | run | killed before | survived before | killed after | survived after "
        "| score after | tests (after) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    modules, details = [], []
    for module in MODULES:
        path = RESULTS / "mutation" / f"{slug(module)}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        trials, rerun = data["mutant_trials"], data.get("rerun", {})
        # a timed-out mutant did not pass its tests (a hang is noticed): counted as killed, and listed
        killed_before = [t for t in trials if t["result"]["found"] or t["result"]["reason_code"] == TIMEOUT]
        survivors = []
        for trial in trials:
            if trial in killed_before:
                continue
            mutant, again = trial["mutant"], rerun.get(mutant_key(trial), {})
            key = (module, mutant["lineno"], mutant["text"])
            survivors.append(
                {
                    "line": mutant["lineno"],
                    "mutator": mutant["mutator_name"],
                    "text": mutant["text"],
                    "mutated_line": mutant_line(trial),
                    "killed_by": again.get("killed_by"),
                    "reason": None if again.get("killed_by") else SURVIVORS.get(key, "UNEXPLAINED"),
                }
            )
        still = [s for s in survivors if not s["killed_by"]]
        killed_after = len(trials) - len(still)
        generated = data.get("generated", len(trials))
        modules.append(
            {
                "module": module,
                "generated": generated,
                "mutants": len(trials),
                "killed_before": len(killed_before),
                "survived_before": len(survivors),
                "killed_after": killed_after,
                "survived_after": len(still),
                "score_after": round(killed_after / max(len(trials), 1), 4),
                "tests_before": data["tests"],
                "tests_after": data.get("rerun_tests", data["tests"]),
                "wall_s": data.get("wall_s"),
                "skip_mutators": data.get("skip_mutators", []),
                "survivors": survivors,
            }
        )
        lines.append(
            f"| `{module}` | {generated} | {len(trials)} | {len(killed_before)} | {len(survivors)} "
            f"| {killed_after} "
            f"| {len(still)} | {100 * killed_after / max(len(trials), 1):.1f}% "
            f"| {', '.join(f'`{t}`' for t in modules[-1]['tests_after'])} |"
        )
        if survivors:
            details += ["", f"### `{module}`", ""]
            details += [
                f"- line {s['line']} ({s['mutator']}): `{s['mutated_line']}` — "
                + (f"killed by `{s['killed_by']}`" if s["killed_by"] else s["reason"])
                for s in survivors
            ]
    total = sum(m["mutants"] for m in modules)
    before = sum(m["killed_before"] for m in modules)
    after = sum(m["killed_after"] for m in modules)
    lines += [
        "",
        "*run*: a fixed random sample of the module's mutants, the same every time (seeded with the module's "
        "path, `random.Random(module)`; its size is `SAMPLE`/`SAMPLES` in the script: a full run of the larger "
        "modules takes hours on 2 shared cores). A timed-out mutant counts as killed. poodle's `String` mutator "
        "(texts of messages) is skipped.",
        "",
        "Wall time of the first run per module (s, 2 shared cores): "
        + ", ".join(f"`{slug(m['module']).split('.', 1)[1]}` {m['wall_s']:.0f}" for m in modules if m["wall_s"])
        + ".",
        "",
        f"Total: {total} mutants run; killed before {before} ({100 * before / max(total, 1):.1f}%), after "
        f"{after} ({100 * after / max(total, 1):.1f}%).",
        "",
        "## Survivors of the first run",
        "",
        "Each is killed by the named test now, or is equivalent or harmless for the reason given.",
    ]
    lines += details
    (RESULTS / "mutation_report.md").write_text("\n".join(lines) + "\n")
    report = {"total": total, "killed_before": before, "killed_after": after, "modules": modules}
    (RESULTS / "mutation_report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"default: all of {', '.join(MODULES)}")
    parser.add_argument(
        "--tests-from",
        type=Path,
        default=ROOT,
        help="a tree whose tests/ the mutants run against (default: this checkout)",
    )
    parser.add_argument(
        "--rerun-survivors",
        action="store_true",
        help="no new poodle run: run the last run's survivors against the current tests",
    )
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from the per-module JSON")
    parser.add_argument(
        "--sample",
        type=int,
        default=SAMPLE,
        help=f"at most this many mutants per module not in SAMPLES, a fixed random sample (0: all; default {SAMPLE})",
    )
    parser.add_argument(
        "--skip-mutators",
        nargs="*",
        default=["String"],
        help="poodle mutators not to run (default: String, the texts of error messages)",
    )
    args = parser.parse_args()
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"not in MODULES: {unknown}")
    for module in [] if args.report_only else args.modules or MODULES:
        if args.rerun_survivors:
            rerun_survivors(module)
        else:
            run_module(module, args.skip_mutators, args.tests_from.resolve(), args.sample)
    report = build_report()
    print(f"{report['killed_after']}/{report['total']} mutants killed; report in bench/results/mutation_report.md")


if __name__ == "__main__":
    main()
