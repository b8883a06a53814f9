"""A heartbeat for long work: a thread that stamps the row's `heartbeat` while the work runs.

The row says its worker is alive for as long as its process is: a pool process killed (the
out-of-memory killer, a deploy) stops beating with it, and the recovery loop retakes the work
once the heartbeat is older than its timeout, without waiting for the broker's visibility
timeout (classifier.jobs for chunks, classifier.training.runs for training runs).
"""

import logging
import threading
from contextlib import contextmanager

from django.db import connection
from django.utils import timezone

logger = logging.getLogger(__name__)


@contextmanager
def beating(rows, *, every_s: float):
    """Stamp `heartbeat` on rows (a queryset, filtered to the running row) every every_s.

    Inside a transaction (a test's) there is no thread: its own connection could not see the row."""
    if connection.in_atomic_block:
        yield
        return
    stop = threading.Event()

    def beat():
        try:
            while not stop.wait(every_s):
                try:
                    rows.update(heartbeat=timezone.now())
                except Exception as e:  # the database away for a moment: the next beat tries again
                    logger.warning("heartbeat not written: %s", e)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
