"""Labels the model confidently disagrees with go to a second review (DESIGN §4): a reviewer
gets them right after disagreements; an annotator never gets them back; a reviewer's decision
settles them for good."""

import numpy as np
import pytest
from django.core.cache import cache

from classifier.models import Species
from labeling import label_errors, review_queue, selectors, services
from labeling.models import Annotation
from labeling.roles import role_group
from tests.labeling.factories import annotate, cluster_embedding, predicted_image, with_margin

pytestmark = pytest.mark.django_db

CLUSTERS = {"dog": 0, "cat": 1, "llama": 2}  # each class's photos lie near their own direction


@pytest.fixture(autouse=True)
def _fresh_suspects():
    # Suspects are cached across requests; no test may see another test's.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _no_random_share(settings):
    settings.REVIEW_RANDOM_SHARE = 0.0


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def labelled_image(version, *, label: str, looks_like: str, rng, user, role=Annotation.Role.ANNOTATOR):
    """A predicted image whose embedding lies in `looks_like`'s cluster, labelled `label`."""
    image = predicted_image(version=version, probs=with_margin(version, 0.8),
                            embedding=cluster_embedding(CLUSTERS[looks_like], rng=rng))
    annotate(image=image, kind=Annotation.Kind.ACCEPTED, role=role, species=Species.objects.get(name=label),
             user=user)
    return image


@pytest.fixture
def mislabelled(species, annotator, rng):
    """Eight correctly labelled images of each class, and a cat an annotator labelled "dog"."""
    for label in CLUSTERS:
        for _ in range(8):
            labelled_image(species, label=label, looks_like=label, rng=rng, user=annotator)
    return labelled_image(species, label="dog", looks_like="cat", rng=rng, user=annotator)


def image_ids(claims) -> list[int]:
    return [c.image_id for c in claims]


def review(user, *, label: str) -> int:
    [claim] = review_queue.queue_next(user=user, count=1)
    services.decision_make(user=user, token=claim.token, action="choose", label=label)
    return claim.image_id


def test_it_suspects_the_label_the_embeddings_disagree_with(mislabelled):
    [suspect] = label_errors.suspected_labels()

    assert label_errors.suspected_label_errors() == [mislabelled.id]
    assert (suspect.label, suspect.model_label) == ("dog", "cat")


def test_it_gives_a_reviewer_the_suspect_before_the_active_learning_ranking(species, mislabelled, reviewer):
    unsure = predicted_image(version=species, probs=with_margin(species, 0.01))  # far more uncertain

    assert image_ids(review_queue.queue_next(user=reviewer, count=2)) == [mislabelled.id, unsure.id]


def test_it_gives_a_reviewer_disagreements_before_suspects(species, mislabelled, annotator, annotator2, reviewer):
    disputed = predicted_image(version=species, probs=with_margin(species, 0.8))
    for user, label in ((annotator, "dog"), (annotator2, "cat")):
        annotate(image=disputed, kind=Annotation.Kind.ACCEPTED, role=Annotation.Role.ANNOTATOR,
                 species=Species.objects.get(name=label), user=user)
    unsure = predicted_image(version=species, probs=with_margin(species, 0.01))

    assert image_ids(review_queue.queue_next(user=reviewer, count=3)) == [disputed.id, mislabelled.id, unsure.id]


def test_it_tells_a_reviewer_why_a_suspect_is_in_their_queue(client, species, mislabelled, reviewer):
    unsure = predicted_image(version=species, probs=with_margin(species, 0.01))
    client.force_login(reviewer)

    items = client.get("/api/review/next/", {"count": 2}).json()

    assert [(i["image"], i["suspected_label"]) for i in items] == [
        (mislabelled.id, {"label": "dog", "model_label": "cat"}),
        (unsure.id, None),
    ]


def test_it_does_not_give_a_suspect_to_another_annotator(species, mislabelled, annotator2):
    unlabelled = predicted_image(version=species, probs=with_margin(species, 0.5))

    assert image_ids(review_queue.queue_next(user=annotator2, count=10)) == [unlabelled.id]


def test_it_drops_the_suspect_once_a_reviewer_corrects_it(mislabelled, reviewer, django_user_model):
    second_reviewer = django_user_model.objects.create_user("rex")
    second_reviewer.groups.add(role_group("reviewer"))

    assert review(reviewer, label="cat") == mislabelled.id

    assert label_errors.suspected_label_errors() == []
    assert selectors.current_label(mislabelled).label == "cat"
    assert review_queue.queue_next(user=second_reviewer, count=5) == []


def test_it_never_brings_back_a_label_a_reviewer_confirmed(mislabelled, reviewer):
    assert review(reviewer, label="dog") == mislabelled.id
    cache.clear()  # a fresh run, not just the cached one filtered

    assert label_errors.suspected_label_errors() == []
    assert selectors.current_label(mislabelled).role == Annotation.Role.REVIEWER


def test_it_drops_the_suspect_as_soon_as_anyone_labels_it_after_the_run(mislabelled, annotator2):
    assert label_errors.suspected_label_errors() == [mislabelled.id]  # the run, cached from here on
    annotate(image=mislabelled, kind=Annotation.Kind.ACCEPTED, role=Annotation.Role.ANNOTATOR,
             species=Species.objects.get(name="cat"), user=annotator2)

    assert label_errors.suspected_label_errors() == []


def test_it_never_suspects_a_reviewers_label(species, mislabelled, reviewer, rng):
    by_reviewer = labelled_image(species, label="llama", looks_like="cat", rng=rng, user=reviewer,
                                 role=Annotation.Role.REVIEWER)

    assert selectors.current_label(by_reviewer).label == "llama"
    assert label_errors.suspected_label_errors() == [mislabelled.id]


def test_it_does_not_learn_from_uploader_feedback(species, mislabelled, uploader, rng):
    # Were feedback ground truth, these twenty "dogs" would outvote the eight cats of their
    # cluster: the mislabelled cat would look right and the real cats wrong.
    for _ in range(20):
        image = predicted_image(version=species, probs=with_margin(species, 0.8),
                                embedding=cluster_embedding(CLUSTERS["cat"], rng=rng))
        services.feedback_give(user=uploader, image=image, label="dog")

    assert label_errors.suspected_label_errors() == [mislabelled.id]


def test_it_neither_learns_nor_suggests_a_retired_class(mislabelled):
    Species.objects.filter(name="cat").update(active=False)

    assert label_errors.suspected_labels() == []


def test_it_suspects_the_label_again_after_the_reviewer_undoes_their_decision(mislabelled, reviewer, monkeypatch):
    review(reviewer, label="cat")
    services.decision_undo(user=reviewer)
    monkeypatch.setattr(label_errors, "LABEL_ERROR_MAX_AGE_SECONDS", 0)  # no reuse of the run before the undo

    assert selectors.current_label(mislabelled).role == Annotation.Role.ANNOTATOR
    assert label_errors.suspected_label_errors() == [mislabelled.id]


def test_it_never_suspects_a_rejection(species, mislabelled, annotator, rng):
    # "Not an animal" for six photos that look like cats: enough for a class of their own,
    # were rejections one.
    for _ in range(6):
        rejected = predicted_image(version=species, probs=with_margin(species, 0.8),
                                   embedding=cluster_embedding(CLUSTERS["cat"], rng=rng))
        annotate(image=rejected, kind=Annotation.Kind.REJECTED, role=Annotation.Role.ANNOTATOR, user=annotator)

    assert label_errors.suspected_label_errors() == [mislabelled.id]


def test_it_suspects_imported_labels_too(species, annotator, rng):
    for label in CLUSTERS:
        for _ in range(8):
            labelled_image(species, label=label, looks_like=label, rng=rng, user=annotator)
    imported = labelled_image(species, label="llama", looks_like="dog", rng=rng, user=None,
                              role=Annotation.Role.IMPORT)

    assert label_errors.suspected_label_errors() == [imported.id]


def test_it_looks_again_at_new_labels_once_the_cached_run_is_stale(species, mislabelled, annotator, rng,
                                                                     monkeypatch):
    assert label_errors.suspected_label_errors() == [mislabelled.id]
    another = labelled_image(species, label="llama", looks_like="cat", rng=rng, user=annotator)
    # Within the reuse window the cached run still answers; past it, the new label is looked at.
    assert another.id not in label_errors.suspected_label_errors()
    monkeypatch.setattr(label_errors, "LABEL_ERROR_MAX_AGE_SECONDS", 0)

    assert sorted(label_errors.suspected_label_errors()) == sorted([mislabelled.id, another.id])


def test_it_suspects_nothing_while_every_class_has_too_few_labels(species, annotator, rng):
    for label in CLUSTERS:
        for _ in range(3):
            labelled_image(species, label=label, looks_like=label, rng=rng, user=annotator)
    labelled_image(species, label="dog", looks_like="cat", rng=rng, user=annotator)

    assert label_errors.suspected_label_errors() == []
