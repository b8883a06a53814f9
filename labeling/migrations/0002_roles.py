"""The three roles as groups. Staff (reviewers) also get the review permission."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from labeling.roles import ensure_roles

# The roles as this migration made them; later migrations add permissions.
ROLES = {
    "uploader": [("classifier", "add_image")],
    "annotator": [("classifier", "add_image"), ("classifier", "view_image"), ("labeling", "annotate")],
    "reviewer": [("classifier", "add_image"), ("classifier", "view_image"), ("labeling", "annotate"),
                 ("labeling", "review")],
}


def create_roles(apps, schema_editor):
    # Permissions are normally made after all migrations; make them now so groups can use them.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    ensure_roles(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"), ROLES)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0001_initial"),
        ("classifier", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_roles, remove_roles)]
