"""The default schedules, made once; staff edit them in the admin (Periodic tasks)."""

import json

from django_celery_beat.models import CrontabSchedule, PeriodicTask

SCHEDULES = [
    # name, task, crontab (minute, hour), kwargs, enabled
    ("training watchdog", "classifier.tasks.training_watchdog", ("*", "*"), {}, True),
    ("nightly head retrain", "classifier.tasks.training_scheduled", ("0", "3"), {"mode": "head"}, True),
    # Off by default: a fine-tune wants a GPU worker on the training queue.
    ("nightly fine-tune", "classifier.tasks.training_scheduled", ("30", "3"), {"mode": "finetune"}, False),
]


def schedules_ensure(**kwargs) -> None:
    """Creates each default schedule that does not exist yet; never edits one staff changed.
    Connected to post_migrate (classifier.apps), so every new database has them."""
    for name, task, (minute, hour), task_kwargs, enabled in SCHEDULES:
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=minute, hour=hour, day_of_week="*", day_of_month="*", month_of_year="*")
        PeriodicTask.objects.create(name=name, task=task, crontab=crontab, kwargs=json.dumps(task_kwargs),
                                    enabled=enabled)
