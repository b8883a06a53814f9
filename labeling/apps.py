from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "labeling"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Registers the tasks in every process, so classifier.enqueue finds them by name.
        from . import summaries, tasks  # noqa: F401

        summaries.connect()  # the data browser's summary rows follow labels and predictions
