"""predictions.image_classify in-process: prediction, embedding, idempotence and claims."""

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from classifier import predictions, serving, uploads
from classifier.models import Embedding, Image, Prediction

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_predictor(monkeypatch):
    # Test databases roll back, so another test's version may have had this test's id.
    monkeypatch.setitem(serving._cached, "key", None)


@pytest.fixture
def image(species, alice, dalmatian_jpeg) -> Image:
    return uploads.image_upload(user=alice, filename="dalmatian.jpg", data=dalmatian_jpeg).image


def claim(image: Image, *, seconds_ago: float) -> None:
    Image.objects.filter(id=image.id).update(
        status=Image.Status.PREDICTING, status_changed=timezone.now() - timedelta(seconds=seconds_ago)
    )


def test_it_predicts_with_the_production_version(species, image):
    prediction = predictions.image_classify(image_id=image.id)

    assert prediction.model_version == species
    assert prediction.label == "dalmatian"
    assert prediction.top[0]["label"] == "dalmatian"
    assert prediction.confidence == pytest.approx(prediction.top[0]["p"], abs=1e-6)
    assert len(prediction.probabilities) == len(species.classes)
    assert sum(prediction.probabilities) == pytest.approx(1.0, abs=1e-4)


def test_it_stores_the_embedding(species, image):
    predictions.image_classify(image_id=image.id)

    embedding = Embedding.objects.get(image=image)
    vector = np.frombuffer(bytes(embedding.vector), dtype="<f4")
    assert embedding.backbone == species.backbone == "efficientnet_lite0"
    assert embedding.dim == 1280
    assert vector.shape == (1280,)
    assert np.isfinite(vector).all() and np.abs(vector).sum() > 0


def test_it_marks_the_image_predicted(image):
    predictions.image_classify(image_id=image.id)

    image.refresh_from_db()
    assert image.status == Image.Status.PREDICTED
    assert image.error == ""


def test_it_is_idempotent(image):
    first = predictions.image_classify(image_id=image.id)
    second = predictions.image_classify(image_id=image.id)

    assert second.id == first.id
    assert Prediction.objects.count() == 1
    assert Embedding.objects.count() == 1


def test_it_leaves_an_image_claimed_by_another_worker(image):
    claim(image, seconds_ago=1)

    assert predictions.image_classify(image_id=image.id) is None

    image.refresh_from_db()
    assert image.status == Image.Status.PREDICTING
    assert Prediction.objects.count() == 0


def test_it_takes_over_a_stale_claim(image, settings):
    claim(image, seconds_ago=settings.PREDICTION_CLAIM_TIMEOUT_S + 5)

    prediction = predictions.image_classify(image_id=image.id)

    assert prediction is not None and prediction.label == "dalmatian"
    image.refresh_from_db()
    assert image.status == Image.Status.PREDICTED


def test_it_marks_an_image_whose_file_is_gone_as_failed(image, media_dir):
    (media_dir / image.original.name).unlink()

    assert predictions.image_classify(image_id=image.id) is None

    image.refresh_from_db()
    assert image.status == Image.Status.FAILED
    assert "FileNotFoundError" in image.error
