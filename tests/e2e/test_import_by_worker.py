"""A zip import runs in a real Celery worker and reports progress over the API."""

import io
import zipfile

import pytest
import requests
from rest_framework.authtoken.models import Token

from classifier.models import Image, Prediction
from labeling.roles import role_group
from tests.helpers import demo_photo, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def test_it_imports_a_zip_in_the_worker(live_server, celery_worker, species, django_user_model):
    reviewer = django_user_model.objects.create_user("rita")
    reviewer.groups.add(role_group("reviewer"))
    headers = {"Authorization": f"Token {Token.objects.create(user=reviewer).key}"}
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("dalmatian/a.jpg", demo_photo("dalmatian", 1).read_bytes())
        z.writestr("starfish/b.jpg", demo_photo("starfish", 1).read_bytes())
        z.writestr("starfish/broken.jpg", b"not a photo")

    response = requests.post(f"{live_server.url}/api/imports/", headers=headers, timeout=30,
                             files={"file": ("labels.zip", archive.getvalue(), "application/zip")})
    assert response.status_code == 202, response.text
    url = f"{live_server.url}/api/imports/{response.json()['id']}/"

    job = wait_for(lambda: (j := requests.get(url, headers=headers, timeout=30).json())["status"] in ("done", "failed")
                   and j, timeout=120, what="the import")
    assert job["status"] == "done", job["error"]
    assert (job["processed"], job["created_images"], job["percent"]) == (3, 2, 100)
    assert [r["path"] for r in job["rejected"]] == ["starfish/broken.jpg"]

    # Imported photos are predicted like uploads. (Waiting for it also keeps the worker from
    # still writing predictions while the next test empties the database: on PostgreSQL that
    # TRUNCATE and the worker's transaction deadlocked once.)
    wait_for(lambda: Prediction.objects.filter(image__in=Image.objects.all()).values("image").distinct().count() == 2,
             timeout=120, what="the imported photos' predictions")
