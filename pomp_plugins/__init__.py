"""POMP prompt pre-training and zero-shot plugins."""

__version__ = "0.1.0"
