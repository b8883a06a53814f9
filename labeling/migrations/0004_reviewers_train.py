"""Reviewers may also start training, promote and roll back models (classifier.train)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from labeling.roles import ensure_roles

# The roles as of this migration (frozen: a later permission may belong to a later model).
ROLES = {
    "uploader": [("classifier", "add_image")],
    "annotator": [("classifier", "add_image"), ("classifier", "view_image"), ("labeling", "annotate")],
    "reviewer": [("classifier", "add_image"), ("classifier", "view_image"), ("labeling", "annotate"),
                 ("labeling", "review"), ("classifier", "train")],
}


def grant(apps, schema_editor):
    # As in 0002: permissions of new models are made after all migrations, too late for us.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    ensure_roles(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"), ROLES)


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0003_import_job"),
        ("classifier", "0003_training"),
    ]
    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
