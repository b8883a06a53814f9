"""Once the default schedules; they are now made by classifier.training.schedules on post_migrate,
so a database migrated from scratch and one migrated long ago end up the same."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("classifier", "0003_training"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = []
