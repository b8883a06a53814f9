"""Every version serves every class, and the gate sees every class (issue 11), through the
training service: a rare class never refuses a run, the gate scores the whole test split and
refuses a challenger that stops serving a class, staff see what a promotion by hand loses."""

import pytest

from classifier import registry, selectors
from classifier.models import ModelVersion, TrainingRun
from classifier.training import gate, runs

pytestmark = pytest.mark.django_db


def run_head() -> TrainingRun:
    run = runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL)
    return runs.training_execute(run_id=run.id)


@pytest.fixture
def owner(django_user_model):
    """An ML owner: may train, promote and see the training pages."""
    return django_user_model.objects.create_superuser("olga", password="olga-password-1")


@pytest.fixture
def gerenuk(species):
    """A class ImageNet has no class for."""
    return registry.species_create(name="gerenuk")


def test_a_class_with_one_label_does_not_refuse_the_run(models_root, label_images, gerenuk):
    label_images({"cat": 15, "dog": 15, "llama": 1, "gerenuk": 1})

    run = run_head()

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    served = run.version.card["served"]
    assert served["llama"]["how"] == "zero_shot" and served["llama"]["labels"] == 1
    assert served["gerenuk"] == {"how": "not_served", "labels": 1, "needs": 2}
    assert served["cat"]["how"] == "learned" and served["other"]["how"] == "zero_shot"
    assert {"llama", "gerenuk"} <= {row[2] for row in run.snapshot.items}  # every label stays in the snapshot


def test_the_gate_scores_every_test_image_of_every_class(models_root, label_images):
    label_images({"cat": 15, "dog": 15, "llama": 2, "flamingo": 2})
    version = run_head().version

    test_split = version.snapshot.split("test")
    assert version.gate["n"] == len(test_split)
    assert {c["label"] for c in version.gate["per_class"]} == {row[2] for row in test_split}


def test_the_gate_refuses_a_challenger_that_stops_serving_a_class(models_root, label_images, gerenuk):
    label_images({"cat": 15, "dog": 15, "gerenuk": 15})
    version = run_head().version
    assert version.card["served"]["gerenuk"]["how"] == "learned"
    # A zero-shot champion that serves a class the trained version does not know.
    registry.species_create(name="hedgehog")
    champion = ModelVersion.objects.filter(kind="zero_shot").order_by("-id").first()

    result = gate.gate_evaluate(challenger=version, champion=champion)

    assert not result.promote
    assert result.coverage_lost == ["hedgehog"] and "stop serving hedgehog" in result.reason


def test_promoting_by_hand_states_the_coverage_it_loses(models_root, label_images, gerenuk, owner, client):
    label_images({"cat": 15, "dog": 15, "gerenuk": 15})
    trained = run_head().version
    assert selectors.production_model() == trained
    zero_shot = ModelVersion.objects.filter(kind="zero_shot").order_by("-id").first()
    client.force_login(owner)

    page = client.get("/training/")
    assert 'data-loses="gerenuk"' in page.content.decode()
    answer = client.post(f"/api/models/{zero_shot.id}/promote/")

    assert answer.status_code == 200 and answer.json()["coverage_lost"] == ["gerenuk"]
    assert "stops serving gerenuk" in selectors.production_model().status_reason


def test_the_version_page_lists_coverage_and_what_is_not_served_yet(models_root, label_images, gerenuk, owner,
                                                                      client):
    label_images({"cat": 15, "dog": 15, "gerenuk": 2})
    version = run_head().version
    client.force_login(owner)

    html = client.get(version.get_absolute_url()).content.decode()

    assert "gerenuk: needs 1 more label" in html
    assert "learned: cat, dog" in html and "by their zero-shot score: dalmatian" in html
    assert "McNemar" in html
