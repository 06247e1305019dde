"""Command-line options shared by the tools: which CLIP, which prompt, which classes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .classifier import EmbeddingFileError
from .clip import WeightsUnavailableError, normalize_pretrained
from .embedder import DEFAULT_PRETRAINED
from .prompt_file import PromptFileError
from .text_encoder import PromptWidthError
from .vocabularies import VOCABULARY_NAMES, Vocabulary, VocabularyError, resolve_vocabulary

# Mistakes in what the user asked for: reported in one line, without a traceback.
USER_ERRORS = (
    FileNotFoundError,
    EmbeddingFileError,
    PromptFileError,
    PromptWidthError,
    VocabularyError,
    WeightsUnavailableError,
)


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


def add_clip_arguments(parser: argparse.ArgumentParser) -> None:
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
    group.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    group.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="precision of the frozen CLIP weights; auto = bf16 on CUDA, fp32 otherwise",
    )


def add_prompt_arguments(parser: argparse.ArgumentParser, hard_prompt_default: str | None = None) -> None:
    group = parser.add_argument_group("prompt").add_mutually_exclusive_group(required=hard_prompt_default is None)
    group.add_argument(
        "--prompt", default=None, help="POMP prompt file (ours or a reference checkpoint), or hf-hub:ORG/REPO[/FILE]"
    )
    group.add_argument(
        "--hard-prompt",
        default=hard_prompt_default,
        help="a fixed phrase put before each class name instead of a learned prompt, e.g. 'a photo of a'",
    )


def add_vocabulary_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("classes").add_mutually_exclusive_group(required=required)
    group.add_argument("--vocabulary", choices=VOCABULARY_NAMES, help="a named vocabulary")
    group.add_argument("--names", help="comma-separated class names, e.g. 'cat,dog,traffic light'")
    group.add_argument("--names-file", help="class names, one per line (or a JSON list)")


def clip_pretrained(args: argparse.Namespace) -> str | None:
    """``--clip-pretrained none`` means random weights; ``auto`` (the default) the prompt file's weights."""
    return normalize_pretrained(args.clip_pretrained)


def vocabulary_from_args(args: argparse.Namespace) -> Vocabulary:
    return resolve_vocabulary(args.vocabulary, args.names, args.names_file)


def prompt_from_args(args: argparse.Namespace) -> dict:
    """``prompt``/``hard_prompt`` keyword arguments: a given prompt file wins over a default hard prompt."""
    if args.prompt is not None:
        return {"prompt": args.prompt, "hard_prompt": None}
    return {"prompt": None, "hard_prompt": args.hard_prompt}
