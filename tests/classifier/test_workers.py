"""Workers announce what they serve; the API lists them; a fine-tune no CUDA worker would train asks first."""

from datetime import timedelta

import pytest
from django.utils import timezone

from classifier import workers
from classifier.models import TrainingRun, WorkerNode
from tests.helpers import logged_in_member

pytestmark = pytest.mark.django_db

CPU = {"device": "CPU", "training_device": "cpu", "backend": "onnxruntime"}
GPU = {"device": "NVIDIA H200", "training_device": "cuda", "backend": "torch"}


@pytest.fixture
def reviewer(client, django_user_model):
    return logged_in_member(client, django_user_model, "rita", "reviewer")


@pytest.fixture
def dataset(models_root, label_images):
    return label_images({"cat": 15, "dog": 15, "llama": 15})


def announce(name: str, queues: list[str], machine: dict) -> WorkerNode:
    return workers.worker_announce(hostname=f"{name}@node", queues=queues, concurrency=2, pid=4242, machine=machine)


def finetune(client, **body):
    return client.post("/api/training/runs/", {"mode": "finetune", **body}, content_type="application/json")


def test_the_api_lists_the_workers_heard_from_lately_with_what_they_serve(client, reviewer, settings):
    announce("inference-1", [settings.INFERENCE_QUEUE], CPU)
    announce("training-1", [settings.TRAINING_QUEUE], GPU)
    announce("gone", [settings.INFERENCE_QUEUE], CPU)
    WorkerNode.objects.filter(hostname="gone@node").update(
        last_seen=timezone.now() - timedelta(seconds=settings.WORKER_FRESH_S + 1))
    announce("stopped", [settings.TRAINING_QUEUE], GPU)
    workers.worker_stopped(hostname="stopped@node")

    body = client.get("/api/workers/").json()

    assert [(w["hostname"], w["queues"], w["device"], w["backend"]) for w in body["workers"]] == [
        ("inference-1@node", [settings.INFERENCE_QUEUE], "CPU", "onnxruntime"),
        ("training-1@node", [settings.TRAINING_QUEUE], "NVIDIA H200", "torch"),
    ]
    assert body["training_served"] is True and body["training_on_cuda"] is True
    assert body["training_queue"] == settings.TRAINING_QUEUE


def test_a_heartbeat_brings_a_stale_worker_back(client, reviewer, settings):
    announce("w", [settings.INFERENCE_QUEUE], CPU)
    WorkerNode.objects.update(last_seen=timezone.now() - timedelta(days=1))
    assert client.get("/api/workers/").json()["workers"] == []

    assert workers.worker_seen(hostname="w@node") is True
    assert [w["hostname"] for w in client.get("/api/workers/").json()["workers"]] == ["w@node"]
    assert workers.worker_seen(hostname="never-announced@node") is False


@pytest.mark.parametrize("role, status", [("annotator", 403), ("reviewer", 200)])
def test_the_workers_list_is_for_reviewers_and_staff(client, django_user_model, role, status):
    logged_in_member(client, django_user_model, "someone", role)
    assert client.get("/api/workers/").status_code == status


def test_staff_see_the_workers_list(client, staff):
    client.force_login(staff)
    assert client.get("/api/workers/").status_code == 200


def test_a_finetune_with_no_cuda_worker_asks_first_with_the_cpu_estimate(client, reviewer, dataset, settings):
    announce("training-cpu", [settings.TRAINING_QUEUE], CPU)

    answer = finetune(client)

    assert answer.status_code == 409
    body = answer.json()
    assert body["confirm_cpu_required"] is True
    assert body["images"] == len(dataset) and body["estimate_s"] > 0
    assert "training-cpu@node" in body["detail"] and "Predictions will not wait" in body["detail"]
    assert not TrainingRun.objects.exists()  # nothing written, not even a refused row

    confirmed = finetune(client, confirm_cpu=True)

    assert confirmed.status_code == 201 and confirmed.json()["status"] == "queued"


def test_the_cpu_estimate_grows_with_the_images_and_the_per_image_cost(client, reviewer, models_root, label_images,
                                                                       settings):
    label_images({"cat": 15, "dog": 15, "llama": 15})
    small = finetune(client).json()
    label_images({"cat": 15, "dog": 15, "llama": 15})
    large = finetune(client).json()
    settings.FINETUNE_CPU_S_PER_IMAGE *= 2
    dearer = finetune(client).json()

    assert small["images"] < large["images"]
    assert small["estimate_s"] < large["estimate_s"]
    assert dearer["estimate_s"] == pytest.approx(2 * large["estimate_s"], abs=1)
    assert "no worker serves the training queue" in small["detail"]


def test_a_finetune_with_a_cuda_worker_on_the_training_queue_starts_at_once(client, reviewer, dataset, settings):
    announce("inference-gpu", [settings.INFERENCE_QUEUE], GPU)  # a GPU on the other queue does not count
    assert finetune(client).status_code == 409

    announce("training-gpu", [settings.TRAINING_QUEUE], GPU)

    assert finetune(client).status_code == 201


def test_a_head_retrain_never_asks(client, reviewer, dataset):
    answer = client.post("/api/training/runs/", {"mode": "head"}, content_type="application/json")
    assert answer.status_code == 201

