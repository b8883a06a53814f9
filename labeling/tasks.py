"""Thin Celery tasks for labeling: take ids, call one service."""

from celery import shared_task

from . import transfer


# No automatic retry: a failed import is marked failed with its error, and is started again by hand.
@shared_task(acks_late=True)
def import_run(job_id: int) -> None:
    transfer.import_run(job_id=job_id)
