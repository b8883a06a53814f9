"""Private media: every file under MEDIA_URL is sent only to a user allowed to see it.

Images (original, preview, thumbnail) go to their uploaders and to users who hold
classifier.view_image (annotators, reviewers) or staff; an import's zip to its importer and
staff. Anything else under MEDIA_ROOT is never served. A refusal is a 404, so nobody learns
which files exist.

How the allowed bytes leave: behind nginx (MEDIA_ACCEL_REDIRECT_PREFIX set) an
`X-Accel-Redirect` header hands the file to nginx's internal location; with the
file system storage (the embedded default) Django streams the file; with any other (S3) a
redirect to the storage's URL, which django-storages signs with a short expiry
(`querystring_expire` in MEDIA_STORAGE_OPTIONS).
"""

import mimetypes
from pathlib import PurePosixPath

from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect
from django.views.decorators.http import require_safe
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from classifier.models import Image
from labeling.models import ImportJob


def _image_allowed(user, name: str) -> bool:
    # Private copies share the content's files: allowed to whoever may see any row of them.
    rows = Image.objects.filter(sha256=PurePosixPath(name).name[:64])
    return any(name in (image.original.name, image.preview.name, image.thumbnail.name) and image.is_visible_to(user)
               for image in rows)


def _import_allowed(user, name: str) -> bool:
    job = ImportJob.objects.filter(archive=name).first()
    return job is not None and (user.is_staff or (job.user_id is not None and job.user_id == user.id))


RULES = {"images": _image_allowed, "imports": _import_allowed}


def media_allowed(user, name: str) -> bool:
    parts = PurePosixPath(name).parts
    if not user.is_authenticated or not parts or any(p in ("", ".", "..") for p in parts) or "\\" in name:
        return False
    rule = RULES.get(parts[0])
    return rule is not None and rule(user, name)


def _send(name: str):
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    prefix = settings.MEDIA_ACCEL_REDIRECT_PREFIX
    if prefix:
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = prefix.rstrip("/") + "/" + name
        return response
    if not isinstance(default_storage, FileSystemStorage):  # remote (S3): its own signed, expiring URL
        return HttpResponseRedirect(default_storage.url(name))
    if not default_storage.exists(name):
        raise Http404("No such file")
    return FileResponse(default_storage.open(name, "rb"), content_type=content_type)


def _user(request):
    """The session's user, or an API client's (the same `Authorization: Token ...` as the API)."""
    if request.user.is_authenticated:
        return request.user
    try:
        found = TokenAuthentication().authenticate(request)
    except AuthenticationFailed:
        found = None
    return found[0] if found else request.user


@require_safe
def media_file(request, path: str):
    if not media_allowed(_user(request), path):
        raise Http404("No such file")
    response = _send(path)
    # Private: shared caches must never keep it; the browser may (names are content-addressed).
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    if PurePosixPath(path).parts[0] == "imports":
        response["Content-Disposition"] = "attachment"
    return response
