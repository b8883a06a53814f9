from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ClassifierConfig(AppConfig):
    name = "classifier"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Registers the tasks in every process, so classifier.enqueue finds them by name.
        from . import tasks  # noqa: F401
        from .training.schedules import schedules_ensure

        post_migrate.connect(schedules_ensure, sender=self)
