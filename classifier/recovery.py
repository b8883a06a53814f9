"""The recovery loop: what makes work that a broker or a worker dropped run after all.

Every OUTBOX_SWEEP_INTERVAL_S it sends the outbox messages that are due (classifier.enqueue).
It runs in a thread of Celery beat (one per installation; animalsite.celery starts it) and as
`manage.py recover --loop`, never as a Celery task: it must keep running while the broker is
away, since the broker's absence is most of what it repairs. Two loops at once are safe: rows
are locked with SKIP LOCKED on PostgreSQL, and every task claims its work once.
"""

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection

from . import enqueue

logger = logging.getLogger(__name__)
_started = threading.Event()


def recover_once() -> dict:
    return {"outbox": enqueue.outbox_sweep()}


def recover_forever(*, interval_s: float | None = None, stop: threading.Event | None = None) -> None:
    interval = interval_s or settings.OUTBOX_SWEEP_INTERVAL_S
    stop = stop or threading.Event()
    while not stop.is_set():
        close_old_connections()
        try:
            report = recover_once()
            if any(report["outbox"][k] for k in ("sent", "failed")):
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
