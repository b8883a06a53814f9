"""Predictions: the one place Prediction and Embedding rows are written, one image at a time
(an upload) or many (batch jobs, re-predicting after a promotion, the gate's scoring).

Where a version's card allows (a zero-shot or head version on plain features), an image whose
pooled features are stored is re-scored from them without running the backbone; the rest are
decoded in threads while the network runs (classifier.ml.batch).
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from . import registry, serving
from .ml.batch import BatchStats, predict_stream
from .ml.images import InvalidImage, decode_image
from .models import Embedding, Image, ModelVersion, Prediction
from .signals import predictions_written
from .storage import read_bytes

logger = logging.getLogger(__name__)


@dataclass
class Predicted:
    """What predicting some images gave: (image id, result, backend) rows and the failures."""
    rows: list[tuple] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    stats: BatchStats = field(default_factory=BatchStats)


def stored_features(image_ids: list[int], backbone: str) -> dict[int, np.ndarray]:
    rows = Embedding.objects.filter(image_id__in=image_ids, backbone=backbone).values_list("image_id", "vector")
    return {image_id: np.frombuffer(bytes(vector), dtype="<f4") for image_id, vector in rows}


def predict_images(version: ModelVersion, image_ids: list[int], *, predictor=None,
                   top_k: int | None = None) -> Predicted:
    """The version's results for these images, nothing written: stored features re-scored where
    the card allows, the rest decoded from storage."""
    predictor = predictor or serving.get_predictor(version)
    top_k = top_k or settings.PREDICTION_TOP_K
    out = Predicted()
    todo = list(image_ids)
    if todo and serving.rescores_embeddings(predictor.card):
        stored = stored_features(todo, version.embedding_key)
        if stored:
            keys = list(stored)
            started = time.perf_counter()
            results = predictor.predict_embeddings(np.stack([stored[k] for k in keys]), top_k=top_k)
            out.stats.model_seconds += time.perf_counter() - started
            backend = f"{predictor.embeddings_backend} (stored features)"
            out.rows += [(k, r, backend) for k, r in zip(keys, results)]
            todo = [i for i in todo if i not in stored]
    if todo:
        names = dict(Image.objects.filter(id__in=todo).values_list("id", "original"))
        items = [(i, _loader(names[i])) for i in todo if i in names]
        for image_id, result, error in predict_stream(
                predictor, items, batch_size=settings.INFERENCE_BATCH_SIZE, threads=settings.INFERENCE_DECODE_THREADS,
                top_k=top_k, max_pixels=settings.UPLOAD_MAX_PIXELS, stats=out.stats):
            if result is None:
                out.failed[image_id] = error
            else:
                out.rows.append((image_id, result, predictor.backend))
    return out


def embeddings_write(*, version: ModelVersion, predicted: Predicted) -> None:
    """The pooled features of the rows predicted from pixels, under the version's embedding key.

    The ImageNet backbone's plain features, under a flip-averaged card too: the same vectors
    for every version, so similarity, near-duplicates and head retrains keep working after a
    head is promoted. A fine-tuned network's features are another space and would poison them.
    Re-scored rows came from stored features already.
    """
    if version.card.get("kind") not in ("zero_shot", "head"):
        return
    Embedding.objects.bulk_create([
        Embedding(image_id=image_id, backbone=version.embedding_key, dim=int(r.plain_embedding.size),
                  vector=np.asarray(r.plain_embedding, "<f4").tobytes())
        for image_id, r, backend in predicted.rows
        if r.plain_embedding is not None and not backend.endswith("(stored features)")
    ], ignore_conflicts=True)


def _loader(name: str):
    return lambda: read_bytes(name)


def predicted_labels(version: ModelVersion, image_ids: list[int]) -> list[str]:
    """The version's top label for each image (the gate's scoring), by a predictor of its own:
    the process's cached one serves production, this may be any version."""
    predicted = predict_images(version, image_ids, predictor=serving.build_predictor(version), top_k=1)
    if predicted.failed:
        first = next(iter(predicted.failed.items()))
        raise InvalidImage(f"{len(predicted.failed)} test images could not be read (image {first[0]}: {first[1]})")
    labels = {image_id: result.label for image_id, result, _ in predicted.rows}
    return [labels[i] for i in image_ids]


@transaction.atomic
def predictions_write(*, version: ModelVersion, predicted: Predicted, queued_at: dict[int, datetime] | None = None,
                      store_features: bool = True) -> int:
    """Writes the rows once (a prediction per image and version: a task delivered twice, or a
    single-image task that got there first, writes nothing more), their pooled features, and
    the images' status. latency_ms is from the image being queued to now, for the images
    `queued_at` names; rows written in bulk leave it empty and keep their model time in model_ms."""
    now = timezone.now()
    queued_at = queued_at or {}
    created = Prediction.objects.bulk_create([
        Prediction(image_id=image_id, model_version=version, label=r.label, confidence=r.confidence,
                   top=[{"label": s.label, "p": round(s.p, 6)} for s in r.top],
                   probabilities=[round(p, 6) for p in r.probabilities], backend=backend,
                   model_ms=round(r.duration_ms, 3),
                   latency_ms=round((now - queued_at[image_id]).total_seconds() * 1000.0, 1)
                   if image_id in queued_at else None,
                   created=now)
        for image_id, r, backend in predicted.rows
    ], ignore_conflicts=True)
    if store_features:
        embeddings_write(version=version, predicted=predicted)
    Image.objects.filter(id__in=[image_id for image_id, _, _ in predicted.rows]).exclude(
        status=Image.Status.PREDICTED).update(status=Image.Status.PREDICTED, status_changed=now, error="")
    for image_id, error in predicted.failed.items():
        Image.objects.filter(id=image_id).exclude(status=Image.Status.PREDICTED).update(
            status=Image.Status.FAILED, status_changed=now, error=error)
    predictions_written.send(sender=Prediction, version=version, image_ids=[i for i, _, _ in predicted.rows])
    return len(created)


# --- one image: an upload's prediction --------------------------------------------------------

def _claim(image_id: int) -> bool:
    """Take the image for prediction; False if another worker has it or it is done.

    A conditional UPDATE is the claim: of two workers given the same task, exactly one
    sees a row count of 1. A claim older than the timeout belongs to a dead worker and may
    be taken over.
    """
    stale = timezone.now() - timedelta(seconds=settings.PREDICTION_CLAIM_TIMEOUT_S)
    # PREDICTED is claimable too: the caller has checked there is no prediction by today's
    # production version, so a new champion re-predicts old images.
    claimable = Q(status__in=[Image.Status.QUEUED, Image.Status.FAILED, Image.Status.PREDICTED]) | Q(
        status=Image.Status.PREDICTING, status_changed__lt=stale
    )
    updated = (
        Image.objects.filter(id=image_id)
        .filter(claimable)
        .update(status=Image.Status.PREDICTING, status_changed=timezone.now(), error="")
    )
    return updated == 1


def image_classify(*, image_id: int) -> Prediction | None:
    """Predict one image with the production model; idempotent."""
    version = registry.serving_version()
    existing = Prediction.objects.filter(image_id=image_id, model_version=version).first()
    if existing is not None:
        Image.objects.filter(id=image_id).exclude(status=Image.Status.PREDICTED).update(
            status=Image.Status.PREDICTED, status_changed=timezone.now()
        )
        return existing
    if not _claim(image_id):
        return None
    try:
        return _predict_claimed(image_id, version)
    except DatabaseError:
        _release(image_id)  # the retry of this task (or the next delivery) can claim it again
        raise


def _release(image_id: int) -> None:
    """Gives a claim back after the database failed mid-way; on a fresh connection, since the
    failure usually took the old one. Still away: the recovery loop retakes the image later."""
    try:
        if not connection.in_atomic_block:
            connection.close()
        Image.objects.filter(id=image_id, status=Image.Status.PREDICTING).update(
            status=Image.Status.QUEUED, status_changed=timezone.now())
    except DatabaseError:
        logger.warning("image %s stays claimed until PREDICTION_CLAIM_TIMEOUT_S: the database is away", image_id)


def _predict_claimed(image_id: int, version: ModelVersion) -> Prediction | None:
    image = Image.objects.get(id=image_id)
    try:
        version, predictor = serving.production_predictor(version)  # the last good one if its files are broken
        decoded = decode_image(read_bytes(image.original.name), max_pixels=settings.UPLOAD_MAX_PIXELS,
                               max_decoded_bytes=settings.UPLOAD_MAX_DECODED_BYTES)
        result = predictor.predict([decoded.image], top_k=settings.PREDICTION_TOP_K)[0]
    except (InvalidImage, FileNotFoundError, OSError) as e:
        _mark_failed(image_id, f"{type(e).__name__}: {e}")
        return None
    except Exception as e:
        # Unexpected: record it for the page, then let the task's retry policy decide.
        _mark_failed(image_id, f"{type(e).__name__}: {e}")
        raise
    predictions_write(version=version, predicted=Predicted(rows=[(image_id, result, predictor.backend)]),
                      queued_at={image_id: image.queued_at})
    return Prediction.objects.get(image_id=image_id, model_version=version)


def _mark_failed(image_id: int, error: str) -> None:
    logger.warning("image %s failed: %s", image_id, error)
    Image.objects.filter(id=image_id).update(status=Image.Status.FAILED, status_changed=timezone.now(), error=error)


def photo_embedding(data: bytes) -> tuple[ModelVersion, np.ndarray]:
    """The production version's pooled features of a photo given as bytes; nothing is stored."""
    version = registry.serving_version()
    predictor = serving.get_predictor(version)
    decoded = decode_image(data, max_pixels=settings.UPLOAD_MAX_PIXELS)
    result = predictor.predict([decoded.image], top_k=1)[0]
    return version, np.asarray(result.plain_embedding, dtype=np.float32)
