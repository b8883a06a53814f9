"""Work a dead worker held is taken again (classifier.recovery): a batch job's chunk whose
heartbeat stopped, a chunk redelivered after its pool process was killed, a single image left
"predicting". The death is simulated by what it leaves in the database."""

import os
import socket
import subprocess
from datetime import timedelta

import pytest
from django.utils import timezone

from classifier import jobs, recovery
from classifier.models import Image, InferenceChunk, InferenceJob, OutboxMessage
from classifier.uploads import CLASSIFY_TASK
from tests.helpers import demo_photo

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(species, alice, settings):
    from classifier import uploads

    settings.TORCH_NUM_THREADS = 1
    settings.INFERENCE_CHUNK_SIZE = 2
    images = [uploads.image_upload(user=alice, filename=p.name, data=p.read_bytes(), classify=False).image
              for p in (demo_photo("dalmatian"), demo_photo("flamingo"), demo_photo("starfish"))]
    job = jobs.job_create(user=alice, source="selection", image_ids=[i.id for i in images])
    jobs.job_plan(job_id=job.id)
    return job


def claimed_by(chunk: InferenceChunk, worker: str, *, seconds_ago: float) -> None:
    when = timezone.now() - timedelta(seconds=seconds_ago)
    InferenceChunk.objects.filter(id=chunk.id).update(status="running", worker=worker, claimed=when, heartbeat=when)


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_chunk_whose_worker_stopped_beating_is_queued_again_once_and_finished(job, settings):
    dead, alive = InferenceChunk.objects.filter(job=job).order_by("index")
    claimed_by(dead, "elsewhere:1", seconds_ago=settings.INFERENCE_CHUNK_TIMEOUT_S + 5)
    claimed_by(alive, "elsewhere:2", seconds_ago=1)

    assert recovery.recover_once()["chunks"] == [dead.id]
    assert recovery.recover_once()["chunks"] == []  # queued again once, not every round
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.status == "queued" and alive.status == "running"
    assert OutboxMessage.objects.filter(task_name=jobs.CHUNK_TASK, args=[dead.id]).count() == 2  # planned, retaken

    assert jobs.chunk_run(chunk_id=alive.id) is None  # a live worker's chunk is left to it
    jobs.chunk_run(chunk_id=dead.id)
    dead.refresh_from_db()
    assert dead.status == "done" and dead.written == dead.size


def test_a_chunk_redelivered_after_its_pool_process_was_killed_is_taken_over_at_once(job):
    killed, other = InferenceChunk.objects.filter(job=job).order_by("index")
    claimed_by(killed, f"{socket.gethostname()}:{dead_pid()}", seconds_ago=1)
    claimed_by(other, f"{socket.gethostname()}:{os.getppid()}", seconds_ago=1)  # a live process

    assert jobs.chunk_run(chunk_id=other.id) is None
    chunk = jobs.chunk_run(chunk_id=killed.id)
    assert chunk.status == "done" and chunk.written == chunk.size
    job.refresh_from_db()
    assert job.status == InferenceJob.Status.RUNNING  # the other chunk is still its live worker's


def test_an_image_left_predicting_by_a_dead_worker_is_queued_again(species, alice, settings):
    from classifier import uploads

    photo = demo_photo("llama")
    image = uploads.image_upload(user=alice, filename=photo.name, data=photo.read_bytes(), classify=False).image
    long_ago = timezone.now() - timedelta(seconds=settings.PREDICTION_CLAIM_TIMEOUT_S + 5)
    Image.objects.filter(id=image.id).update(status="predicting", status_changed=long_ago)

    assert recovery.recover_once()["images"] == [image.id]
    assert recovery.recover_once()["images"] == []
    image.refresh_from_db()
    assert image.status == "queued"
    assert OutboxMessage.objects.filter(task_name=CLASSIFY_TASK, args=[image.id]).count() == 1


def test_an_image_whose_prediction_lost_the_database_is_given_back_for_the_retry(species, alice, monkeypatch):
    from django.db import OperationalError

    from classifier import predictions, uploads

    photo = demo_photo("flamingo")
    image = uploads.image_upload(user=alice, filename=photo.name, data=photo.read_bytes(), classify=False).image
    write = predictions.predictions_write

    def connection_terminated(**kwargs):
        monkeypatch.setattr(predictions, "predictions_write", write)  # back for the retry
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(predictions, "predictions_write", connection_terminated)
    with pytest.raises(OperationalError):
        predictions.image_classify(image_id=image.id)
    image.refresh_from_db()
    assert image.status == "queued"  # not "predicting" until the claim times out

    assert predictions.image_classify(image_id=image.id).label == "flamingo"  # the task's retry


def test_a_queued_image_whose_task_ended_without_a_prediction_is_queued_again_and_one_waiting_is_not(
        species, alice, settings, django_capture_on_commit_callbacks):
    from classifier import enqueue, uploads

    long_ago = timezone.now() - timedelta(seconds=settings.PREDICTION_CLAIM_TIMEOUT_S + 5)
    dropped, waiting, in_a_job = [
        uploads.image_upload(user=alice, filename=p.name, data=p.read_bytes(), classify=False).image
        for p in (demo_photo("llama"), demo_photo("cougar"), demo_photo("emu"))]
    with django_capture_on_commit_callbacks(execute=True):
        started = enqueue.on_commit(CLASSIFY_TASK, dropped.id)
        enqueue.on_commit(CLASSIFY_TASK, waiting.id)  # sent, no worker has started it yet (a long queue)
    enqueue.outbox_delivered(started.id)  # started, then its retry was lost: the image is still queued
    Image.objects.filter(id__in=[dropped.id, waiting.id, in_a_job.id]).update(status="queued",
                                                                              status_changed=long_ago)

    assert recovery.recover_once()["images"] == [dropped.id]
    assert recovery.recover_once()["images"] == []
    assert OutboxMessage.objects.filter(task_name=CLASSIFY_TASK, args=[dropped.id]).count() == 2
