"""Labels flow into a new model through real worker processes; a killed worker leaves a failed run.

Each test starts its own worker on its own queues, with the training settings it needs in the
worker's environment (a worker reads its settings from there, not from this process).
"""

import os
import signal
import time
from pathlib import Path

import pytest

from classifier import registry, uploads
from classifier.models import ModelVersion, Prediction, Species, TrainingRun
from classifier.tasks import model_train
from classifier.training import runs, watchdog
from labeling.models import Annotation
from labeling.roles import role_group
from tests.helpers import demo_photo, wait_for
from tests.labeling.factories import annotate, clustered_images, label_from_queue

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def test_new_labels_trigger_a_head_retrain_whose_version_then_serves(
        settings, training_env, worker_factory, species, django_user_model, alice):
    settings.RETRAIN_AFTER_LABELS = 24
    worker = worker_factory(training_env | {"RETRAIN_AFTER_LABELS": "24"})
    annotator = django_user_model.objects.create_user("ann")
    annotator.groups.add(role_group("annotator"))
    truth = clustered_images(species)

    # An annotator works the queue; every decision enqueues the retrain check.
    label_from_queue(annotator, truth)
    assert Annotation.objects.filter(user=annotator).count() == 24

    run = wait_for(lambda: TrainingRun.objects.filter(trigger="labels", status__in=TrainingRun.FINISHED).first(),
                   timeout=240, what="the head retrain started by the labels")
    assert run.status == "succeeded", run.error
    version = run.version
    assert version.kind == "head" and version.status == ModelVersion.Status.PRODUCTION, version.status_reason
    assert TrainingRun.objects.count() == 1

    # After the promotion, the labelled images are re-scored from their stored features.
    wait_for(lambda: Prediction.objects.filter(model_version=version).count() == 24, timeout=120,
             what="the re-predict after the promotion")
    assert set(Prediction.objects.filter(model_version=version).values_list("backend", flat=True)) == {
        "torch-cpu (stored features)"}

    # A new upload is predicted by the new version in the worker.
    result = uploads.image_upload(user=alice, filename="dalmatian.jpg", data=demo_photo("dalmatian").read_bytes())
    prediction = wait_for(lambda: Prediction.objects.filter(image=result.image).first(), timeout=120,
                          what="the new upload's prediction")
    assert prediction.model_version == version
    assert prediction.label in version.classes

    # The same task delivered again trains nothing.
    model_train.apply_async((run.id,), queue=settings.TRAINING_QUEUE)
    wait_for(lambda: worker.log_path.read_text().count("classifier.tasks.model_train[") >= 4, timeout=60,
             what="the second delivery to be processed")
    assert ModelVersion.objects.filter(kind="head").count() == 1


def test_a_worker_killed_while_training_leaves_a_failed_run_and_nothing_registered(
        settings, training_env, worker_factory, species, alice):
    # solo pool: the task runs in the worker process itself, so killing it kills the training.
    worker = worker_factory(training_env, pool="solo")
    for name in ("dalmatian", "flamingo", "llama", "starfish"):
        folder = demo_photo(name).parent
        for path in sorted(folder.glob("*.jpg"))[:5]:
            image = uploads.image_upload(user=alice, filename=path.name, data=path.read_bytes()).image
            annotate(image=image, kind=Annotation.Kind.IMPORTED, role=Annotation.Role.IMPORT,
                     species=species_named(name))
    # A fine-tune serves only what it learns, so it refuses while cat and dog have no labels.
    Species.objects.filter(name__in=["cat", "dog"]).update(active=False)
    registry.zero_shot_version_sync()
    run = runs.training_request(mode="finetune", trigger=TrainingRun.Trigger.MANUAL,
                                    options={"epochs": 200, "batch_size": 4, "patience": 200})

    # Killed after its first epoch: its checkpoint is on disk, mid-way through the second.
    checkpoint = Path(settings.MODELS_ROOT) / ".checkpoints" / f"run-{run.id}.pt"
    wait_for(checkpoint.exists, timeout=240, what="the fine-tune's first checkpoint")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)

    settings.TRAINING_HEARTBEAT_TIMEOUT_S = 2
    settings.TRAINING_MAX_ATTEMPTS = 1  # no retry here: what a dead run leaves is swept (the retry: test_training_runs)
    time.sleep(3)
    report = watchdog.training_watchdog()

    run.refresh_from_db()
    assert report["failed"] == [run.id]
    assert run.status == "failed" and "stopped reporting" in run.error
    assert not ModelVersion.objects.filter(kind="finetune").exists()
    root = Path(settings.MODELS_ROOT)
    assert [p.name for p in root.iterdir() if p.name != ".checkpoints"] == []
    assert list((root / ".checkpoints").glob("*")) == []  # the dead run's checkpoint is swept too


def species_named(name: str) -> Species:
    return Species.objects.get(name=name)
