"""Make the embedded demo usable: classes, two logins and a few real photos.

Safe to run again: existing classes, users and images are kept, and the logins printed are
the ones stored under var/ the first time.
"""

import json
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from classifier import registry, serving, uploads
from labeling.roles import role_group

DEMO_DIR = Path(settings.BASE_DIR) / "demo" / "photos"
EXTRA_CLASSES = ["dog", "cat"]


class Command(BaseCommand):
    help = "Create the demo classes, an admin and an annotator login, and upload the demo photos."

    def add_arguments(self, parser):
        parser.add_argument("--no-photos", action="store_true", help="classes and logins only")

    def handle(self, *args, no_photos=False, **options):
        names = sorted({p.name for p in DEMO_DIR.iterdir() if p.is_dir()} | set(EXTRA_CLASSES))
        registry.species_create_many(names=names)
        version = registry.zero_shot_version_sync()
        if serving.exports_onnx():
            serving.onnx_export(version)  # now, rather than in the worker while the first photo waits
        logins = self._logins()
        admin = get_user_model().objects.get(username="admin")
        uploaded = 0
        if not no_photos:
            for path in sorted(DEMO_DIR.glob("*/*.jpg")):
                result = uploads.image_upload(user=admin, filename=f"{path.parent.name}/{path.name}",
                                              data=path.read_bytes())
                uploaded += result.created
        self.stdout.write(f"{len(names)} classes, model {version.name}, {uploaded} new demo photos queued")
        for username, password in logins.items():
            self.stdout.write(f"  login: {username} / {password}")

    def _logins(self) -> dict[str, str]:
        store = settings.VAR_DIR / "demo_logins.json"
        logins = json.loads(store.read_text()) if store.exists() else {}
        User = get_user_model()
        for username, staff in (("admin", True), ("annotator", False)):
            password = logins.get(username) or secrets.token_urlsafe(9)
            user, created = User.objects.get_or_create(
                username=username, defaults={"is_staff": staff, "is_superuser": staff}
            )
            if created or username not in logins:
                user.set_password(password)
                user.save()
            if not staff:
                # The demo annotator works the review queue (labeling's role groups).
                user.groups.add(role_group("annotator"))
            logins[username] = password
        store.write_text(json.dumps(logins, indent=2))
        store.chmod(0o600)
        return logins
