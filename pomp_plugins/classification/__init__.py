"""Zero-shot image classification with POMP prompts: class embeddings of a prompt (learned, hard or a template
ensemble) and ``tools/eval_zeroshot.py``; the images, their features and the accuracy counts are
:mod:`pomp_plugins.images`."""

from .zeroshot import text_classifier

__all__ = ["text_classifier"]
