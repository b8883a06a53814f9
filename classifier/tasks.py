"""Thin Celery tasks: take ids, re-fetch, call one service. Retries and queues are declared here.

Each task names the setting that holds its queue (`queue_setting`); animalsite.celery routes by
it at send time, so a queue renamed by the environment (or a test) applies at once.
"""

from celery import shared_task
from django.db import OperationalError

from . import jobs, predictions
from .training import runs, watchdog

TRANSIENT = (OperationalError, ConnectionError)
# Transient errors (the database or the broker away for a moment) are retried with backoff.
RETRY = dict(acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True, retry_backoff_max=60, max_retries=5)
INFERENCE = dict(queue_setting="INFERENCE_QUEUE")
TRAINING = dict(queue_setting="TRAINING_QUEUE")


@shared_task(**RETRY, **INFERENCE)
def image_classify(image_id: int) -> None:
    predictions.image_classify(image_id=image_id)


@shared_task(**RETRY, **INFERENCE)
def images_repredict(version_id: int) -> None:
    jobs.job_repredict(version_id=version_id)


@shared_task(**RETRY, **INFERENCE)
def inference_job_plan(job_id: int) -> None:
    jobs.job_plan(job_id=job_id)


@shared_task(**RETRY, **INFERENCE)
def inference_chunk(chunk_id: int) -> None:
    jobs.chunk_run(chunk_id=chunk_id)


# Not retried: a run that fails is marked failed with its reason, and a new request starts a new run.
@shared_task(acks_late=True, **TRAINING)
def model_train(run_id: int) -> None:
    runs.training_execute(run_id=run_id)


@shared_task(**INFERENCE)
def training_watchdog() -> dict:
    return watchdog.training_watchdog()


@shared_task(**INFERENCE)
def training_scheduled(mode: str = "head") -> int:
    """For Celery beat (the schedule is edited in the admin's Periodic tasks); the run's row says
    what became of it (queued, or skipped or refused, and why)."""
    return runs.training_scheduled(mode=mode).id
