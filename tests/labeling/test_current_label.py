"""The current label of an image is derived from its append-only annotation history.

Rules (labeling.selectors.current_labels): a reviewer's decision beats an annotator's, which
beats uploader feedback and imports; within a rank the latest decision wins; an undone
decision no longer counts; "not an animal" is a label too, with no species.
"""

from datetime import timedelta

import pytest
from django.forms.models import model_to_dict
from django.utils import timezone

from classifier import registry
from classifier.models import Species
from classifier.selectors import production_model
from labeling import review_queue, selectors, services
from labeling.models import Annotation
from tests.labeling.factories import annotate, predicted_image, with_margin

pytestmark = pytest.mark.django_db

Kind, Role = Annotation.Kind, Annotation.Role
T0 = timezone.now() - timedelta(hours=1)


def at(minutes: int):
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def image(species):
    return predicted_image(version=species, probs=with_margin(species, 0.3))


@pytest.fixture
def dog(species):
    return Species.objects.get(name="dog")


@pytest.fixture
def cat(species):
    return Species.objects.get(name="cat")


@pytest.fixture
def llama(species):
    return Species.objects.get(name="llama")


def label_of(image) -> str | None:
    winner = selectors.current_labels([image.id]).get(image.id)
    return None if winner is None else winner.label


def test_it_lets_a_reviewer_beat_a_later_annotator(image, dog, cat, annotator, reviewer):
    annotate(image=image, kind=Kind.CORRECTED, role=Role.REVIEWER, species=dog, user=reviewer, created=at(1))
    annotate(image=image, kind=Kind.CORRECTED, role=Role.ANNOTATOR, species=cat, user=annotator, created=at(2))
    assert label_of(image) == "dog"


def test_it_lets_an_annotator_beat_later_uploader_feedback(image, dog, cat, annotator, uploader):
    annotate(image=image, kind=Kind.ACCEPTED, role=Role.ANNOTATOR, species=dog, user=annotator, created=at(1))
    annotate(image=image, kind=Kind.FEEDBACK, role=Role.UPLOADER, species=cat, user=uploader, created=at(2))
    assert label_of(image) == "dog"


def test_it_lets_an_annotator_beat_a_later_import(image, dog, cat, annotator):
    annotate(image=image, kind=Kind.ACCEPTED, role=Role.ANNOTATOR, species=dog, user=annotator, created=at(1))
    annotate(image=image, kind=Kind.IMPORTED, role=Role.IMPORT, species=cat, source="labels.zip", created=at(2))
    assert label_of(image) == "dog"


def test_it_uses_uploader_feedback_when_nobody_else_decided(image, cat, uploader):
    annotate(image=image, kind=Kind.FEEDBACK, role=Role.UPLOADER, species=cat, user=uploader, created=at(1))
    assert label_of(image) == "cat"


def test_it_lets_the_latest_decision_win_within_a_rank(image, dog, cat, annotator, annotator2):
    annotate(image=image, kind=Kind.ACCEPTED, role=Role.ANNOTATOR, species=dog, user=annotator, created=at(1))
    annotate(image=image, kind=Kind.CORRECTED, role=Role.ANNOTATOR, species=cat, user=annotator2, created=at(2))
    assert label_of(image) == "cat"


def test_it_ranks_feedback_and_imports_equally_and_takes_the_latest(image, dog, cat, uploader):
    annotate(image=image, kind=Kind.FEEDBACK, role=Role.UPLOADER, species=dog, user=uploader, created=at(2))
    annotate(image=image, kind=Kind.IMPORTED, role=Role.IMPORT, species=cat, created=at(1))
    assert label_of(image) == "dog"


def test_it_ignores_an_undone_decision_and_falls_back_to_the_one_before(image, dog, cat, annotator):
    annotate(image=image, kind=Kind.ACCEPTED, role=Role.ANNOTATOR, species=dog, user=annotator, created=at(1))
    second = annotate(image=image, kind=Kind.CORRECTED, role=Role.ANNOTATOR, species=cat, user=annotator,
                      created=at(2))
    annotate(image=image, kind=Kind.UNDO, role=Role.ANNOTATOR, species=cat, user=annotator, reverts=second,
             created=at(3))
    assert label_of(image) == "dog"


def test_it_lets_an_undone_reviewer_decision_give_way_to_the_annotator(image, dog, cat, annotator, reviewer):
    annotate(image=image, kind=Kind.ACCEPTED, role=Role.ANNOTATOR, species=dog, user=annotator, created=at(1))
    review = annotate(image=image, kind=Kind.CORRECTED, role=Role.REVIEWER, species=cat, user=reviewer,
                      created=at(2))
    annotate(image=image, kind=Kind.UNDO, role=Role.REVIEWER, species=cat, user=reviewer, reverts=review,
             created=at(3))
    assert label_of(image) == "dog"


def test_it_leaves_an_image_whose_only_decision_was_undone_unlabelled(image, dog, annotator):
    only = annotate(image=image, kind=Kind.ACCEPTED, role=Role.ANNOTATOR, species=dog, user=annotator, created=at(1))
    annotate(image=image, kind=Kind.UNDO, role=Role.ANNOTATOR, species=dog, user=annotator, reverts=only,
             created=at(2))
    assert selectors.current_labels([image.id]) == {}


def test_it_treats_not_an_animal_as_a_label_without_species(image, cat, annotator, uploader):
    annotate(image=image, kind=Kind.FEEDBACK, role=Role.UPLOADER, species=cat, user=uploader, created=at(1))
    rejected = annotate(image=image, kind=Kind.REJECTED, role=Role.ANNOTATOR, user=annotator, created=at(2))

    winner = selectors.current_labels([image.id])[image.id]

    assert winner.id == rejected.id
    assert winner.species is None
    assert winner.label == ""


def test_it_leaves_images_without_annotations_out(species, image, dog, annotator):
    unlabelled = predicted_image(version=species, probs=with_margin(species, 0.5))
    annotate(image=image, kind=Kind.ACCEPTED, role=Role.ANNOTATOR, species=dog, user=annotator, created=at(1))

    labels = selectors.current_labels([image.id, unlabelled.id])

    assert set(labels) == {image.id}
    assert labels[image.id].label == "dog"


def test_it_never_updates_an_annotation(settings, image, annotator):
    settings.REVIEW_RANDOM_SHARE = 0.0
    (claim,) = review_queue.queue_next(user=annotator, count=1)
    first = services.decision_make(user=annotator, token=claim.token, action="accept", time_taken_ms=800)
    before = model_to_dict(Annotation.objects.get(id=first.id))

    _, claim = services.decision_undo(user=annotator)
    services.decision_make(user=annotator, token=claim.token, action="choose", label="llama", time_taken_ms=900)

    rows = list(Annotation.objects.filter(image=image).order_by("id"))
    assert [a.kind for a in rows] == ["accepted", "undo", "corrected"]
    assert model_to_dict(rows[0]) == before
    assert rows[1].reverts_id == first.id
    assert label_of(image) == "llama"


def test_it_counts_labels_of_a_merged_class_as_the_target(species, django_user_model):
    image = predicted_image(version=species, probs=with_margin(species, 0.3))
    user = django_user_model.objects.create_user("ann")
    Annotation.objects.create(image=image, kind="corrected", role="annotator", user=user,
                              species=Species.objects.get(name="dalmatian"), label="dalmatian")

    registry.species_merge(source=Species.objects.get(name="dalmatian"),
                                      target=Species.objects.get(name="dog"))

    assert selectors.current_label(image).label == "dog"
    assert Annotation.objects.get().label == "dalmatian"  # history keeps what was chosen
    dog = Species.objects.get(name="dog")
    assert 251 in dog.imagenet_classes  # ImageNet's dalmatian now counts as dog
    assert not Species.objects.get(name="dalmatian").active
    assert "dalmatian" not in production_model().card["classes"]
