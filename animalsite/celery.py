"""The one Celery app. Configuration comes from Django settings (CELERY_ names)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "animalsite.settings")

app = Celery("animalsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Task name prefix -> setting that holds the queue name. Read at send time, so a queue
# renamed by the environment (or by a test) applies without rebuilding the app.
QUEUE_SETTING_BY_PREFIX = {
    "classifier.tasks.model_train": "TRAINING_QUEUE",
    "classifier.tasks.": "INFERENCE_QUEUE",
    "labeling.tasks.": "INFERENCE_QUEUE",
}


def route_task(name, args, kwargs, options, task=None, **kw):
    from django.conf import settings

    for prefix, setting in QUEUE_SETTING_BY_PREFIX.items():
        if name.startswith(prefix):
            return {"queue": getattr(settings, setting)}
    return None
