"""Named users in the three roles; the groups come from the labeling data migration."""

import pytest

from classifier import similarity
from labeling.roles import role_group
from tests.labeling.factories import predicted_image, with_margin


@pytest.fixture
def fresh_similarity():
    """Each test starts with empty similarity indexes: ids are reused on a rolled-back database."""
    similarity.forget()
    yield
    similarity.forget()


def member(django_user_model, username: str, group: str):
    # No password (so no slow hashing): the tests log in with force_login.
    user = django_user_model.objects.create_user(username)
    user.groups.add(role_group(group))
    return user


@pytest.fixture
def annotator(django_user_model):
    return member(django_user_model, "ann", "annotator")


@pytest.fixture
def annotator2(django_user_model):
    return member(django_user_model, "arno", "annotator")


@pytest.fixture
def reviewer(django_user_model):
    return member(django_user_model, "rita", "reviewer")


@pytest.fixture
def uploader(django_user_model):
    return member(django_user_model, "ursula", "uploader")


@pytest.fixture
def no_random_share(settings):
    settings.REVIEW_RANDOM_SHARE = 0.0


@pytest.fixture
def dog_image(species):
    """One image the model calls a dog, with cat a close second."""
    return predicted_image(version=species, probs=with_margin(species, 0.2, top="dog", second="cat"))
