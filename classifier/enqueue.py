"""The one way services start background work: a Celery task by name, sent once the
transaction that recorded the work has committed.

Services never import tasks (tasks import services), so the import graph has no cycle and the
web process never loads anything a task needs to run. The queue comes from the task's own
declaration (classifier.tasks.QueueTask).
"""

import logging

from celery import current_app
from django.db import transaction

logger = logging.getLogger(__name__)


def send(task_name: str, *args) -> None:
    """Send now: for callers already past their commit (a task, an on_commit callback)."""
    current_app.tasks[task_name].delay(*args)


def on_commit(task_name: str, *args) -> None:
    """Send once the current transaction commits (at once outside one): a worker never sees an
    id whose row it cannot read yet."""
    transaction.on_commit(lambda: send(task_name, *args))
