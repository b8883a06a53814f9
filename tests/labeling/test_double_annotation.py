"""A share of images goes to two annotators; their agreement is measured and their
disagreements go to reviewers first."""

import pytest

from labeling import agreement, review_queue, selectors, services
from labeling.roles import role_group
from tests.labeling.factories import predicted_image, with_margin

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(django_user_model):
    made = {}
    for name, role in (("ann", "annotator"), ("arno", "annotator"), ("abe", "annotator"), ("rita", "reviewer")):
        user = django_user_model.objects.create_user(name)
        user.groups.add(role_group(role))
        made[name] = django_user_model.objects.get(id=user.id)
    return made


def decide(user, label):
    [claim] = review_queue.queue_next(user=user, count=1)
    services.decision_make(user=user, token=claim.token, action="choose", label=label)
    return claim.image_id


def test_it_gives_a_double_annotated_image_to_a_second_annotator(settings, species, people):
    settings.DOUBLE_ANNOTATION_PERCENT = 100
    image = predicted_image(version=species, probs=with_margin(species, 0.2))

    decide(people["ann"], "dog")

    [claim] = review_queue.queue_next(user=people["arno"], count=1)
    assert claim.image_id == image.id
    services.decision_make(user=people["arno"], token=claim.token, action="choose", label="dog")
    assert review_queue.queue_next(user=people["abe"], count=1) == []  # two opinions are enough


def test_it_gives_a_single_annotated_image_to_nobody_else(settings, species, people):
    settings.DOUBLE_ANNOTATION_PERCENT = 0
    predicted_image(version=species, probs=with_margin(species, 0.2))

    decide(people["ann"], "dog")

    assert review_queue.queue_next(user=people["arno"], count=1) == []


def test_it_sends_disagreements_to_reviewers_first(settings, species, people):
    settings.DOUBLE_ANNOTATION_PERCENT = 100
    disputed = predicted_image(version=species, probs=with_margin(species, 0.9))
    decide(people["ann"], "dog")
    decide(people["arno"], "cat")
    predicted_image(version=species, probs=with_margin(species, 0.01))  # far more uncertain

    assert agreement.disagreements() == [disputed.id]
    [claim] = review_queue.queue_next(user=people["rita"], count=1)
    assert claim.image_id == disputed.id
    services.decision_make(user=people["rita"], token=claim.token, action="choose", label="cat")
    assert agreement.disagreements() == []
    assert selectors.current_label(disputed).label == "cat"


def test_it_measures_agreement_per_pair(settings, species, people):
    settings.DOUBLE_ANNOTATION_PERCENT = 100
    for _ in range(4):
        predicted_image(version=species, probs=with_margin(species, 0.3))
    ann = {decide(people["ann"], label): label for label in ("dog", "cat", "dog", "llama")}
    for n in range(4):
        [claim] = review_queue.queue_next(user=people["arno"], count=1)
        # arno agrees with ann on all but his first image
        label = ann[claim.image_id] if n else ("cat" if ann[claim.image_id] != "cat" else "dog")
        services.decision_make(user=people["arno"], token=claim.token, action="choose", label=label)

    result = agreement.agreement()

    [pair] = result["pairs"]
    assert pair["annotators"] == ["ann", "arno"]
    assert pair["images"] == 4
    assert pair["agreement"] == 0.75
    assert 0.0 < pair["kappa"] < 1.0
    assert result["disagreements_open"] == 1


def test_it_shows_agreement_to_reviewers(client, settings, species, people):
    settings.DOUBLE_ANNOTATION_PERCENT = 100
    predicted_image(version=species, probs=with_margin(species, 0.3))
    decide(people["ann"], "dog")
    decide(people["arno"], "dog")
    client.force_login(people["rita"])

    body = client.get("/api/agreement/").json()
    page = client.get("/labels/").content.decode()

    assert body["pairs"][0]["agreement"] == 1.0
    assert "ann · arno" in page
