"""Thin Celery tasks: take ids, re-fetch, call one service. Retries are declared here."""

from celery import shared_task
from django.db import OperationalError

from . import jobs, services, training

TRANSIENT = (OperationalError, ConnectionError)


@shared_task(acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True, retry_backoff_max=60, max_retries=5)
def image_classify(image_id: int) -> None:
    services.image_classify(image_id=image_id)


@shared_task(acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True, retry_backoff_max=60, max_retries=5)
def images_predict_chunk(image_ids: list[int], version_id: int) -> None:
    training.images_predict_chunk(image_ids=image_ids, version_id=version_id)


# On the training queue (animalsite.celery.route_task). Not retried: a run that fails is
# marked failed with its reason, and a new request starts a new run.
@shared_task(acks_late=True)
def model_train(run_id: int) -> None:
    training.training_execute(run_id=run_id)


@shared_task
def training_watchdog() -> dict:
    return training.training_watchdog()


@shared_task
def training_scheduled(mode: str = "head") -> int | None:
    """For Celery beat (the schedule is edited in the admin's Periodic tasks)."""
    try:
        run = training.training_scheduled(mode=mode)
    except training.TrainingRefused as e:
        training.logger.info("scheduled %s training skipped: %s", mode, e)
        return None
    return run.id if run else None


@shared_task(acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True, retry_backoff_max=60, max_retries=5)
def inference_job_plan(job_id: int) -> None:
    jobs.job_plan(job_id=job_id)


@shared_task(acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True, retry_backoff_max=60, max_retries=5)
def inference_chunk(chunk_id: int) -> None:
    jobs.chunk_run(chunk_id=chunk_id)
