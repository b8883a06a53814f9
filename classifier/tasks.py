"""Thin Celery tasks: take ids, re-fetch, call one service. Retries are declared here."""

from celery import shared_task
from django.db import OperationalError

from . import services


@shared_task(
    acks_late=True,
    autoretry_for=(OperationalError, ConnectionError),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=5,
)
def image_classify(image_id: int) -> None:
    services.image_classify(image_id=image_id)
