"""No work done twice, through a real worker (issue 11): asking again for a run that would train
exactly what a registered version was trained on returns that version."""

import pytest

from classifier.models import ModelVersion, TrainingRun
from labeling.roles import role_group
from tests.helpers import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def finished(run_id: int) -> TrainingRun | None:
    return TrainingRun.objects.filter(id=run_id, status__in=TrainingRun.FINISHED).first()


def test_a_second_run_of_the_same_labels_and_parent_returns_the_registered_version(
        client, training_env, worker_factory, label_images, species, django_user_model):
    worker_factory(training_env)
    label_images({"cat": 12, "dog": 12})
    reviewer = django_user_model.objects.create_user("rita")
    reviewer.groups.add(role_group("reviewer"))
    client.force_login(reviewer)

    created = client.post("/api/training/runs/", {"mode": "head"}, content_type="application/json")
    assert created.status_code == 201, created.content
    first = wait_for(lambda: finished(created.json()["id"]), timeout=240, what="the first run")
    assert first.status == "succeeded", first.error
    if first.version.status == ModelVersion.Status.PRODUCTION:
        # Back to the zero-shot version: the same labels, mode, options and parent as the first
        # run. (On 24 images the paired test usually keeps the challenger a candidate.)
        assert client.post("/api/models/rollback/").status_code == 200

    again = client.post("/api/training/runs/", {"mode": "head"}, content_type="application/json")
    assert again.status_code == 201, again.content
    second = wait_for(lambda: finished(again.json()["id"]), timeout=240, what="the second run")

    assert second.status == "succeeded", second.error
    assert second.version == first.version
    assert second.outcome.startswith(f"returned {first.version.name} without training")
    assert ModelVersion.objects.filter(kind="head").count() == 1
    body = client.get(f"/api/training/runs/{second.id}/").json()
    assert (body["version"], body["outcome"]) == (first.version.name, second.outcome)
