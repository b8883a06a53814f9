"""Which images the review queue hands out, and to whom (labeling.review_queue.queue_next)."""

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from classifier import registry
from classifier.models import Image
from labeling import review_queue, services
from labeling.models import Claim
from labeling.roles import role_group
from tests.labeling.factories import (
    cluster_embedding,
    predicted_image,
    prediction_make,
    with_margin,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_random_share(settings):
    # The random share draws from a time-varying seed; without it the order is exact.
    settings.REVIEW_RANDOM_SHARE = 0.0


def image_ids(claims) -> list[int]:
    return [c.image_id for c in claims]


@pytest.fixture
def by_margin(species):
    """Five predicted images, keyed by the margin between their two best classes."""
    return {m: predicted_image(version=species, probs=with_margin(species, m)) for m in (0.8, 0.1, 0.4, 0.02, 0.6)}


def test_it_hands_out_the_most_uncertain_images_first(by_margin, annotator):
    claims = review_queue.queue_next(user=annotator, count=5)
    assert image_ids(claims) == [by_margin[m].id for m in (0.02, 0.1, 0.4, 0.6, 0.8)]


def test_it_ranks_by_margin_under_the_plain_margin_strategy(settings, by_margin, annotator):
    settings.REVIEW_QUEUE_STRATEGY = "margin"
    claims = review_queue.queue_next(user=annotator, count=2)
    assert image_ids(claims) == [by_margin[0.02].id, by_margin[0.1].id]


def test_it_holds_each_handed_out_image_for_the_user(settings, by_margin, annotator):
    settings.REVIEW_CLAIM_SECONDS = 300
    before = timezone.now()
    claims = review_queue.queue_next(user=annotator, count=3)
    assert Claim.objects.count() == 3
    for claim in claims:
        assert claim.user == annotator
        assert before + timedelta(seconds=299) < claim.expires <= timezone.now() + timedelta(seconds=300)


def test_it_never_queues_an_image_an_annotator_labelled(by_margin, annotator, annotator2):
    (claim,) = review_queue.queue_next(user=annotator, count=1)
    services.decision_make(user=annotator, token=claim.token, action="accept")

    for user in (annotator, annotator2):
        assert claim.image_id not in image_ids(review_queue.queue_next(user=user, count=10))


def test_it_never_queues_an_image_a_reviewer_rejected(by_margin, reviewer, annotator):
    (claim,) = review_queue.queue_next(user=reviewer, count=1)
    services.decision_make(user=reviewer, token=claim.token, action="reject")

    assert claim.image_id not in image_ids(review_queue.queue_next(user=annotator, count=10))


def test_it_never_gives_two_annotators_the_same_image_while_claims_live(species, annotator, annotator2, reviewer):
    for m in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        predicted_image(version=species, probs=with_margin(species, m))

    first = image_ids(review_queue.queue_next(user=annotator, count=3))
    second = image_ids(review_queue.queue_next(user=annotator2, count=3))
    again = image_ids(review_queue.queue_next(user=annotator, count=3))
    third = review_queue.queue_next(user=reviewer, count=3)

    assert len(first) == len(second) == 3
    assert set(first).isdisjoint(second)
    assert again == first
    assert third == []
    assert Claim.objects.count() == 6


def test_it_gives_an_image_to_someone_else_after_the_claim_expires(by_margin, annotator, annotator2):
    mine = image_ids(review_queue.queue_next(user=annotator, count=5))
    assert review_queue.queue_next(user=annotator2, count=5) == []

    Claim.objects.filter(user=annotator).update(expires=timezone.now() - timedelta(seconds=1))

    assert sorted(image_ids(review_queue.queue_next(user=annotator2, count=5))) == sorted(mine)
    assert set(Claim.objects.values_list("user", flat=True)) == {annotator2.id}


def test_it_never_queues_images_that_are_not_predicted_yet(species, annotator):
    predicted = predicted_image(version=species, probs=with_margin(species, 0.5))
    predicted_image(version=species, status=Image.Status.QUEUED)
    predicted_image(version=species, status=Image.Status.PREDICTING)
    failed = predicted_image(version=species, status=Image.Status.FAILED)
    # A status still "queued" keeps an image out even if a prediction row exists already.
    prediction_make(image=predicted_image(version=species, status=Image.Status.QUEUED), version=species,
                    probs=with_margin(species, 0.0))

    assert image_ids(review_queue.queue_next(user=annotator, count=10)) == [predicted.id]
    assert not Claim.objects.filter(image=failed).exists()


def test_it_hands_out_every_candidate_exactly_once_under_the_random_strategy(settings, species, annotator):
    settings.REVIEW_QUEUE_STRATEGY = "random"
    everything = {predicted_image(version=species, probs=with_margin(species, m)).id for m in np.linspace(0, 0.9, 9)}

    handed_out = []
    for _ in range(10):
        claims = review_queue.queue_next(user=annotator, count=2)
        if not claims:
            break
        handed_out += image_ids(claims)
        for claim in claims:
            services.skip(user=annotator, token=claim.token)

    assert len(handed_out) == len(everything)
    assert set(handed_out) == everything


def test_it_hands_out_images_from_several_clusters_under_the_diverse_strategy(settings, species, annotator):
    settings.REVIEW_QUEUE_STRATEGY = "margin_diverse"
    rng = np.random.default_rng(0)
    cluster_of = {}
    # Cluster 0: six near-duplicates, the most uncertain of all. Clusters 1 and 2: more
    # spread out and more certain.
    for m in np.linspace(0.0, 0.05, 6):
        image = predicted_image(version=species, probs=with_margin(species, m),
                                embedding=cluster_embedding(0, rng=rng, spread=0.0005))
        cluster_of[image.id] = 0
    for centre in (1, 2):
        for m in np.linspace(0.2 + 0.3 * centre, 0.3 + 0.3 * centre, 6):
            image = predicted_image(version=species, probs=with_margin(species, m),
                                    embedding=cluster_embedding(centre, rng=rng, spread=0.05))
            cluster_of[image.id] = centre

    claims = review_queue.queue_next(user=annotator, count=3)

    assert len(claims) == 3
    assert len({cluster_of[i] for i in image_ids(claims)}) >= 2


def test_it_queues_images_the_current_model_has_not_predicted_by_their_embeddings(species, annotator):
    rng = np.random.default_rng(1)
    old = [predicted_image(version=species, probs=with_margin(species, m), embedding=cluster_embedding(c, rng=rng))
           for c, m in ((0, 0.3), (1, 0.5))]
    registry.species_create(name="zebra")  # a new zero-shot version takes production

    assert sorted(image_ids(review_queue.queue_next(user=annotator, count=5))) == sorted(i.id for i in old)


def test_it_queues_images_with_neither_a_current_prediction_nor_an_embedding(species, annotator):
    old = predicted_image(version=species, probs=with_margin(species, 0.3))
    registry.species_create(name="zebra")  # a new zero-shot version takes production

    assert image_ids(review_queue.queue_next(user=annotator, count=5)) == [old.id]



def test_it_ranks_the_queue_for_a_user_with_a_large_id(settings, species, django_user_model):
    settings.REVIEW_QUEUE_STRATEGY = "margin_diverse"
    rng = np.random.default_rng(0)
    for centre in range(3):
        for m in (0.1, 0.2, 0.3):
            predicted_image(version=species, probs=with_margin(species, m + centre / 10),
                            embedding=cluster_embedding(centre, rng=rng))
    user = django_user_model.objects.create_user("late-joiner", id=400_000)
    user.groups.add(role_group("annotator"))

    assert len(review_queue.queue_next(user=user, count=3)) == 3
