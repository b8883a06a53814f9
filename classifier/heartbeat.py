"""A heartbeat for long work: a thread that stamps the row's `heartbeat` while the work runs.

The row says its worker is alive for as long as its process is: a pool process killed (the
out-of-memory killer, a deploy) stops beating with it, and the recovery loop retakes the work
once the heartbeat is older than its timeout, without waiting for the broker's visibility
timeout (classifier.jobs for chunks, classifier.training.runs for training runs).
"""

import logging
import os
import socket
import threading
from contextlib import contextmanager

from django.db import connection
from django.utils import timezone

logger = logging.getLogger(__name__)


def worker_name() -> str:
    """This process, as a claim records it: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_gone(worker: str) -> bool:
    """True when `worker` (a worker_name()) was a process of this machine that has exited, so its
    claim can be retaken at once instead of after the heartbeat timeout; a worker of another
    machine, or a PID taken again since, counts as present."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: sends nothing, only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # e.g. another user's process with that PID: alive
        return False
    return False


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
