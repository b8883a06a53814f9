"""The recovery loop: what makes work that a broker or a worker dropped run after all.

Every OUTBOX_SWEEP_INTERVAL_S it sends the outbox messages that are due (classifier.enqueue),
queues again the chunks of batch jobs whose worker stopped beating (classifier.jobs), the single
images whose prediction was claimed by a worker that died (PREDICTION_CLAIM_TIMEOUT_S), and
retries once, then fails, training runs whose worker stopped reporting (classifier.training).
It runs in a thread of Celery beat (one per installation; animalsite.celery starts it) and as
`manage.py recover --loop`, never as a Celery task: it must keep running while the broker is
away, since the broker's absence is most of what it repairs. Two loops at once are safe: rows
are locked with SKIP LOCKED on PostgreSQL, and every task claims its work once.
"""

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from . import enqueue, jobs
from .models import Image, OutboxMessage
from .training.watchdog import stale_runs_recover
from .uploads import CLASSIFY_TASK

logger = logging.getLogger(__name__)
_started = threading.Event()


def recover_once() -> dict:
    return {"outbox": enqueue.outbox_sweep(), "chunks": jobs.chunks_retake(), "images": images_retake(),
            "runs": stale_runs_recover()}


def images_retake() -> list[int]:
    """Images left "predicting" by a worker that died, and images still "queued" after their task
    started and ended without a prediction (a retry the broker did not take), are queued for a
    prediction again, once per PREDICTION_CLAIM_TIMEOUT_S. Rows that predate the outbox are not."""
    before = timezone.now() - timedelta(seconds=settings.PREDICTION_CLAIM_TIMEOUT_S)
    stale = Image.objects.filter(status__in=[Image.Status.PREDICTING, Image.Status.QUEUED], status_changed__lt=before)
    candidates = list(stale.order_by("id").values_list("id", "status")[:1000])
    queued = [i for i, status in candidates if status == Image.Status.QUEUED]
    if queued:
        # Only images whose prediction was asked for (a batch job's images wait for its chunks),
        # and whose every task has started: one still in the queue is on its way.
        messages = OutboxMessage.objects.filter(task_name=CLASSIFY_TASK, args__0__in=queued)
        started, waiting = set(), set()
        for args, delivered in messages.values_list("args", "delivered_at"):
            (started if delivered else waiting).add(args[0])
        candidates = [(i, status) for i, status in candidates
                      if status == Image.Status.PREDICTING or (i in started and i not in waiting)]
    retaken = []
    for image_id, status in candidates:
        with transaction.atomic():
            if stale.filter(id=image_id, status=status).update(status=Image.Status.QUEUED,
                                                               status_changed=timezone.now()):
                enqueue.on_commit(CLASSIFY_TASK, image_id)
                retaken.append(image_id)
    if retaken:
        logger.warning("queued %d images again: no worker was predicting them", len(retaken))
    return retaken


def recover_forever(*, interval_s: float | None = None, stop: threading.Event | None = None) -> None:
    interval = interval_s or settings.OUTBOX_SWEEP_INTERVAL_S
    stop = stop or threading.Event()
    while not stop.is_set():
        close_old_connections()
        try:
            report = recover_once()
            if report["outbox"]["sent"] or report["outbox"]["failed"] or any(
                    report[k] for k in ("chunks", "images")) or any(report["runs"].values()):
                logger.info("recovery: %s", report)
        except Exception:
            # The database away: drop the connection so the next round opens a fresh one.
            logger.warning("recovery round failed; trying again in %ss", interval, exc_info=True)
            connection.close()
        stop.wait(interval)


def start_thread() -> threading.Thread | None:
    """The loop in a daemon thread of this process, once."""
    if _started.is_set():
        return None
    _started.set()
    thread = threading.Thread(target=recover_forever, name="recovery", daemon=True)
    thread.start()
    return thread
