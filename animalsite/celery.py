"""The one Celery app. Configuration comes from Django settings (CELERY_ names)."""

import logging
import os

from celery import Celery, signals

from . import broker

broker.install()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "animalsite.settings")

app = Celery("animalsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def route_task(name, args, kwargs, options, task=None, **kw):
    """The queue a task declares (its `queue_setting`), read from settings at send time, so a
    queue renamed by the environment (or by a test) applies without rebuilding the app."""
    from django.conf import settings

    setting = getattr(task, "queue_setting", None)
    return {"queue": getattr(settings, setting)} if setting else None


@signals.worker_init.connect
def preload_ml(**kwargs):
    """Workers run the models: import torch and the ML code once, before the pool forks, so the
    children share it and no first task waits on the import. The web process never imports them."""
    import classifier.ml.predict  # noqa: F401
    import classifier.ml.train  # noqa: F401


@signals.task_prerun.connect
def outbox_delivered(task=None, **kwargs):
    """The task started: its outbox message (classifier.enqueue) needs no other send."""
    message_id = getattr(task.request, "outbox_id", None) if task is not None else None
    if message_id is None:
        message_id = (getattr(task.request, "headers", None) or {}).get("outbox_id") if task is not None else None
    if message_id is None:
        return
    from classifier import enqueue

    try:
        enqueue.outbox_delivered(message_id)
    except Exception:  # the database away: the message is sent again later, and its task claims once
        logging.getLogger(__name__).warning("could not mark outbox message %s delivered", message_id, exc_info=True)


@signals.beat_init.connect
def start_recovery(**kwargs):
    """Beat (one per installation) also runs the recovery loop in a thread: it must not depend on
    the broker to be scheduled, since what it repairs is mostly the broker's absence."""
    from classifier import recovery

    recovery.start_thread()


_heartbeat = {}


@signals.worker_ready.connect
def announce_worker(sender, **kwargs):
    """The worker's row in the database (queues, device, serving backend), kept fresh by a
    heartbeat thread: the training page and /api/workers/ read it (classifier.workers)."""
    from classifier import workers

    queues = [q.name for q in sender.task_consumer.queues]
    concurrency = getattr(sender.controller, "concurrency", None) or 1
    _heartbeat["beat"] = workers.Heartbeat(hostname=sender.hostname, queues=queues, concurrency=concurrency).start()


@signals.worker_shutting_down.connect
def worker_goodbye(**kwargs):
    beat = _heartbeat.pop("beat", None)
    if beat is not None:
        beat.stop()
