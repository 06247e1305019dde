"""Test-wide settings: no network, an isolated embedding cache, and a tiny random-weight CLIP."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # a weight request fails at once instead of waiting on DNS

import pytest  # noqa: E402

from pomp_plugins.prompt import TINY_MODEL, load_clip  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs of a tool (still run in CI)")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("POMP_CACHE_DIR", str(tmp_path_factory.mktemp("embedding_cache")))


@pytest.fixture(scope="session")
def tiny_clip():
    """The 2-layer, width-64 ``pomp-tiny`` CLIP with fixed random weights, fp32 on CPU."""
    return load_clip(TINY_MODEL, None)
