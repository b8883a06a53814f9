"""Fixtures for training: a private model registry and labelled images with clustered features."""

import numpy as np
import pytest

from classifier.models import Species
from labeling.models import Annotation
from tests.labeling.factories import EMBEDDING_DIM, annotate, predicted_image


@pytest.fixture
def registry(settings, tmp_path):
    settings.MODELS_ROOT = tmp_path / "models"
    settings.EMBEDDING_CACHE_DIR = tmp_path / "embeddings"
    settings.TRAINING_MIN_PER_CLASS = 3
    settings.PROMOTION_MIN_TEST_IMAGES = 1
    settings.TORCH_NUM_THREADS = 1
    return settings.MODELS_ROOT


@pytest.fixture
def label_images(species):
    """label_images({"cat": 12, "dog": 12}) -> images with an imported label each and a stored
    feature vector near their class's centre: a random direction in every dimension, as real
    features differ between classes (so a head separates them and zero-shot does not)."""
    rng = np.random.default_rng(0)
    centres = {}

    def make(counts: dict[str, int], *, wrong: dict[str, str] | None = None) -> list:
        images = []
        for name, n in counts.items():
            centre = centres.setdefault(name, rng.normal(0.0, 1.0, EMBEDDING_DIM))
            for _ in range(n):
                vector = np.abs(centre + rng.normal(0.0, 0.5, EMBEDDING_DIM))  # pooled ReLU features: >= 0
                image = predicted_image(version=species, embedding=vector)
                label = (wrong or {}).get(name, name)
                annotate(image=image, kind=Annotation.Kind.IMPORTED, role=Annotation.Role.IMPORT,
                         species=Species.objects.get(name=label))
                images.append(image)
        return images

    return make
