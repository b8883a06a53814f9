"""Zero-shot versions follow the class list; the database allows one production version."""

import pytest
from django.db import IntegrityError, transaction

from classifier import registry, selectors
from classifier.models import ModelVersion, Species

pytestmark = pytest.mark.django_db


@pytest.fixture
def first_version() -> ModelVersion:
    registry.species_create_many(names=["cat", "dog"])
    return ModelVersion.objects.get()


def test_it_makes_one_production_version_for_a_class_list(first_version):
    assert first_version.kind == "zero_shot"
    assert first_version.status == ModelVersion.Status.PRODUCTION
    assert first_version.classes == ["cat", "dog", "other"]
    assert first_version.card["zero_shot_top_k"] == 5  # new versions count each image's top five ImageNet classes
    assert selectors.production_model() == first_version


def test_it_makes_no_new_version_when_nothing_changed(first_version):
    assert registry.zero_shot_version_sync() == first_version
    assert registry.zero_shot_version_sync() == first_version
    assert ModelVersion.objects.count() == 1


def test_it_makes_a_new_production_version_for_a_new_class(first_version):
    registry.species_create(name="llama")

    new = selectors.production_model()
    assert new != first_version
    assert new.classes == ["cat", "dog", "llama", "other"]
    assert new.parent == first_version
    first_version.refresh_from_db()
    assert first_version.status == ModelVersion.Status.RETIRED
    assert ModelVersion.objects.count() == 2


def test_it_makes_a_new_version_when_a_mapping_changes(first_version):
    Species.objects.filter(name="dog").update(imagenet_classes=[151])

    new = registry.zero_shot_version_sync()

    assert new != first_version
    assert new.card["imagenet_map"]["dog"] == [151]
    assert selectors.production_model() == new


def test_it_goes_back_to_the_version_of_an_earlier_class_list(first_version):
    registry.species_create(name="llama")
    Species.objects.filter(name="llama").update(active=False)

    version = registry.zero_shot_version_sync()

    assert version == first_version
    assert selectors.production_model() == first_version
    assert ModelVersion.objects.count() == 2


def test_it_makes_the_zero_shot_version_on_the_default_backbone(first_version, settings):
    assert first_version.backbone == settings.DEFAULT_BACKBONE
    settings.DEFAULT_BACKBONE = "efficientnet_lite1"

    new = registry.zero_shot_version_sync()

    assert new != first_version and selectors.production_model() == new
    assert new.backbone == new.card["backbone"] == "efficientnet_lite1"
    assert new.card["preprocessing"]["crop_size"] == 240  # Lite1's own input size, from its spec
    assert new.classes == first_version.classes


def test_it_does_not_take_production_from_a_trained_model(first_version):
    trained = ModelVersion.objects.create(
        name="head-1", kind="head", backbone="efficientnet_lite0", card={}, card_sha256="x" * 64
    )
    registry.model_promote(version=trained)

    registry.species_create(name="llama")

    assert selectors.production_model() == trained


@pytest.fixture
def candidate(first_version) -> ModelVersion:
    return ModelVersion.objects.create(
        name="candidate-1", kind="head", backbone="efficientnet_lite0", card={}, card_sha256="y" * 64
    )


def test_it_refuses_a_second_production_version_by_update(candidate):
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(id=candidate.id).update(status=ModelVersion.Status.PRODUCTION)
    assert ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).count() == 1


def test_it_refuses_a_second_production_version_by_save(candidate):
    candidate.status = ModelVersion.Status.PRODUCTION
    with pytest.raises(IntegrityError), transaction.atomic():
        candidate.save()
    assert ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).count() == 1


def test_it_allows_many_retired_versions(first_version):
    registry.species_create(name="llama")
    registry.species_create(name="emu")
    assert ModelVersion.objects.filter(status=ModelVersion.Status.RETIRED).count() == 2


def test_it_promotes_by_retiring_the_champion(first_version, candidate):
    registry.model_promote(version=candidate)

    first_version.refresh_from_db()
    assert first_version.status == ModelVersion.Status.RETIRED
    assert selectors.production_model() == candidate
    assert candidate.promoted is not None
