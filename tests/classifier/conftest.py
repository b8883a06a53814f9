"""Fixtures for training: a private model folder (label_images is in tests/conftest.py)."""

import pytest


@pytest.fixture
def models_root(settings, tmp_path):
    settings.MODELS_ROOT = tmp_path / "models"
    settings.EMBEDDING_CACHE_DIR = tmp_path / "embeddings"
    settings.TRAINING_MIN_PER_CLASS = 3
    settings.PROMOTION_MIN_TEST_IMAGES = 1
    settings.TORCH_NUM_THREADS = 1
    return settings.MODELS_ROOT
