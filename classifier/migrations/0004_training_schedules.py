"""The default schedules, editable by staff in the admin (Periodic tasks)."""

import json

from django.db import migrations

SCHEDULES = [
    # name, task, crontab (minute, hour), kwargs, enabled
    ("training watchdog", "classifier.tasks.training_watchdog", ("*", "*"), {}, True),
    ("nightly head retrain", "classifier.tasks.training_scheduled", ("0", "3"), {"mode": "head"}, True),
    # Off by default: a fine-tune wants a GPU worker on the training queue.
    ("nightly fine-tune", "classifier.tasks.training_scheduled", ("30", "3"), {"mode": "finetune"}, False),
]


def create(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, (minute, hour), kwargs, enabled in SCHEDULES:
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=minute, hour=hour, day_of_week="*", day_of_month="*", month_of_year="*")
        PeriodicTask.objects.get_or_create(name=name, defaults=dict(
            task=task, crontab=crontab, kwargs=json.dumps(kwargs), enabled=enabled))


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=[s[0] for s in SCHEDULES]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("classifier", "0003_training"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(create, remove)]
