"""The toolkit-agnostic POMP core: CLIP loading, tokenisation, the prompted text encoder (and its packed attention
path), prompt files, vocabularies, the embedding cache and the POMP loss. Imports neither detectron2 nor mmseg."""

from .atomic import atomic_save, atomic_write, atomic_write_text
from .cache import EmbeddingCache
from .classifier import TextEmbeddingClassifier, cosine_logits
from .clip import TINY_MODEL, LoadedClip, WeightsUnavailableError, load_clip, resolve_dtype
from .embedder import (
    ClassEmbeddings,
    ClipMismatchWarning,
    EmbeddingFileError,
    class_embeddings,
    load_embedding_file,
    load_for_prompt,
    prompted_encoder,
)
from .loss import LocalContrastPlan, correction_margin, plan_local_contrast, pomp_loss, sample_negatives
from .prompt_file import Prompt, PromptFileError, load_prompt, resolve_prompt_path, save_prompt
from .templates import TEMPLATE_SETS, get_templates, template_embeddings
from .text_encoder import (
    FrozenTextTower,
    HardPromptEncoder,
    PromptedTextEncoder,
    PromptWidthError,
    SlowTextPathWarning,
)
from .tokenization import TokenizedPrompts, tokenize
from .vocabularies import (
    VOCABULARY_NAMES,
    Vocabulary,
    VocabularyError,
    custom_vocabulary,
    get_vocabulary,
    parse_vocabulary,
    read_names_file,
)

__all__ = [
    "EmbeddingFileError",
    "TextEmbeddingClassifier",
    "cosine_logits",
    "load_embedding_file",
    "EmbeddingCache",
    "class_embeddings",
    "TINY_MODEL",
    "LoadedClip",
    "WeightsUnavailableError",
    "load_clip",
    "resolve_dtype",
    "ClassEmbeddings",
    "ClipMismatchWarning",
    "resolve_prompt_path",
    "load_for_prompt",
    "prompted_encoder",
    "LocalContrastPlan",
    "correction_margin",
    "plan_local_contrast",
    "pomp_loss",
    "sample_negatives",
    "Prompt",
    "PromptFileError",
    "atomic_save",
    "atomic_write",
    "atomic_write_text",
    "load_prompt",
    "save_prompt",
    "FrozenTextTower",
    "HardPromptEncoder",
    "PromptedTextEncoder",
    "PromptWidthError",
    "SlowTextPathWarning",
    "TokenizedPrompts",
    "tokenize",
    "VOCABULARY_NAMES",
    "Vocabulary",
    "VocabularyError",
    "custom_vocabulary",
    "get_vocabulary",
    "parse_vocabulary",
    "read_names_file",
    "TEMPLATE_SETS",
    "get_templates",
    "template_embeddings",
]
