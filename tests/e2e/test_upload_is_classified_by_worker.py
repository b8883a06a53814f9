"""Upload over real HTTP; a real Celery worker process (on Redis in CI) classifies it."""

import pytest
import requests
from django.conf import settings
from rest_framework.authtoken.models import Token

from classifier.models import Image, OutboxMessage, Prediction
from tests.helpers import demo_photo, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def test_it_classifies_an_upload_in_a_worker(live_server, celery_worker, species, alice):
    token = Token.objects.create(user=alice)
    headers = {"Authorization": f"Token {token.key}"}
    photo = demo_photo("flamingo")

    with photo.open("rb") as f:
        response = requests.post(f"{live_server.url}/api/images/", files={"files": (photo.name, f, "image/jpeg")},
                                 headers=headers, timeout=30)
    assert response.status_code == 201, response.text
    [created] = response.json()
    assert created["status"] == "queued"

    def predicted():
        body = requests.get(created["url"], headers=headers, timeout=30).json()
        return body if body["status"] in ("predicted", "failed") else None

    body = wait_for(predicted, timeout=120, what="the worker's prediction")
    assert body["status"] == "predicted", body["error"]
    assert body["prediction"]["label"] == "flamingo"
    assert body["prediction"]["model_version"]["name"] == species.name
    assert body["prediction"]["top"][0]["p"] > 0.5
    assert body["prediction"]["backend"] == "onnxruntime-cpu"  # a CPU worker serves through ONNX Runtime
    assert Prediction.objects.filter(image_id=created["id"], model_version=species).count() == 1
    # The worker marked the task's outbox message delivered: the sweeper never sends it again.
    [message] = OutboxMessage.objects.filter(task_name="classifier.tasks.image_classify", args=[created["id"]])
    assert message.sent_at is not None and message.delivered_at is not None


def test_it_predicts_every_image_of_a_multi_file_upload(live_server, celery_worker, species, alice):
    token = Token.objects.create(user=alice)
    headers = {"Authorization": f"Token {token.key}"}
    photos = [demo_photo("dalmatian", 1), demo_photo("starfish", 1), demo_photo("flamingo", 1)]
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]

    response = requests.post(f"{live_server.url}/api/images/", files=files, headers=headers, timeout=30)
    assert response.status_code == 201, response.text
    ids = [item["id"] for item in response.json()]

    wait_for(lambda: Image.objects.filter(id__in=ids, status="predicted").count() == 3, timeout=120,
             what="three predictions")
    labels = [Image.objects.get(id=i).latest_prediction().label for i in ids]
    assert labels == ["dalmatian", "starfish", "flamingo"]


def test_it_runs_the_worker_on_the_configured_broker(celery_worker):
    # CI sets CELERY_BROKER_URL=redis://...: the worker must really be on Redis then.
    scheme = settings.CELERY_BROKER_URL.split("://")[0]
    log = celery_worker.log_path.read_text()
    assert f"Connected to {scheme}://" in log
