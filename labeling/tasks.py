"""Thin Celery tasks for labeling: take ids, call one service."""

from celery import shared_task

from . import services, transfer


# No automatic retry: a failed import is marked failed with its error, and is started again by hand.
@shared_task(acks_late=True)
def import_run(job_id: int) -> None:
    transfer.import_run(job_id=job_id)


@shared_task
def retrain_if_due() -> int | None:
    run = services.retrain_if_due()
    return run.id if run else None
