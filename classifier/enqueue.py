"""The one way services start background work: a Celery task by name, through the outbox.

on_commit() writes the task as an OutboxMessage row in the caller's transaction and sends it
once that transaction commits, so a worker never sees an id whose row it cannot read yet, and
work whose rows were stored is never lost: if the broker is away, the send is recorded as an
attempt, the request still succeeds, and the sweeper (outbox_sweep, run by classifier.recovery)
sends it once the broker is back. A message sent but never started by a worker (a broker
restarted without its queue) is sent again after OUTBOX_REDELIVER_AFTER_S, doubling each time;
tasks claim their work with conditional UPDATEs, so a second delivery does nothing twice.

Services never import tasks (tasks import services), so the import graph has no cycle and the
web process never loads anything a task needs to run. The queue comes from the task's own
declaration (classifier.tasks.QueueTask).
"""

import logging
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .outbox import OutboxMessage

logger = logging.getLogger(__name__)

OUTBOX_HEADER = "outbox_id"  # the message's row, for the worker to mark it delivered
MAX_BACKOFF_DOUBLINGS = 5


def send(task_name: str, *args, outbox_id: int | None = None) -> None:
    """Send now, without the outbox: raises if the broker is away."""
    headers = {OUTBOX_HEADER: outbox_id} if outbox_id is not None else None
    current_app.tasks[task_name].apply_async(args=args, headers=headers)


def on_commit(task_name: str, *args) -> OutboxMessage:
    """Record the task in the current transaction (at once outside one) and send it after the
    commit; a broker that is away delays the task, never the caller."""
    now = timezone.now()
    message = OutboxMessage.objects.create(task_name=task_name, args=list(args),
                                           next_attempt=now + timedelta(seconds=settings.OUTBOX_RESEND_AFTER_S))
    transaction.on_commit(lambda: deliver(message.id), robust=True)
    return message


def _locked(messages):
    """Rows another process is sending are skipped, not waited for (PostgreSQL); SQLite has one
    writer at a time anyway."""
    if connection.features.has_select_for_update_skip_locked:
        return messages.select_for_update(skip_locked=True)
    return messages


def deliver(message_id: int) -> bool:
    """Send one message unless it was sent or someone is sending it; False if not sent now."""
    try:
        with transaction.atomic():
            message = _locked(OutboxMessage.objects.filter(id=message_id, sent_at__isnull=True)).first()
            return message is not None and _send_one(message)
    except Exception:
        # The database went away after the commit: the row is there, the sweeper sends it.
        logger.warning("outbox message %s not sent now; the sweeper will", message_id, exc_info=True)
        return False


def _send_one(message: OutboxMessage) -> bool:
    """Send and record the attempt; the caller holds the row's lock."""
    now = timezone.now()
    attempts = message.attempts + 1
    try:
        send(message.task_name, *message.args, outbox_id=message.id)
    except Exception as e:
        logger.warning("broker did not take %s (attempt %d): %s", message, attempts, e)
        error = f"{type(e).__name__}: {e}"[:2000]
        OutboxMessage.objects.filter(id=message.id).update(attempts=attempts, last_error=error, next_attempt=now)
        return False
    wait = settings.OUTBOX_REDELIVER_AFTER_S * 2 ** min(attempts - 1, MAX_BACKOFF_DOUBLINGS)
    OutboxMessage.objects.filter(id=message.id).update(sent_at=now, attempts=attempts, last_error="",
                                                        next_attempt=now + timedelta(seconds=wait))
    return True


def outbox_sweep(*, limit: int = 500) -> dict:
    """Send what is due: never taken by the broker, or taken but never started by a worker.
    Stops at the first refusal (the broker is still away); the rest wait for the next sweep."""
    now = timezone.now()
    sent = failed = 0
    with transaction.atomic():
        due = _locked(OutboxMessage.objects.filter(delivered_at__isnull=True, next_attempt__lte=now).order_by("id"))
        for message in due[:limit]:
            if not _send_one(message):
                failed = 1
                break
            sent += 1
    kept = now - timedelta(days=settings.OUTBOX_KEEP_DAYS)
    deleted, _ = OutboxMessage.objects.filter(delivered_at__lt=kept).delete()
    return {"sent": sent, "failed": failed, "deleted": deleted}


def outbox_delivered(message_id) -> None:
    """A worker started the message's task (animalsite.celery marks it from the header)."""
    OutboxMessage.objects.filter(id=message_id, delivered_at__isnull=True).update(delivered_at=timezone.now())
