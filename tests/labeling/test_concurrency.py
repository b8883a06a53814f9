"""Many annotators at once (threads, each with its own database connection).

Afterwards every decision the service acknowledged is stored exactly once, and no image was
decided by two annotators: the claim made each one exclusive.
"""

import random
import threading
import time
from collections import Counter

import pytest
from django.db import connection, connections

from classifier.models import Image, Prediction
from labeling import review_queue, services
from labeling.models import Annotation
from labeling.roles import role_group

pytestmark = pytest.mark.django_db(transaction=True)

N_IMAGES = 60
N_ANNOTATORS = 6
SECONDS = 4.0


def make_predicted_images(version, n):
    classes = version.card["classes"]
    rng = random.Random(0)
    for i in range(n):
        image = Image.objects.create(
            sha256=f"{i:064x}", original=f"images/{i}.jpg", preview=f"images/{i}.preview.jpg",
            thumbnail=f"images/{i}.thumb.jpg", format="JPEG", original_mode="RGB", width=10, height=10,
            size_bytes=100, status=Image.Status.PREDICTED,
        )
        probs = [rng.random() for _ in classes]
        total = sum(probs)
        probs = [p / total for p in probs]
        order = sorted(range(len(classes)), key=lambda k: -probs[k])
        Prediction.objects.create(
            image=image, model_version=version, label=classes[order[0]], confidence=probs[order[0]],
            top=[{"label": classes[k], "p": probs[k]} for k in order[:5]], probabilities=probs,
            backend="test", model_ms=1.0, latency_ms=1.0,
        )


class Race:
    """Annotators deciding (and sometimes undoing) as fast as they can, each in its own thread,
    until SECONDS have passed; what the service acknowledged is kept to compare with the table."""

    def __init__(self, labels: list[str]):
        self.labels = labels
        self.acknowledged: list[tuple[int, int, int]] = []  # (annotation id, image id, user id)
        self.undone: list[int] = []
        self.conflicts = Counter()
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.deadline = time.monotonic() + SECONDS

    def run(self, users) -> None:
        threads = [threading.Thread(target=self.annotate, args=(u, i)) for i, u in enumerate(users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)

    def annotate(self, user, seed: int) -> None:
        rng = random.Random(seed)
        try:
            while time.monotonic() < self.deadline:
                claims = review_queue.queue_next(user=user, count=2)
                if not claims:
                    break
                for claim in claims:
                    self.decide(user, claim, rng)
        except BaseException as e:  # surfaced by the test: a thread's failure must fail it
            self.errors.append(e)
        finally:
            connections.close_all()

    def decide(self, user, claim, rng) -> None:
        try:
            annotation = services.decision_make(
                user=user, token=claim.token, action="choose", label=rng.choice(self.labels), time_taken_ms=5
            )
        except services.Conflict:
            with self.lock:
                self.conflicts["decision"] += 1
            return
        with self.lock:
            self.acknowledged.append((annotation.id, annotation.image_id, user.id))
        if rng.random() < 0.15:
            try:
                undo, _ = services.decision_undo(user=user)
                with self.lock:
                    self.undone.append(undo.reverts_id)
            except services.Conflict:
                with self.lock:
                    self.conflicts["undo"] += 1


def test_it_never_gives_one_image_to_two_annotators(species, django_user_model, settings):
    settings.REVIEW_CLAIM_SECONDS = 60
    make_predicted_images(species, N_IMAGES)
    group = role_group("annotator")
    users = []
    for i in range(N_ANNOTATORS):
        user = django_user_model.objects.create_user(f"annotator{i}", password="x")
        user.groups.add(group)
        users.append(django_user_model.objects.get(id=user.id))  # fresh: no cached permissions
    race = Race([c for c in species.card["classes"] if c != "other"])
    race.run(users)
    acknowledged, undone, conflicts = race.acknowledged, race.undone, race.conflicts
    assert not race.errors, race.errors
    assert acknowledged, "no decision was made"

    decisions = Annotation.objects.exclude(kind=Annotation.Kind.UNDO)
    stored = Counter(decisions.values_list("id", flat=True))
    assert sorted(stored) == sorted(a for a, _, _ in acknowledged)
    assert all(n == 1 for n in stored.values())
    assert Annotation.objects.filter(kind=Annotation.Kind.UNDO).count() == len(undone)

    # No image was decided by two different annotators: each was held by one at a time,
    # and a decided image never went back into anyone else's queue.
    deciders = {}
    for image_id, user_id in decisions.values_list("image_id", "user_id"):
        deciders.setdefault(image_id, set()).add(user_id)
    assert all(len(who) == 1 for who in deciders.values()), deciders
    print(f"{connection.vendor}: {len(acknowledged)} decisions, {len(undone)} undos, conflicts {dict(conflicts)}")
