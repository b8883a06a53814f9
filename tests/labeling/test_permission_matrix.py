"""Every URL of the project × every role, anonymous included.

The table below is the access policy as implemented: anonymous visitors are sent to the
login page (pages) or refused (API), `/healthz`, the login page and the API schema and docs
are open; any logged-in user can upload and see their own images; annotators and reviewers
see every image and work the review queue; the admin is for staff only. A URL added to the
project without a row here fails `test_it_has_a_row_for_every_url`.
"""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from animalsite.media import media_file
from classifier.models import InferenceJob, Species, TrainingRun, Upload
from labeling.models import ImportJob
from labeling.roles import role_group
from tests.labeling.factories import predicted_image, with_margin

pytestmark = pytest.mark.django_db

LOGIN = "302 to /accounts/login/"
ADMIN_LOGIN = "302 to /admin/login/"
DENIED = "401 or 403"

ROLES = ("anonymous", "owner", "uploader", "annotator", "reviewer", "staff")

# "METHOD url-name": (path, body). {image} is an image uploaded by "owner" (an uploader),
# not by "uploader". The POST bodies reach the service past the permission check: a made-up
# claim token answers 409, an upload without files 400. Bodies are JSON except for uploads.
ROUTES = {
    "GET upload": ("/", None),
    "GET image-detail": ("/images/{image}/", None),
    "GET healthz": ("/healthz", None),
    "GET login": ("/accounts/login/", None),
    "POST logout": ("/accounts/logout/", {}),
    "GET review": ("/review/", None),
    "GET admin:index": ("/admin/", None),
    "GET api-image-list": ("/api/images/", None),
    "POST api-image-list": ("/api/images/", {"note": "no files"}),
    "GET api-image-detail": ("/api/images/{image}/", None),
    "GET api-species-list": ("/api/species/", None),
    "GET api-species-detail": ("/api/species/{species}/", None),
    "GET api-review-next": ("/api/review/next/", None),
    "POST api-review-decide": ("/api/review/decisions/", {"token": "not-a-claim", "action": "reject"}),
    "POST api-review-undo": ("/api/review/undo/", {}),
    "POST api-review-skip": ("/api/review/skip/", {"token": "not-a-claim"}),
    "POST api-review-reopen": ("/api/review/decisions/999999/reopen/", {}),
    "GET api-image-history": ("/api/images/{image}/history/", None),
    "POST api-image-feedback": ("/api/images/{image}/feedback/", {"label": "cat"}),
    "GET api-schema": ("/api/schema/", None),
    "GET api-docs": ("/api/docs/", None),
    "GET labels": ("/labels/", None),
    "POST api-import-create": ("/api/imports/", {"note": "no file"}),
    "GET api-import-detail": ("/api/imports/{import_job}/", None),
    "GET api-export": ("/api/export/?kind=csv", None),
    "GET api-agreement": ("/api/agreement/", None),
    "GET training": ("/training/", None),
    "GET model-version-detail": ("/models/{version}/", None),
    "GET api-training-runs": ("/api/training/runs/", None),
    "POST api-training-runs": ("/api/training/runs/", {"mode": "not-a-mode"}),
    "GET api-training-run": ("/api/training/runs/{run}/", None),
    "POST api-training-cancel": ("/api/training/runs/{run}/cancel/", {}),
    "GET api-models": ("/api/models/", None),
    "GET api-model": ("/api/models/{version}/", None),
    "POST api-model-promote": ("/api/models/{version}/promote/", {}),
    "POST api-models-rollback": ("/api/models/rollback/", {}),
    "GET api-model-events": ("/api/models/events/", None),
    "GET api-workers": ("/api/workers/", None),
    "GET inference-jobs": ("/jobs/", None),
    "GET inference-job": ("/jobs/{job}/", None),
    "GET api-jobs": ("/api/jobs/", None),
    "POST api-jobs": ("/api/jobs/", {"source": "not-a-source"}),
    "GET api-job": ("/api/jobs/{job}/", None),
    "POST api-job-cancel": ("/api/jobs/{job}/cancel/", {}),
    "GET browse": ("/images/", None),
    "POST api-images-bulk": ("/api/images/bulk/", {"action": "label", "label": "not-a-class", "ids": [999999]}),
    "POST api-image-bulk-undo": ("/api/images/999999/bulk-undo/", {}),
    "GET api-image-similar": ("/api/images/{image}/similar/", None),
    "POST api-similar": ("/api/similar/", {"note": "no file"}),
    "POST api-image-not-duplicate": ("/api/images/{image}/not-duplicate/", {}),
    "POST image-not-duplicate": ("/images/{image}/not-duplicate/", {}),
}
MULTIPART = {"POST api-image-list", "POST api-import-create", "POST api-jobs", "POST api-similar"}

EXPECTED = {
    #                         anonymous    owner        uploader     annotator    reviewer     staff
    "GET upload":             (LOGIN,       200,         200,         200,         200,         200),
    "GET image-detail":       (LOGIN,       200,         404,         200,         200,         200),
    "GET healthz":            (200,         200,         200,         200,         200,         200),
    "GET login":              (200,         200,         200,         200,         200,         200),
    "POST logout":            (LOGIN,       LOGIN,       LOGIN,       LOGIN,       LOGIN,       LOGIN),
    "GET review":             (LOGIN,       403,         403,         200,         200,         200),
    "GET admin:index":        (ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 200),
    "GET api-image-list":     (DENIED,      200,         200,         200,         200,         200),
    "POST api-image-list":    (DENIED,      400,         400,         400,         400,         400),
    "GET api-image-detail":   (DENIED,      200,         403,         200,         200,         200),
    "GET api-species-list":   (DENIED,      200,         200,         200,         200,         200),
    "GET api-species-detail": (DENIED,      200,         200,         200,         200,         200),
    "GET api-review-next":    (DENIED,      403,         403,         200,         200,         200),
    "POST api-review-decide": (DENIED,      403,         403,         409,         409,         409),
    "POST api-review-undo":   (DENIED,      403,         403,         409,         409,         409),
    "POST api-review-skip":   (DENIED,      403,         403,         409,         409,         409),
    # Not one of the user's own decisions: refused with the reason.
    "POST api-review-reopen": (DENIED,      403,         403,         400,         400,         400),
    "GET api-image-history":  (DENIED,      200,         403,         200,         200,         200),
    "POST api-image-feedback": (DENIED,     201,         403,         201,         201,         201),
    "GET api-schema":         (200,         200,         200,         200,         200,         200),
    "GET api-docs":           (200,         200,         200,         200,         200,         200),
    "GET labels":             (LOGIN,       403,         403,         403,         200,         200),
    "POST api-import-create": (DENIED,      403,         403,         403,         400,         400),
    "GET api-import-detail":  (DENIED,      403,         403,         403,         200,         200),
    "GET api-export":         (DENIED,      403,         403,         403,         200,         200),
    "GET api-agreement":      (DENIED,      403,         403,         403,         200,         200),
    # Training: reviewers and staff. The run is finished (cancel: 409), the version is the
    # production one (promote: 409) and it has no predecessor (rollback: 409).
    "GET training":           (LOGIN,       403,         403,         403,         200,         200),
    "GET model-version-detail": (LOGIN,     403,         403,         403,         200,         200),
    "GET api-training-runs":  (DENIED,      403,         403,         403,         200,         200),
    "POST api-training-runs": (DENIED,      403,         403,         403,         400,         400),
    "GET api-training-run":   (DENIED,      403,         403,         403,         200,         200),
    "POST api-training-cancel": (DENIED,    403,         403,         403,         409,         409),
    "GET api-models":         (DENIED,      403,         403,         403,         200,         200),
    "GET api-model":          (DENIED,      403,         403,         403,         200,         200),
    "POST api-model-promote": (DENIED,      403,         403,         403,         409,         409),
    "POST api-models-rollback": (DENIED,    403,         403,         403,         409,         409),
    "GET api-model-events":   (DENIED,      403,         403,         403,         200,         200),
    "GET api-workers":        (DENIED,      403,         403,         403,         200,         200),
    # Batch jobs, also for reviewers and staff; the job has finished (cancel: 409).
    "GET inference-jobs":     (LOGIN,       403,         403,         403,         200,         200),
    "GET inference-job":      (LOGIN,       403,         403,         403,         200,         200),
    "GET api-jobs":           (DENIED,      403,         403,         403,         200,         200),
    "POST api-jobs":          (DENIED,      403,         403,         403,         400,         400),
    "GET api-job":            (DENIED,      403,         403,         403,         200,         200),
    "POST api-job-cancel":    (DENIED,      403,         403,         403,         409,         409),
    # The data browser: everyone logged in (an uploader sees their own images); bulk labelling and
    # its undo for reviewers (an unknown class: 400; no bulk label to undo: 400).
    "GET browse":             (LOGIN,       200,         200,         200,         200,         200),
    "POST api-images-bulk":   (DENIED,      403,         403,         403,         400,         400),
    "POST api-image-bulk-undo": (DENIED,    403,         403,         403,         400,         400),
    # More like this: the image has no stored embedding yet (400); a query photo is required (400).
    "GET api-image-similar":  (DENIED,      400,         403,         400,         400,         400),
    "POST api-similar":       (DENIED,      400,         400,         400,         400,         400),
    # Reviewers only; this image is not flagged (400).
    "POST api-image-not-duplicate": (DENIED, 403,       403,         403,         400,         400),
    # The image page's form: back to the image page, which shows what was recorded.
    "POST image-not-duplicate": (LOGIN,     403,         403,         403,         302,         302),
}


def project_url_names() -> set[str]:
    """Every URL name a request can reach, without admin internals, media (its own tests in
    tests/security/test_private_media.py), format-suffix variants and the DRF API root."""
    names = set()

    def walk(patterns, namespace=None):
        for p in patterns:
            if isinstance(p, URLResolver):
                if p.namespace == "admin":
                    names.add("admin:index")  # the admin's own pages are Django's, not ours
                    continue
                walk(p.url_patterns, p.namespace or namespace)
            elif isinstance(p, URLPattern):
                if p.callback is media_file or p.name == "api-root" or "format" in p.pattern.regex.groupindex:
                    continue
                assert p.name, f"unnamed URL pattern {p.pattern}: give it a name and a row"
                names.add(f"{namespace}:{p.name}" if namespace else p.name)

    walk(get_resolver().url_patterns)
    return names


def test_it_has_a_row_for_every_url():
    routes = {key.split(" ", 1)[1] for key in ROUTES}
    assert routes == project_url_names()
    assert set(EXPECTED) == set(ROUTES)
    assert all(len(row) == len(ROLES) for row in EXPECTED.values())


@pytest.fixture
def role_user(django_user_model):
    def make(role: str):
        if role == "anonymous":
            return None
        if role == "staff":
            return django_user_model.objects.create_superuser("sam", password=None)
        user = django_user_model.objects.create_user(role)  # no password: force_login needs none
        user.groups.add(role_group("uploader" if role == "owner" else role))
        return user
    return make


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", list(ROUTES))
def test_it_enforces_the_permission_matrix(client, species, django_user_model, role_user, route, role):
    user = role_user(role)
    owner = user if role == "owner" else django_user_model.objects.create_user("someone")
    image = predicted_image(version=species, probs=with_margin(species, 0.3))
    Upload.objects.create(image=image, user=owner, filename="mine.jpg")
    if user is not None:
        client.force_login(user)
    method, name = route.split(" ", 1)
    path_template, body = ROUTES[route]
    job = ImportJob.objects.create(archive="imports/x.zip", filename="x.zip")
    run = TrainingRun.objects.create(mode="head", trigger="manual", status="succeeded")
    batch = InferenceJob.objects.create(source="selection", version=species, status="done")
    path = path_template.format(image=image.id, species=Species.objects.get(name="cat").id, import_job=job.id,
                                version=species.id, run=run.id, job=batch.id)

    if method == "GET":
        response = client.get(path)
    elif route in MULTIPART:
        response = client.post(path, body)
    else:
        response = client.post(path, body, content_type="application/json")

    expected = EXPECTED[route][ROLES.index(role)]
    got = f"{response.status_code} {response.get('Location', '')}".strip()
    if expected == LOGIN:
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), got
    elif expected == ADMIN_LOGIN:
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), got
    elif expected == DENIED:
        assert response.status_code in (401, 403), got
    else:
        assert response.status_code == expected, got
