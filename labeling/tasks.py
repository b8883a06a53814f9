"""Thin Celery tasks for labeling: take ids, call one service."""

from celery import shared_task

from classifier.tasks import INFERENCE, RETRY

from . import imports, retrain


# No automatic retry: a failed import is marked failed with its error, and is started again by hand.
@shared_task(acks_late=True, **INFERENCE)
def import_run(job_id: int) -> None:
    imports.import_run(job_id=job_id)


# Named for what it was before the debounce, so checks already queued by a running site still run.
# Retried: the pending key is gone once it starts, so a lost check waits for the next decision.
@shared_task(**{**RETRY, "acks_late": False}, **INFERENCE)
def retrain_if_due() -> int | None:
    run = retrain.retrain_check()
    return run.id if run else None
