#!/usr/bin/env python
"""The whole product in one to two minutes on a CPU: pre-train a POMP prompt, classify zero-shot with it, then let the
same prompt file drive a toy detector (detectron2) and a toy segmenter (mmseg).

    .venv/bin/python tools/demo.py [--output demo_output] [--device auto] [--seed 0]

1. writes class folders of generated pictures (coloured shapes; class "red circle", ...): ``OUTPUT/data/train`` to
   pre-train on and ``OUTPUT/data/val`` as the test split;
2. runs ``tools/pretrain_prompt.py`` with the tiny random-weight CLIP ``pomp-tiny`` (no download): it writes the
   prompt file ``OUTPUT/pretrain/prompt.pt``;
3. runs ``tools/eval_zeroshot.py`` on the test split with the learned prompt and with the hard prompt
   "a photo of a {name}.", and prints both accuracies (``OUTPUT/summary.json``);
4. detection: trains the tiny detector of ``detectron2_configs/POMP-Tiny-CPU.yaml`` (Detic's model at toy scale) for
   a few iterations on generated coloured squares with ``tools/train_net.py``, its classifier encoded with that
   prompt file, and draws its best detections on a test image with ``tools/detect_demo.py``:
   ``OUTPUT/detections.png``;
5. segmentation: trains the tiny mmseg segmenter of ``mmseg_configs/tiny_fcn_text-classifier_cpu.py`` (a stock
   FCN head whose classifier is the prompt's text embeddings) for a few iterations on generated band images with
   ``tools/train.py``, and segments a test scene with ``tools/segment_demo.py``: ``OUTPUT/segmentation.png``.

A random-weight CLIP knows nothing about words, so the hard prompt scores about chance; the learned prompt shows
that pre-training really moves the class embeddings onto the images. The toolkit steps show the plumbing (one
prompt file, both toolkits), not accuracy: a few iterations from scratch. Every command is printed, so each step
can be repeated by hand or scaled up (a real CLIP, ImageNet-21K, a GPU); the toolkits' own logs go to files in
``OUTPUT/detection`` and ``OUTPUT/segmentation``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import json
import math
import os
import shlex
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CLASSES = 8
TRAIN_IMAGES, TEST_IMAGES = 20, 10  # per class
TINY_CLIP = ["--clip-model", "pomp-tiny", "--clip-pretrained", "none"]
# The paper's recipe, except what a random-weight model and 128 training images need: more epochs, a far larger
# learning rate without warm-up, 16 context vectors and gentler crops (the shapes must stay in the picture).
PRETRAIN = [
    *("--n-ctx", "16", "--epochs", "40", "--lr", "0.3", "--warmup-epochs", "0", "--group-size", "8"),
    *("--global-batch", "8", "--crop-scale-min", "0.5", "--shots", "16", "--val-per-class", "4", "--workers", "0"),
    "--no-progress",
]

DETECTOR_CONFIG = ROOT / "detectron2_configs" / "POMP-Tiny-CPU.yaml"
DETECTOR_ITERATIONS = 40
TOP_DETECTIONS = 3  # the picture shows the detections scoring at least the third best score
PICTURE_SCALE = 4  # the toy images are 128x96: the picture is drawn on a 4x nearest-neighbour enlargement
SEGMENTER_CONFIG = ROOT / "mmseg_configs" / "tiny_fcn_text-classifier_cpu.py"
SEGMENTER_ITERATIONS = 200  # the config's 100 leave a class or two mixed up with some prompts
# the keys of the config's iteration-based schedule (training, validation at the end, checkpoint, poly LR)
SCHEDULE_KEYS = (
    "train_cfg.max_iters",
    "train_cfg.val_interval",
    "default_hooks.checkpoint.interval",
    "param_scheduler.0.end",
)
SCENE_SIZE = 256  # the segmenter is fully convolutional: it segments a larger scene of the same kind


def shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter commands), else absolute."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


@functools.cache
def load_tool(name: str):
    """The module of ``tools/<name>.py`` (a script, not a package), loaded under a private module name."""
    spec = importlib.util.spec_from_file_location(f"_pomp_demo_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No warnings meanwhile (the toolkits' deprecation warnings when they are imported)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def print_tail(log: Path, lines: int = 40) -> None:
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    print(f"the last lines of {shown(log)}:\n" + "\n".join(tail), file=sys.stderr)


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Send everything written to stdout and stderr (Python's and the C libraries') to ``log`` meanwhile; when the
    block fails, show the log's last lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(log, "w") as file:
            os.dup2(file.fileno(), 1)
            os.dup2(file.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    except BaseException:
        print_tail(log)
        raise
    finally:
        os.close(saved[0])
        os.close(saved[1])


class Tee:
    """A text stream that writes to several (the first one answers everything else: ``fileno``, ``encoding``...)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.streams[0], name)


def run(tool: str, argv: list[str], log: Path | None = None, entry: str = "main") -> str:
    """Print the command, then run ``tools/<tool>.py`` with ``argv`` in this process as its ``__main__`` does, and
    return what it printed on stdout. Its output goes to the screen, or with ``log`` (imports included) to that
    file. Exits on a non-zero status."""
    from pomp_plugins.prompt.cli import run_tool

    print(f"\n$ python tools/{tool}.py {shlex.join(argv)}" + (f"   (output: {shown(log)})" if log else ""), flush=True)
    printed = io.StringIO()
    with output_to(log) if log else contextlib.nullcontext(), contextlib.redirect_stdout(Tee(sys.stdout, printed)):
        module = load_tool(tool)
        status = getattr(module, "run_tool", run_tool)(getattr(module, entry), argv)
    if status:
        print(f"tools/{tool}.py failed (exit status {status})", file=sys.stderr)
        if log:
            print_tail(log)
        sys.exit(status)
    return printed.getvalue()


def last_json(text: str) -> dict:
    """The JSON object a tool printed on its last line."""
    return json.loads(text.strip().splitlines()[-1])


def enlarge(source: Path, target: Path, scale: int) -> Path:
    """Write ``source`` enlarged ``scale`` times (nearest neighbour, so the pixels stay as they are) to ``target``."""
    image = Image.open(source).convert("RGB")
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(target)
    return target


def pretrain_and_evaluate(out: Path, device: str, seed: int) -> tuple[Path, dict]:
    """Steps 1-3: the generated data, the pre-trained prompt file, and the accuracies of both prompts."""
    from pomp_plugins.pretrain.synthetic import class_list, make_image_folder

    data = out / "data"
    names = class_list(CLASSES)
    make_image_folder(data / "train", names, TRAIN_IMAGES, seed=seed)
    make_image_folder(data / "val", names, TEST_IMAGES, seed=seed + 1)
    print(
        f"wrote {CLASSES} classes ({', '.join(names)}) to {shown(data)}: {TRAIN_IMAGES} training and {TEST_IMAGES} "
        "test images each"
    )
    prompt = out / "pretrain" / "prompt.pt"
    clip = [*TINY_CLIP, "--device", device]
    run(
        "pretrain_prompt",
        ["--data", shown(data), "--output", shown(prompt.parent), *clip, "--seed", str(seed), *PRETRAIN],
    )
    results = {}
    for label, tag, prompt_args in (
        ("POMP prompt (learned)", "pomp", ["--prompt", shown(prompt)]),
        ("hard prompt 'a photo of a {name}.'", "hard_prompt", ["--hard-prompt", "a photo of a"]),
    ):
        report = out / f"eval_{tag}.json"
        argv = ["--data", shown(data / "val"), *clip, *prompt_args, "--workers", "0", "--no-progress"]
        run("eval_zeroshot", [*argv, "--json", shown(report)])
        results[label] = json.loads(report.read_text())
    return prompt, results


def detect(out: Path, prompt: Path, device: str, seed: int) -> dict:
    """Step 4: train the tiny detector with the prompt's classifier, then draw its best detections."""
    with quiet():
        from pomp_plugins.detectron2.toy_data import write_toy_dataset

    work = out / "detection"
    toy = write_toy_dataset(work / "toy")
    model_dir = work / "model"
    run(
        "train_net",
        [
            *("--config-file", shown(DETECTOR_CONFIG)),
            *("DATASETS.REGISTER.pomp_toy_train.JSON", shown(toy["train"])),
            *("DATASETS.REGISTER.pomp_toy_train.IMAGE_ROOT", shown(work / "toy" / "images")),
            *("DATASETS.REGISTER.pomp_toy_val.JSON", shown(toy["val"])),
            *("DATASETS.REGISTER.pomp_toy_val.IMAGE_ROOT", shown(work / "toy" / "images")),
            *("MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH", shown(toy["train_cat_info"])),
            *("MODEL.POMP.PROMPT", shown(prompt), "MODEL.DEVICE", device),
            *("SOLVER.MAX_ITER", str(DETECTOR_ITERATIONS), "SEED", str(seed), "OUTPUT_DIR", shown(model_dir)),
        ],
        log=work / "train_net.log",
        entry="cli",
    )
    metrics = [json.loads(line) for line in (model_dir / "metrics.json").read_text().splitlines()]
    box_ap = next(m["bbox/AP"] for m in reversed(metrics) if "bbox/AP" in m)  # its evaluation after training

    # the test image with the most squares, enlarged so that the labels are readable
    val = json.loads(toy["val"].read_text())
    counts = {image["id"]: 0 for image in val["images"]}
    for annotation in val["annotations"]:
        counts[annotation["image_id"]] += 1
    image = next(i for i in val["images"] if i["id"] == max(counts, key=counts.get))
    scene = enlarge(work / "toy" / "images" / image["file_name"], work / "scene.png", PICTURE_SCALE)

    # the model as trained (train_net saves its full config), first with every detection to read the scores, then
    # with a threshold that keeps the best few: after a few iterations the scores are low and close together
    config = ["--config-file", shown(model_dir / "config.yaml"), "--input", shown(scene)]
    weights = ["MODEL.WEIGHTS", shown(model_dir / "model_final.pth")]
    every = last_json(
        run(
            "detect_demo",
            [*config, "--output", shown(work / "all_detections.png"), "--confidence-threshold", "0", *weights],
            log=work / "detect_demo_scores.log",
        )
    )["detections"]
    scores = sorted((d["score"] for d in every), reverse=True)
    # detect_demo prints scores rounded to 4 decimals: rounded down to 3, the last of the best ones stays drawn
    threshold = math.floor(1000 * scores[min(TOP_DETECTIONS, len(scores)) - 1]) / 1000 if scores else 0.0
    picture = out / "detections.png"
    drawn = last_json(
        run(
            "detect_demo",
            [*config, "--output", shown(picture), "--confidence-threshold", str(threshold), *weights],
            log=work / "detect_demo.log",
        )
    )["detections"]
    truth = [
        val["categories"][a["category_id"] - 1]["name"] for a in val["annotations"] if a["image_id"] == image["id"]
    ]
    return {
        "picture": str(picture),
        "prompt": str(prompt),
        "config": str(model_dir / "config.yaml"),
        "iterations": DETECTOR_ITERATIONS,
        "box_AP": box_ap,
        "image": str(scene),
        "objects": truth,
        "threshold": threshold,
        "above_0.5": sum(s >= 0.5 for s in scores),
        "detections": drawn,
    }


def segment(out: Path, prompt: Path, device: str, seed: int) -> dict:
    """Step 5: train the tiny segmenter with the prompt's classifier, then segment a generated scene."""
    with quiet():
        from pomp_plugins.mmseg.toy_data import TOY_CLASSES, TOY_UNSEEN, make_toy_dataset, toy_sample

    work = out / "segmentation"
    toy = make_toy_dataset(work / "toy", seed=seed)
    text_classifier = [
        "model.decode_head.text_classifier.hard_prompt=None",
        f"model.decode_head.text_classifier.prompt={shown(prompt)}",
    ]
    run(
        "train",
        [
            shown(SEGMENTER_CONFIG),
            *("--work-dir", shown(work / "model"), "--cfg-options", *text_classifier),
            *(f"{loader}.dataset.data_root={shown(toy)}" for loader in ("train_dataloader", "val_dataloader")),
            f"test_dataloader.dataset.data_root={shown(toy)}",
            *(f"{key}={SEGMENTER_ITERATIONS}" for key in SCHEDULE_KEYS),
            f"randomness.seed={seed}",
        ],
        log=work / "train.log",
    )
    checkpoint = Path((work / "model" / "last_checkpoint").read_text().strip())

    # A larger scene of three seen classes, each on a fifth of it at least, segmented with the seen classes as the
    # vocabulary: the unseen one was never trained on, and a random-weight CLIP gives its name no meaning to
    # transfer, so it would only take pixels from the others.
    seen = [name for name in TOY_CLASSES if name not in TOY_UNSEEN]
    rng = np.random.default_rng(seed)
    while True:
        image, label = toy_sample(rng, SCENE_SIZE)
        truth = {TOY_CLASSES[c]: round(float((label == c).mean()), 4) for c in np.unique(label)}
        if len(truth) == 3 and set(truth) <= set(seen) and min(truth.values()) >= 0.2:
            break
    scene = work / "scene.png"
    Image.fromarray(image).save(scene)
    picture = out / "segmentation.png"
    found = last_json(
        run(
            "segment_demo",
            [
                *(shown(SEGMENTER_CONFIG), shown(checkpoint), "--input", shown(scene), "--output", shown(picture)),
                *("--vocabulary", ",".join(seen), "--device", device, "--cfg-options", *text_classifier),
            ],
            log=work / "segment_demo.log",
        )
    )["found"]
    return {
        "picture": str(picture),
        "prompt": str(prompt),
        "config": str(work / "model" / SEGMENTER_CONFIG.name),
        "iterations": SEGMENTER_ITERATIONS,
        "image": str(scene),
        "vocabulary": seen,
        "truth": truth,
        "found": found,
    }


def percentages(fractions: dict) -> str:
    return ", ".join(f"{name} {100 * share:.0f}%" for name, share in fractions.items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--output", default="demo_output", metavar="DIR", help="where data and results go (default: %(default)s)"
    )
    parser.add_argument(
        "--device", default="auto", help="torch device; auto = cuda when available, else cpu (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the data, pre-training and training (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # mmengine's runner picks its device itself: keep it on the CPU
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    torch.set_num_threads(1)  # the tiny models' operations are too small to gain from threads
    started = time.perf_counter()
    out = Path(args.output)

    prompt, results = pretrain_and_evaluate(out, device, args.seed)
    pretrained = time.perf_counter()
    detection = detect(out, prompt, device, args.seed)
    detected = time.perf_counter()
    segmentation = segment(out, prompt, device, args.seed)
    finished = time.perf_counter()

    print(
        f"\nzero-shot accuracy on {results[next(iter(results))]['images']} test images of {CLASSES} classes "
        f"(chance: {100 / CLASSES:.1f}%):"
    )
    for label, result in results.items():
        print(
            f"  {label:36s} top-1 {result['top1']:5.1f}%   top-5 {result['top5']:5.1f}%   "
            f"mean per class {result['mean_per_class']:5.1f}%"
        )
    drawn = ", ".join(f"{d['class']} {d['score']:.3f}" for d in detection["detections"]) or "none"
    reach = detection["above_0.5"]
    print(
        f"\nthe prompt {shown(prompt)} is the text classifier of both toolkits' models:\n"
        f"  detection     {shown(Path(detection['picture']))}: the tiny detector (tools/train_net.py, "
        f"{DETECTOR_ITERATIONS} iterations from scratch, box AP {detection['box_AP']:.1f} on its toy test set) on a "
        f"test image of {', '.join(detection['objects'])}.\n"
        f"                Drawn: its {TOP_DETECTIONS} best detections, score threshold {detection['threshold']:.3f} "
        f"({drawn}); {reach or 'none'} of its detections reach{'es' if reach == 1 else ''} detect_demo's default "
        "threshold 0.5 after so few iterations.\n"
        f"  segmentation  {shown(Path(segmentation['picture']))}: the tiny segmenter (tools/train.py, "
        f"{segmentation['iterations']} iterations from scratch) on a generated scene of "
        f"{percentages(segmentation['truth'])}.\n"
        f"                Found, among {', '.join(segmentation['vocabulary'])}: {percentages(segmentation['found'])}."
    )
    summary = {
        label: {key: result[key] for key in ("top1", "top5", "mean_per_class", "images")}
        for label, result in results.items()
    }
    seconds = {
        "pretrain_and_evaluate": round(pretrained - started, 1),
        "detection": round(detected - pretrained, 1),
        "segmentation": round(finished - detected, 1),
        "total": round(finished - started, 1),
    }
    (out / "summary.json").write_text(
        json.dumps(
            {
                "prompt": str(prompt),
                "accuracy": summary,
                "detection": detection,
                "segmentation": segmentation,
                "seconds": seconds,
                "device": device,
                "seed": args.seed,
            },
            indent=2,
        )
        + "\n"
    )
    print(
        f"prompt: {shown(prompt)}   summary: {shown(out / 'summary.json')}   ({seconds['total']:.0f} s: pre-training "
        f"and evaluation {seconds['pretrain_and_evaluate']:.0f} s, detection {seconds['detection']:.0f} s, "
        f"segmentation {seconds['segmentation']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
