"""Cheap labeling fixtures: predicted images made as rows, without running the network.

The files named on an Image are never written: the API tests only need their URLs. Each
image gets a unique sha256, a Prediction by the given model version with probabilities in
that version's class order, and optionally an Embedding (float32, little endian).
"""

import hashlib
import itertools

import numpy as np
from django.conf import settings
from django.utils import timezone

from classifier.ml.datasets import TRAIN, stable_split, validation_split
from classifier.models import (
    Embedding,
    Image,
    ModelVersion,
    Prediction,
    Upload,
    image_path,
)
from labeling.models import Annotation

EMBEDDING_DIM = 1280
_serial = itertools.count(1)


def probabilities(version: ModelVersion, scores: dict[str, float]) -> list[float]:
    """A probability vector in the version's class order; what `scores` leaves over is
    spread evenly over the other classes."""
    classes = version.card["classes"]
    unknown = set(scores) - set(classes)
    assert not unknown, f"not classes of {version.name}: {sorted(unknown)}"
    rest = [c for c in classes if c not in scores]
    left = max(0.0, 1.0 - sum(scores.values()))
    return [scores[c] if c in scores else left / len(rest) for c in classes]


def with_margin(version: ModelVersion, margin: float, *, top: str = "dog", second: str = "cat") -> list[float]:
    """Probabilities where `top` leads `second` by `margin` (smaller margin: more uncertain)."""
    p2 = (0.9 - margin) / 2
    return probabilities(version, {top: p2 + margin, second: p2})


def predicted_image(
    *,
    version: ModelVersion,
    probs: list[float] | None = None,
    status: str = Image.Status.PREDICTED,
    embedding=None,
    uploader=None,
    created=None,
) -> Image:
    """An Image row (no files) with a Prediction by `version` when probs are given."""
    n = next(_serial)
    sha = hashlib.sha256(f"labeling-test-image-{n}".encode()).hexdigest()
    image = Image.objects.create(
        sha256=sha,
        original=image_path(sha, ".jpg"),
        preview=image_path(sha, ".preview.jpg"),
        thumbnail=image_path(sha, ".thumb.jpg"),
        format="JPEG",
        original_mode="RGB",
        width=64,
        height=48,
        size_bytes=1000,
        status=status,
        created=created or timezone.now(),
    )
    if probs is not None:
        prediction_make(image=image, version=version, probs=probs)
    if embedding is not None:
        vector = np.asarray(embedding, dtype="<f4")
        assert vector.shape == (EMBEDDING_DIM,)
        Embedding.objects.create(
            image=image, backbone=settings.DEFAULT_BACKBONE, dim=EMBEDDING_DIM, vector=vector.tobytes()
        )
    if uploader is not None:
        Upload.objects.create(image=image, user=uploader, filename=f"photo-{n}.jpg")
    return image


def prediction_make(*, image: Image, version: ModelVersion, probs: list[float]) -> Prediction:
    classes = version.card["classes"]
    assert len(probs) == len(classes), f"{len(probs)} probabilities for {len(classes)} classes"
    order = sorted(range(len(classes)), key=lambda i: -probs[i])
    return Prediction.objects.create(
        image=image,
        model_version=version,
        label=classes[order[0]],
        confidence=probs[order[0]],
        top=[{"label": classes[i], "p": round(probs[i], 6)} for i in order[:5]],
        probabilities=[round(p, 6) for p in probs],
        backend="test",
        model_ms=0.0,
        latency_ms=0.0,
    )


def clustered_images(version: ModelVersion, names=("cat", "dog", "llama"), *, per_class: int = 8,
                     seed: int = 0) -> dict[int, str]:
    """Predicted images whose embeddings form one cluster per class (a head can learn them):
    {image id: its true class}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for name in names:
        centre = rng.normal(0.0, 1.0, EMBEDDING_DIM)
        for _ in range(per_class):
            vector = np.abs(centre + rng.normal(0.0, 0.5, EMBEDDING_DIM))
            truth[predicted_image(version=version, probs=with_margin(version, 0.1), embedding=vector).id] = name
    return truth


def label_from_queue(user, truth: dict[int, str]) -> None:
    """`user` takes every image of `truth` from the review queue and chooses its true class."""
    from labeling import review_queue, services

    for _ in range(len(truth)):
        [claim] = review_queue.queue_next(user=user, count=1)
        services.decision_make(user=user, token=claim.token, action="choose", label=truth[claim.image_id])


def cluster_embedding(centre: int, *, rng: np.random.Generator, spread: float = 0.01) -> np.ndarray:
    """A vector near one of a few far-apart centres (a one-hot direction per centre)."""
    vector = rng.normal(0.0, spread, EMBEDDING_DIM)
    vector[centre] += 1.0
    return vector.astype("<f4")


def annotate(*, image: Image, kind: str, role: str, species=None, user=None, reverts=None, created=None,
             **fields) -> Annotation:
    """An Annotation row written directly, for the derivation rules."""
    return Annotation.objects.create(
        image=image,
        kind=kind,
        role=role,
        species=species,
        label=species.name if species else "",
        user=user,
        reverts=reverts,
        created=created or timezone.now(),
        **fields,
    )


def own_split(sha: str, settings) -> str:
    """The split an image's content alone gives it (train, val or test), no group applied."""
    split = stable_split(sha, test_fraction=settings.TRAINING_TEST_FRACTION)
    return validation_split(sha, val_fraction=settings.TRAINING_VAL_FRACTION) if split == TRAIN else split
