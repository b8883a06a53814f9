"""The review queue: which images an annotator sees next, and the claims that hold each image
for one annotator at a time.

Order: for reviewers, images two annotators disagree on, then suspected label errors; then
uploader feedback; then the strategy (REVIEW_QUEUE_STRATEGY: uncertain images by margin,
spread over embedding clusters, with a random share to keep the labelled set unbiased).
"""

import secrets
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from classifier.ml.active_learning import QueueParams, select_batch
from classifier.models import Embedding, Image, Prediction
from classifier.selectors import production_model

from .agreement import awaiting_second_annotator, disagreements
from .label_errors import LABEL_ERROR_QUEUE_LIMIT, suspected_label_errors
from .models import Annotation, Claim, ReviewRequest, Skip
from .selectors import HUMAN_ROLES, live_claims, live_labels


def queue_candidates(user) -> QuerySet[Image]:
    """Predicted images this user has not seen and nobody holds, that still need a label:
    none yet, or a second opinion (double annotation), or, for reviewers, a settled dispute
    or a suspected label error. A skip keeps an image from the user for as long as a claim
    lasts (REVIEW_CLAIM_SECONDS); then it comes back, so no image is lost to a skip."""
    now = timezone.now()
    human_label = live_labels().filter(image=OuterRef("pk"), role__in=HUMAN_ROLES)
    mine = Annotation.objects.filter(image=OuterRef("pk"), user=user)
    seen = ~Exists(mine.exclude(role=Annotation.Role.IMPORT))
    imported = Exists(mine.filter(role=Annotation.Role.IMPORT))
    skip_since = now - timedelta(seconds=settings.REVIEW_CLAIM_SECONDS)
    skipped = Skip.objects.filter(image=OuterRef("pk"), user=user, created__gt=skip_since)
    held = Claim.objects.filter(image=OuterRef("pk"), expires__gt=now)
    # Sent to review from the data browser: queued until a person labels it after the request.
    labelled_since = live_labels().filter(image=OuterRef(OuterRef("pk")), role__in=HUMAN_ROLES,
                                          created__gt=OuterRef("created"))
    requested = ReviewRequest.objects.filter(image=OuterRef("pk")).filter(~Exists(labelled_since))
    needs_label = ~Exists(human_label) | Q(id__in=awaiting_second_annotator()) | Exists(requested)
    # Labels a person imported are not asked of them again, except those suspected of being wrong:
    # the reviewer who imported a dataset is the one who sees its suspected label errors.
    unseen = seen & ~imported
    if user.has_perm("labeling.review"):
        suspects = suspected_label_errors(limit=LABEL_ERROR_QUEUE_LIMIT)
        needs_label |= Q(id__in=disagreements()) | Q(id__in=suspects)
        unseen = seen & (~imported | Q(id__in=suspects))
    return (
        Image.objects.filter(status=Image.Status.PREDICTED)
        .filter(needs_label)
        .filter(unseen, ~Exists(skipped), ~Exists(held))
        .order_by("-created", "-id")
    )


def queue_left(user) -> int:
    """How many images still wait for this user: those held for them and those they could get."""
    return queue_candidates(user).count() + Claim.objects.filter(user=user, expires__gt=timezone.now()).count()


def queue_order(user, *, count: int) -> list[int]:
    """Image ids for the user's next `count` items: disagreements first, then suspected label
    errors (both for reviewers), then uploader feedback, then the strategy."""
    candidates = queue_candidates(user)
    first = []
    if user.has_perm("labeling.review"):
        first = list(candidates.filter(id__in=disagreements()).values_list("id", flat=True)[:count])
        suspects = suspected_label_errors(limit=LABEL_ERROR_QUEUE_LIMIT)
        open_suspects = set(candidates.filter(id__in=suspects).exclude(id__in=first).values_list("id", flat=True))
        first += [i for i in suspects if i in open_suspects][:count]  # most suspicious first
    feedback = Annotation.objects.filter(image=OuterRef("pk"), kind=Annotation.Kind.FEEDBACK, reverted_by__isnull=True)
    first += list(candidates.filter(Exists(feedback)).exclude(id__in=first).values_list("id", flat=True)[:count])
    first = first[:count]
    if len(first) >= count:
        return first
    rest_ids = list(candidates.exclude(id__in=first).values_list("id", flat=True)[: settings.REVIEW_CANDIDATE_LIMIT])
    if not rest_ids:
        return first
    return first + rank_images(rest_ids, count=count - len(first), seed=user.id or 0)


def rank_images(image_ids: list[int], *, count: int, seed: int = 0) -> list[int]:
    version = production_model()
    probs = None
    if version is not None:
        by_image = dict(
            Prediction.objects.filter(image_id__in=image_ids, model_version=version)
            .values_list("image_id", "probabilities")
        )
        image_ids = [i for i in image_ids if i in by_image] or image_ids
        if by_image:
            probs = np.array([by_image[i] for i in image_ids], dtype=np.float64)
    vectors = dict(
        Embedding.objects.filter(image_id__in=image_ids, backbone=settings.DEFAULT_BACKBONE)
        .values_list("image_id", "vector")
    )
    embeddings = None
    if len(vectors) == len(image_ids):
        embeddings = np.stack([np.frombuffer(bytes(vectors[i]), dtype="<f4") for i in image_ids])
    params = QueueParams(strategy=settings.REVIEW_QUEUE_STRATEGY, random_share=settings.REVIEW_RANDOM_SHARE)
    if probs is None and embeddings is None:
        # Nothing to rank by (no current prediction, embeddings missing): random order.
        params = QueueParams(strategy="random")
        embeddings = np.zeros((len(image_ids), 1), dtype=np.float32)
    # Time-varying seed: two annotators asking at the same moment get different random picks.
    picks = select_batch(probs=probs, embeddings=embeddings, batch_size=count, params=params,
                         seed=seed * 7919 + int(timezone.now().timestamp()))
    return [image_ids[i] for i in picks]


# --- claims ----------------------------------------------------------------------------------

def queue_next(*, user, count: int = 1) -> list[Claim]:
    """The user's next `count` images, each held for them for REVIEW_CLAIM_SECONDS.

    Claims the user already holds come first (a reload loses nothing). A claim is a row
    with a unique image: of two annotators racing for one image, one INSERT fails and that
    annotator moves on to the next candidate. That is correct on every database; on
    PostgreSQL the candidate rows are also locked with SKIP LOCKED so racers spread out
    instead of colliding on the same head of the queue.
    """
    now = timezone.now()
    held = list(live_claims(user)[:count])
    if len(held) >= count:
        return held
    Claim.objects.filter(expires__lte=now).delete()
    wanted = count - len(held)
    claims = list(held)
    for _ in range(3):  # a few rounds: racers may take some of our candidates
        ranked = queue_order(user, count=wanted * 2)
        if not ranked:
            break
        for image_id in ranked:
            claim = _claim(user=user, image_id=image_id, now=now)
            if claim is not None:
                claims.append(claim)
                wanted -= 1
                if wanted == 0:
                    return claims
    return claims


def lock_image(image_id: int, *, skip_locked: bool = False) -> bool:
    """Serialise claims and decisions on one image; False if skip_locked found it busy.

    On PostgreSQL a row lock. NO KEY UPDATE, not UPDATE: a plain FOR UPDATE also blocks the
    key-share locks that inserting an Annotation or a Claim takes on the image, and two
    annotators (one claiming, one undoing) deadlocked in test_concurrency. On SQLite every
    write transaction already holds the database's one write lock from its start (settings:
    transaction_mode IMMEDIATE), which serialises the same way.
    """
    if connection.vendor != "postgresql":
        return True
    rows = Image.objects.select_for_update(skip_locked=skip_locked, no_key=True).filter(id=image_id)
    return rows.values_list("id", flat=True).first() is not None


def _claim(*, user, image_id: int, now) -> Claim | None:
    try:
        with transaction.atomic():
            if not lock_image(image_id, skip_locked=True):
                return None
            # The ranking was read before this transaction: in between, someone may have
            # decided on this image, or claimed it and released it again. Check afresh.
            if not queue_candidates(user).filter(id=image_id).exists():
                return None
            return Claim.objects.create(
                image_id=image_id,
                user=user,
                token=secrets.token_hex(16),
                created=now,
                expires=now + timedelta(seconds=settings.REVIEW_CLAIM_SECONDS),
            )
    except IntegrityError:
        return None
