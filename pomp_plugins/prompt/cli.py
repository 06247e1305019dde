"""The one command-line convention of the tools, written once: every tool builds its options from these helpers.

- classes: ``--vocabulary SPEC``, anything :func:`~pomp_plugins.prompt.parse_vocabulary` accepts (a vocabulary
  name, a names file, comma-separated names); tools that read an image folder also accept the folder-to-name files
  of :func:`~pomp_plugins.classification.image_folder.read_class_mapping` (see :func:`image_folder_classes`);
- output: ``--output`` for a tool's main artefact (a folder for training, a file for a picture or an export);
  ``--json PATH`` for an extra machine-readable summary of what a tool prints;
- input image: ``--input``;
- where: ``--device`` (``auto``: cuda when available, else cpu; :func:`resolve_device`);
- which CLIP: ``--clip-model``, ``--clip-pretrained`` (``auto``: the prompt file's), ``--dtype``;
- which text: ``--prompt FILE`` | ``--hard-prompt PHRASE`` | ``--templates SET`` (default: the hard prompt
  "a photo of a").
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .classifier import EmbeddingFileError
from .clip import WeightsUnavailableError, normalize_pretrained
from .embedder import DEFAULT_HARD_PROMPT, DEFAULT_PRETRAINED
from .prompt_file import PromptFileError
from .templates import TEMPLATE_SETS
from .text_encoder import PromptWidthError
from .vocabularies import VOCABULARY_SPEC_HELP, Vocabulary, VocabularyError, parse_vocabulary

# Mistakes in what the user asked for: reported in one line, without a traceback.
USER_ERRORS = (
    FileNotFoundError,
    EmbeddingFileError,
    PromptFileError,
    PromptWidthError,
    VocabularyError,
    WeightsUnavailableError,
)
AUTO_DEVICE = "auto"
DTYPES = ("auto", "fp32", "bf16", "fp16")


def run_tool(
    main: Callable[[Sequence[str] | None], int],
    argv: Sequence[str] | None = None,
    extra_errors: tuple[type[Exception], ...] = (),
) -> int:
    """Run a tool's ``main``, turning a user error (``USER_ERRORS`` + ``extra_errors``) into ``error: ...`` on
    stderr and exit status 2."""
    try:
        return main(argv)
    except USER_ERRORS + extra_errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


# --- where ----------------------------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device) -> str:
    """``auto`` -> ``cuda`` when a GPU is available, else ``cpu``; any other device as given."""
    if str(device) == AUTO_DEVICE:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def add_device_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "") -> None:
    parser.add_argument(
        "--device",
        default=AUTO_DEVICE,
        help=f"torch device{what}: auto = cuda when available, else cpu (default: %(default)s)",
    )


def add_dtype_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="precision of the frozen CLIP weights: auto = bf16 on CUDA, fp32 otherwise (default: %(default)s)",
    )


# --- which CLIP -----------------------------------------------------------------------------------------------------


def add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    """``--clip-model``, ``--clip-pretrained`` (default ``auto``), ``--device`` (default ``auto``), ``--dtype``."""
    group = parser.add_argument_group("CLIP (by default the one the prompt file records)")
    group.add_argument(
        "--clip-model",
        default=None,
        help="open_clip model name (default: the prompt file's model, else ViT-B-16; "
        "pomp-tiny is a tiny random-weight model for tests and demos)",
    )
    group.add_argument(
        "--clip-pretrained",
        default=DEFAULT_PRETRAINED,
        help="open_clip weights tag (openai, laion2b_s34b_b88k, ...), a local weights file, "
        "'none' for random weights, or 'auto': the weights the prompt file records, else "
        "openai (default: %(default)s). Other weights than the prompt's are used with a warning.",
    )
    add_device_argument(group)
    add_dtype_argument(group)


def clip_pretrained(args: argparse.Namespace) -> str | None:
    """``--clip-pretrained none`` means random weights; ``auto`` (the default) the prompt file's weights."""
    return normalize_pretrained(args.clip_pretrained)


# --- which text -----------------------------------------------------------------------------------------------------


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    """One of ``--prompt FILE``, ``--hard-prompt PHRASE`` or ``--templates SET``; without any, the hard prompt
    "a photo of a"."""
    group = parser.add_argument_group(
        f"text (one of; default: the hard prompt '{DEFAULT_HARD_PROMPT} {{name}}.')"
    ).add_mutually_exclusive_group()
    group.add_argument(
        "--prompt", default=None, help="POMP prompt file (ours or a reference checkpoint), or hf-hub:ORG/REPO[/FILE]"
    )
    group.add_argument(
        "--hard-prompt",
        default=None,
        help=f"a fixed phrase put before each class name instead of a learned prompt (e.g. '{DEFAULT_HARD_PROMPT}')",
    )
    group.add_argument(
        "--templates",
        choices=sorted(TEMPLATE_SETS),
        default=None,
        help="a template ensemble instead of one prompt: openai (= imagenet80), the 80 templates of OpenAI's "
        "ImageNet zero-shot classifier; vild, ViLD's 14",
    )


def prompt_from_args(args: argparse.Namespace) -> dict:
    """Exactly one of ``prompt``/``hard_prompt``/``templates`` set (the others ``None``), as the core takes them."""
    if args.prompt is None and args.templates is None:
        return {"prompt": None, "hard_prompt": args.hard_prompt or DEFAULT_HARD_PROMPT, "templates": None}
    return {"prompt": args.prompt, "hard_prompt": None, "templates": args.templates}


def describe_text(text: dict) -> str:
    """What ``prompt_from_args`` chose, in words (for summaries)."""
    if text["templates"]:
        return f"{text['templates']} template ensemble"
    if text["prompt"] is not None:
        return f"prompt file {text['prompt']}"
    return f"hard prompt '{text['hard_prompt']} {{name}}.'"


# --- classes --------------------------------------------------------------------------------------------------------


def add_vocabulary_argument(parser: argparse.ArgumentParser, required: bool = True, default_help: str = "") -> None:
    """``--vocabulary SPEC``: a vocabulary name, a names file or comma-separated names."""
    parser.add_argument(
        "--vocabulary",
        required=required,
        metavar="SPEC",
        help=f"the classes: {VOCABULARY_SPEC_HELP}" + (f" ({default_help})" if default_help else ""),
    )


def vocabulary_from_args(args: argparse.Namespace) -> Vocabulary:
    return parse_vocabulary(args.vocabulary)


IMAGE_FOLDER_CLASSES_HELP = (
    "names the class folders; also a file of 'folder name' or folder<TAB>name lines (such as ImageNet's "
    "LOC_synset_mapping.txt) or a JSON object folder -> name; a plain list names the sorted folders; default: "
    "WordNet-id folders get their WordNet lemma, other folders their own name"
)


def image_folder_classes(spec: str | None) -> tuple[Vocabulary | None, str | None]:
    """``(vocabulary, names_file)`` naming the class folders of an image folder from a ``--vocabulary`` SPEC.

    An existing file is a names file for the folders (read by the image folder: ``folder<TAB>name`` or ImageNet's
    ``wnid name`` lines, a JSON object, or a plain list in sorted folder order); anything else is parsed by
    ``parse_vocabulary`` (a name such as ``imagenet21k-p`` maps WordNet-id folders, a list names the sorted
    folders). ``None``: neither (the folders' own names, or their WordNet lemmas).
    """
    if spec is None:
        return None, None
    if Path(os.fspath(spec).strip()).is_file():
        return None, os.fspath(spec).strip()
    return parse_vocabulary(spec), None


# --- input and output -----------------------------------------------------------------------------------------------


def add_input_argument(parser: argparse.ArgumentParser, help: str = "the input image") -> None:
    parser.add_argument("--input", required=True, metavar="IMAGE", help=help)


def add_output_argument(
    parser: argparse.ArgumentParser, help: str, required: bool = True, default: str | None = None
) -> None:
    parser.add_argument(
        "--output",
        required=required,
        default=default,
        metavar="PATH",
        help=help + (" (default: %(default)s)" if default is not None else ""),
    )


def add_json_argument(parser: argparse.ArgumentParser, help: str = "also write the summary as JSON here") -> None:
    parser.add_argument("--json", default=None, metavar="PATH", help=help)


def write_json(path: str | os.PathLike | None, text: str) -> None:
    """Write ``text`` to ``--json PATH`` (its folder made), if one was given."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
