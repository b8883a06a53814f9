"""The one Celery app. Configuration comes from Django settings (CELERY_ names)."""

import os

from celery import Celery, signals

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
