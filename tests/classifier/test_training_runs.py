"""Training runs through the service: queue, claim once, train, register, gate, promote, roll back."""

import json
from pathlib import Path

import pytest
from django.db import IntegrityError, transaction

from classifier import registry, selectors, serving
from classifier.ml.predict import CARD_FILE
from classifier.models import ModelEvent, ModelVersion, TrainingRun
from classifier.training import progress, runs, watchdog

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset(models_root, label_images):
    return label_images({"cat": 15, "dog": 15, "llama": 15})


SERVED = ["cat", "dalmatian", "dog", "flamingo", "llama", "starfish", "other"]


def run_head(**kw) -> TrainingRun:
    run = runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL, **kw)
    return runs.training_execute(run_id=run.id)


def test_a_head_run_registers_a_version_that_beats_zero_shot_and_is_promoted(dataset, species):
    run = run_head()

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    version = run.version
    # Every version serves every class production serves (issue 11): the labelled three are learned,
    # the project's other classes keep their zero-shot scores, and "other" is served.
    assert version.kind == "head" and version.classes == SERVED
    assert version.card["head_classes"] == ["cat", "dog", "llama"]
    assert version.status == ModelVersion.Status.PRODUCTION, version.status_reason
    assert version.parent == species and version.snapshot == run.snapshot
    # The folder is complete and its card is the registered one.
    folder = Path(registry_root()) / version.model_dir
    assert json.loads((folder / CARD_FILE).read_text())["classes"] == SERVED
    assert version.card["training"]["snapshot_sha256"] == run.snapshot.sha256
    assert version.metrics["summary"]["accuracy"] == 1.0
    assert version.gate["promote"] is True and version.gate["champion"] == species.name
    assert ModelEvent.objects.filter(version=version, previous=species, action="promoted").exists()
    species.refresh_from_db()
    assert species.status == ModelVersion.Status.RETIRED
    assert run.progress["percent"] == 100.0 and run.heartbeat is not None
    assert serving.onnx_path_of(version).is_file()  # exported before it served anything


def registry_root():
    from django.conf import settings

    return settings.MODELS_ROOT


def test_a_challenger_that_is_no_better_stays_a_candidate_with_the_reason(dataset):
    first = run_head().version
    second = run_head().version  # same snapshot, same figures: not better

    assert second.status == ModelVersion.Status.CANDIDATE
    assert "does not beat" in second.status_reason
    assert selectors.production_model() == first
    assert ModelEvent.objects.filter(version=second, action="kept_candidate").exists()


def test_a_task_delivered_twice_trains_once(dataset):
    run = runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL)
    assert runs.training_execute(run_id=run.id).status == TrainingRun.Status.SUCCEEDED
    assert runs.training_execute(run_id=run.id) is None
    assert ModelVersion.objects.filter(kind="head").count() == 1


def test_a_second_request_joins_the_queued_run(dataset, alice):
    first = runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL, user=alice)
    again = runs.training_request(mode="head", trigger=TrainingRun.Trigger.LABELS)
    other_mode = runs.training_request(mode="finetune", trigger=TrainingRun.Trigger.MANUAL)
    assert again == first
    assert other_mode != first
    assert TrainingRun.objects.filter(status="queued").count() == 2


def test_only_one_run_can_be_running(dataset):
    head = runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL)
    finetune = runs.training_request(mode="finetune", trigger=TrainingRun.Trigger.MANUAL)
    TrainingRun.objects.filter(id=head.id).update(status="running")
    # The finetune run cannot be claimed while another runs: it stays queued, untouched.
    assert runs.training_execute(run_id=finetune.id) is None
    assert TrainingRun.objects.get(id=finetune.id).status == "queued"
    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingRun.objects.filter(id=finetune.id).update(status="running")


def test_a_cancelled_queued_run_never_trains(dataset, alice):
    run = runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL)
    runs.training_cancel(run=run, user=alice)
    assert runs.training_execute(run_id=run.id) is None
    run.refresh_from_db()
    assert run.status == "cancelled" and "alice" in run.error
    assert not ModelVersion.objects.filter(kind="head").exists()


def test_a_run_cancelled_while_training_registers_nothing(dataset, monkeypatch):
    run = runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL)
    real_report = progress.Reporter.__call__

    def cancel_on_fit(self, event):
        if event.stage == "fit":
            TrainingRun.objects.filter(id=self.run_id).update(cancel_requested=True)
        real_report(self, event)

    monkeypatch.setattr(progress.Reporter, "__call__", cancel_on_fit)
    run = runs.training_execute(run_id=run.id)
    assert run.status == "cancelled"
    assert not ModelVersion.objects.filter(kind="head").exists()
    assert not any(Path(registry_root()).glob("head-*"))


def test_a_run_that_cannot_train_fails_with_the_reason(models_root, label_images):
    label_images({"cat": 15, "dog": 15})
    run = runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL)
    # Labels change between the request and the run: a class loses its images.
    from labeling.models import Annotation

    Annotation.objects.filter(label="dog").delete()
    run = runs.training_execute(run_id=run.id)
    assert run.status == "failed" and "at least two classes" in run.error


def test_staff_can_promote_by_hand_and_roll_back(dataset, species, staff):
    trained = run_head().version
    assert selectors.production_model() == trained

    back = registry.model_rollback(user=staff)
    assert back == species and selectors.production_model() == species
    assert ModelEvent.objects.filter(version=species, previous=trained, action="rolled_back", user=staff).exists()

    registry.model_promote_by_hand(version=trained, user=staff)
    assert selectors.production_model() == trained
    assert ModelEvent.objects.filter(version=trained, action="promoted_by_hand", user=staff).exists()
    assert ModelVersion.objects.filter(status="production").count() == 1


def test_rollback_needs_an_earlier_version(models_root, species, staff):
    ModelEvent.objects.all().delete()
    with pytest.raises(ValueError, match="no earlier production version"):
        registry.model_rollback(user=staff)


def test_the_watchdog_fails_a_run_whose_worker_stopped(dataset, settings, tmp_path):
    from datetime import timedelta

    from django.utils import timezone

    run = runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL)
    long_ago = timezone.now() - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT_S + 5)
    # Its retry died too (a first death is retried: the next test).
    TrainingRun.objects.filter(id=run.id).update(status="running", heartbeat=long_ago, worker="gone:1",
                                                 attempts=settings.TRAINING_MAX_ATTEMPTS)
    leftover = Path(settings.MODELS_ROOT) / ".head-9-abc.xyz.partial"
    leftover.mkdir(parents=True)
    settings.ONNX_DIR = Path(settings.MODELS_ROOT) / "onnx"
    export = settings.ONNX_DIR / "0123abcd.onnx"  # shared by card, owned by no version folder
    export_leftover = settings.ONNX_DIR / ".0123abcd.onnx.x1.partial"
    settings.ONNX_DIR.mkdir()
    export.write_bytes(b"graph")
    export_leftover.write_bytes(b"half a graph")
    import os

    for path in (leftover, settings.ONNX_DIR, export, export_leftover):
        os.utime(path, (long_ago.timestamp(), long_ago.timestamp()))

    report = watchdog.training_watchdog()

    run.refresh_from_db()
    assert report["failed"] == [run.id]
    assert run.status == "failed" and "stopped reporting" in run.error
    assert not leftover.exists()
    assert export.exists() and not export_leftover.exists()
    # The run failed for good: a late delivery of its task does nothing.
    assert runs.training_execute(run_id=run.id) is None
    assert not ModelVersion.objects.filter(kind="head").exists()


def test_the_watchdog_retries_once_a_run_whose_worker_was_killed(dataset, settings):
    from datetime import timedelta

    from django.utils import timezone

    from classifier.models import OutboxMessage

    run = runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL)
    long_ago = timezone.now() - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT_S + 5)

    def killed(worker: str) -> None:  # what a claim and a SIGKILL leave behind
        TrainingRun.objects.filter(id=run.id).update(status="running", heartbeat=long_ago, worker=worker,
                                                     attempts=TrainingRun.objects.get(id=run.id).attempts + 1)

    killed("oom-killed:1")
    report = watchdog.training_watchdog()
    run.refresh_from_db()
    assert report["retried"] == [run.id] and report["failed"] == []
    assert run.status == "queued" and "retrying" in run.error and run.worker == ""
    assert OutboxMessage.objects.filter(task_name=runs.TRAIN_TASK, args=[run.id]).count() == 2  # request, retry

    killed("oom-killed-again:1")
    report = watchdog.training_watchdog()
    run.refresh_from_db()
    assert report["failed"] == [run.id]
    assert run.status == "failed" and "attempt 2" in run.error and "stopped reporting" in run.error


def dead_process_worker() -> str:
    """The worker name of a process of this machine that has exited."""
    import socket
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}"


def test_a_run_whose_worker_process_is_gone_is_retried_at_once_and_finishes_once(dataset):
    from django.utils import timezone

    run = runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL)
    # Claimed by a pool process that was killed a moment ago: its heartbeat is still fresh.
    TrainingRun.objects.filter(id=run.id).update(status="running", heartbeat=timezone.now(),
                                                 worker=dead_process_worker(), attempts=1)

    report = watchdog.training_watchdog()

    assert report["retried"] == [run.id]
    run.refresh_from_db()
    assert run.status == "queued" and "its process is gone" in run.error
    finished = runs.training_execute(run_id=run.id)
    assert finished.status == "succeeded" and finished.attempts == 2
    assert ModelVersion.objects.filter(kind="head").count() == 1


def test_a_live_worker_of_this_machine_keeps_its_run(dataset):
    import os
    import socket

    from django.utils import timezone

    run = runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL)
    TrainingRun.objects.filter(id=run.id).update(status="running", heartbeat=timezone.now(),
                                                 worker=f"{socket.gethostname()}:{os.getpid()}", attempts=1)

    report = watchdog.training_watchdog()

    assert report["retried"] == [] and report["failed"] == []
    assert TrainingRun.objects.get(id=run.id).status == "running"


def test_a_retry_after_the_version_was_registered_registers_no_second_one(dataset):
    first = run_head()
    version = first.version
    run = runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL, options={"seed": 1})
    # Its first attempt registered a version and died before the gate finished the run.
    TrainingRun.objects.filter(id=run.id).update(status="running", worker=dead_process_worker(), attempts=1,
                                                 version=version)
    assert watchdog.training_watchdog()["retried"] == [run.id]

    finished = runs.training_execute(run_id=run.id)

    assert finished.status == "succeeded" and finished.version == version
    assert ModelVersion.objects.filter(kind="head").count() == 1


def test_the_schedule_skips_when_no_label_changed(dataset, label_images):
    first = run_head()
    assert first.status == "succeeded"
    # Issue 11: the skip is a row that says so (it was only a log line).
    skipped = runs.training_scheduled(mode="head")
    assert (skipped.status, skipped.trigger) == ("skipped", "schedule")
    assert skipped.outcome == f"skipped: no new labels since run {first.id}"
    label_images({"cat": 3})
    queued = runs.training_scheduled(mode="head")
    assert (queued.trigger, queued.status) == ("schedule", "queued")
