"""Every request to train is a row with its outcome, and no work is done twice (issue 11):
automatic triggers leave skipped and refused rows, a refused click answers 400 with the reason,
a click during a run joins it, and a run that would train what a registered version was trained
on returns that version."""

import pytest

from classifier import registry
from classifier.models import ModelVersion, TrainingRun
from classifier.training import progress, runs
from labeling import retrain, services
from labeling.models import Annotation
from labeling.review_queue import queue_next
from labeling.roles import role_group
from tests.helpers import logged_in_member
from tests.labeling.factories import predicted_image, with_margin

pytestmark = pytest.mark.django_db


@pytest.fixture
def trainer(client, django_user_model):
    return logged_in_member(client, django_user_model, "tess", "reviewer")


def click_retrain(client, **body):
    return client.post("/api/training/runs/", {"mode": "head", **body}, content_type="application/json")


def execute_queued() -> None:
    """What the worker does with the queued runs (on_commit does not fire inside a test)."""
    for run in TrainingRun.objects.filter(status="queued").order_by("id"):
        runs.training_execute(run_id=run.id)


# --- automatic triggers leave rows ----------------------------------------------------------

def test_the_label_trigger_leaves_a_refused_row_and_counts_again_after_it(settings, models_root, label_images):
    settings.RETRAIN_AFTER_LABELS = 4
    label_images({"cat": 2, "dog": 2})  # below TRAINING_MIN_PER_CLASS (3) in every class

    refused = retrain.retrain_if_due()

    assert (refused.status, refused.trigger, refused.mode) == ("refused", "labels", settings.RETRAIN_MODE)
    assert refused.outcome.startswith("refused: ") and len(refused.outcome) > len("refused: ")
    assert refused.is_finished and refused.finished is not None
    # The next check counts the labels since that attempt: none yet, so no second row.
    assert retrain.retrain_if_due() is None
    assert TrainingRun.objects.count() == 1


def test_the_label_trigger_leaves_a_skipped_row_when_no_label_changed(settings, models_root, label_images,
                                                                       django_user_model):
    settings.RETRAIN_AFTER_LABELS = 3
    images = label_images({"cat": 12, "dog": 12})
    first = retrain.retrain_if_due()
    execute_queued()
    first.refresh_from_db()
    assert first.status == "succeeded", first.error
    # Three more decisions that agree with the labels: the labels training reads are the same.
    annotator = django_user_model.objects.create_user("ann")
    for image in images[:3]:
        label = Annotation.objects.get(image=image).species
        Annotation.objects.create(image=image, kind="accepted", role="annotator", user=annotator, species=label,
                                  label=label.name)

    skipped = retrain.retrain_if_due()

    assert (skipped.status, skipped.trigger) == ("skipped", "labels")
    assert skipped.outcome == f"skipped: no new labels since run {first.id}"
    assert ModelVersion.objects.filter(kind="head").count() == 1


def test_the_schedule_leaves_a_refused_row_with_the_reason(models_root, species):
    refused = runs.training_scheduled(mode="head")

    assert (refused.status, refused.trigger) == ("refused", "schedule")
    assert refused.outcome.startswith("refused: ")


def test_the_training_page_api_lists_skipped_and_refused_runs_with_their_outcome(client, trainer, models_root,
                                                                                   species):
    runs.training_scheduled(mode="head")

    (row,) = client.get("/api/training/runs/").json()

    assert row["status"] == "refused" and row["outcome"].startswith("refused: ")
    assert client.get("/training/").status_code == 200


# --- manual requests ------------------------------------------------------------------------

def test_a_refused_click_answers_400_with_the_reason_and_leaves_a_row(client, trainer, models_root, species):
    response = click_retrain(client)

    assert response.status_code == 400
    (row,) = TrainingRun.objects.all()
    assert (row.status, row.trigger, row.requested_by) == ("refused", "manual", trainer)
    assert row.outcome == f"refused: {response.json()['detail']}"


def test_a_refused_click_does_not_restart_the_label_count(settings, client, trainer, models_root, label_images):
    settings.RETRAIN_AFTER_LABELS = 4
    label_images({"cat": 2, "dog": 2})
    assert click_retrain(client).status_code == 400

    assert retrain.retrain_if_due().trigger == "labels"


# --- no work done twice ---------------------------------------------------------------------

def test_a_click_during_an_automatic_run_joins_it_and_trains_the_snapshot_once(
        client, trainer, models_root, label_images, monkeypatch):
    """The walk in issue 11: Retrain clicked while a label-triggered run trained registered two
    identical versions of the same snapshot."""
    label_images({"cat": 12, "dog": 12})
    automatic = runs.training_automatic(mode="head", trigger=TrainingRun.Trigger.LABELS)
    clicks = []
    real_report = progress.Reporter.__call__

    def click_while_fitting(self, event):
        if event.stage == "fit" and not clicks:
            clicks.append(click_retrain(client))
        real_report(self, event)

    monkeypatch.setattr(progress.Reporter, "__call__", click_while_fitting)
    runs.training_execute(run_id=automatic.id)
    execute_queued()

    assert clicks[0].status_code == 200 and clicks[0].json()["id"] == automatic.id
    assert TrainingRun.objects.count() == 1
    assert ModelVersion.objects.filter(kind="head").count() == 1


def test_a_click_with_other_options_during_a_run_queues_its_own(client, trainer, models_root, label_images):
    label_images({"cat": 12, "dog": 12})
    automatic = runs.training_automatic(mode="head", trigger=TrainingRun.Trigger.LABELS)
    TrainingRun.objects.filter(id=automatic.id).update(status="running")

    response = click_retrain(client, options={"seed": 7})

    assert response.status_code == 201 and response.json()["id"] != automatic.id


def test_a_duplicate_run_returns_the_registered_version(models_root, label_images, species, staff):
    label_images({"cat": 12, "dog": 12})
    first = runs.training_execute(run_id=runs.training_request(mode="head", trigger="manual").id)
    trained = first.version
    # 24 images leave too few test images for the gate's paired test: promote it by hand.
    registry.model_promote(version=trained, reason="by the test")
    registry.model_rollback(user=staff)  # the parent is the zero-shot version again

    again = runs.training_execute(run_id=runs.training_request(mode="head", trigger="manual").id)

    assert again.status == "succeeded" and again.version == trained
    assert again.snapshot == first.snapshot and again.fingerprint == first.fingerprint
    assert again.outcome == (f"returned {trained.name} without training: same snapshot, mode, options and parent "
                             f"as run {first.id}")
    assert ModelVersion.objects.filter(kind="head").count() == 1
    # Other options are other work: that run trains.
    seeded = runs.training_execute(run_id=runs.training_request(mode="head", trigger="manual",
                                                                options={"seed": 3}).id)
    assert seeded.version != trained and ModelVersion.objects.filter(kind="head").count() == 2


def test_a_run_after_a_promotion_trains_against_the_new_parent(models_root, label_images):
    label_images({"cat": 12, "dog": 12})
    first = runs.training_execute(run_id=runs.training_request(mode="head", trigger="manual").id)
    # 24 images leave too few test images for the gate's paired test: promote the first by hand.
    registry.model_promote(version=first.version, reason="by the test")

    second = runs.training_execute(run_id=runs.training_request(mode="head", trigger="manual").id)

    assert second.version != first.version and second.version.parent == first.version
    assert second.outcome.startswith(f"trained {second.version.name}: kept as a candidate")


def test_labels_from_decisions_reach_the_trigger(settings, models_root, species, django_user_model):
    """The queue's decisions count towards the trigger as before (the check runs in a worker)."""
    settings.RETRAIN_AFTER_LABELS = 1
    annotator = django_user_model.objects.create_user("ann")
    annotator.groups.add(role_group("annotator"))
    predicted_image(version=species, probs=with_margin(species, 0.2))
    [claim] = queue_next(user=annotator, count=1)
    services.decision_make(user=annotator, token=claim.token, action="reject")

    assert retrain.retrain_if_due().status == "refused"
