"""Writes for labeling: claims, decisions, undo, skip and uploader feedback.

Every write appends; nothing here updates an Annotation. Conflicts (a stale claim, a label
that changed since the client loaded it) raise Conflict, which the API turns into a 409.
"""

import logging
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.cache import caches
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from classifier import training
from classifier.models import Image, Species, TrainingRun

from . import selectors
from .datasets import labels_since
from .models import Annotation, Claim, Skip

ACTIONS = ("accept", "choose", "reject")
logger = logging.getLogger(__name__)


class Conflict(Exception):
    """The decision was based on something that is no longer true; nothing was written."""


def role_of(user) -> str:
    return Annotation.Role.REVIEWER if user.has_perm("labeling.review") else Annotation.Role.ANNOTATOR


# --- the queue -------------------------------------------------------------------------------

def queue_next(*, user, count: int = 1) -> list[Claim]:
    """The user's next `count` images, each held for them for REVIEW_CLAIM_SECONDS.

    Claims the user already holds come first (a reload loses nothing). A claim is a row
    with a unique image: of two annotators racing for one image, one INSERT fails and that
    annotator moves on to the next candidate. That is correct on every database; on
    PostgreSQL the candidate rows are also locked with SKIP LOCKED so racers spread out
    instead of colliding on the same head of the queue.
    """
    now = timezone.now()
    held = list(selectors.live_claims(user)[:count])
    if len(held) >= count:
        return held
    Claim.objects.filter(expires__lte=now).delete()
    wanted = count - len(held)
    claims = list(held)
    for _ in range(3):  # a few rounds: racers may take some of our candidates
        ranked = selectors.queue_order(user, count=wanted * 2)
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


def _lock_image(image_id: int, *, skip_locked: bool = False) -> bool:
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
            if not _lock_image(image_id, skip_locked=True):
                return None
            # The ranking was read before this transaction: in between, someone may have
            # decided on this image, or claimed it and released it again. Check afresh.
            if not selectors.queue_candidates(user).filter(id=image_id).exists():
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


def _live_claim(*, user, token: str) -> Claim:
    claim = Claim.objects.select_related("image").filter(token=token).first()
    if claim is None or claim.user_id != user.id:
        raise Conflict("This image is no longer held for you (the claim was released or taken over). Load the next one.")
    if not claim.is_live():
        raise Conflict("Your hold on this image expired and it may have gone to someone else. Load the next one.")
    return claim


# --- decisions -------------------------------------------------------------------------------

@transaction.atomic
def decision_make(*, user, token: str, action: str, label: str | None = None, based_on: int | None = None,
                  time_taken_ms: int | None = None) -> Annotation:
    """Record one queue decision: accept the suggestion, choose a class, or reject."""
    if action not in ACTIONS:
        raise ValueError(f"Unknown action {action!r}; choose one of: {', '.join(ACTIONS)}")
    claim = _live_claim(user=user, token=token)
    _lock_image(claim.image_id)
    image = claim.image
    if based_on is not None and selectors.latest_annotation_id(image.id) != based_on:
        raise Conflict("The label of this image changed since you loaded it. Reload to see its history.")
    # The prediction the annotator was shown (the queue item shows the latest one).
    prediction = image.latest_prediction()
    suggestion = prediction.label if prediction else ""
    species = None
    if action == "accept":
        if not prediction or suggestion == "other":
            raise ValueError("There is no suggestion to accept for this image; choose a class or reject it.")
        species = _species(suggestion)
        kind = Annotation.Kind.ACCEPTED
    elif action == "choose":
        species = _species(label)
        kind = Annotation.Kind.ACCEPTED if species.name == suggestion else Annotation.Kind.CORRECTED
    else:
        kind = Annotation.Kind.REJECTED
    annotation = Annotation.objects.create(
        image=image,
        kind=kind,
        role=role_of(user),
        species=species,
        label=species.name if species else "",
        user=user,
        prediction=prediction,
        model_version=prediction.model_version if prediction else None,
        suggested_label=suggestion,
        time_taken_ms=time_taken_ms,
    )
    claim.delete()
    transaction.on_commit(_retrain_check_enqueue)
    return annotation


# While a retrain check waits in the queue, decisions enqueue no other: the waiting one counts
# their labels when it runs. Without this a burst of decisions (an import, many annotators)
# queued one check each on the inference queue, ahead of uploads' predictions, and the worker
# drained them at about 14 a second. The key expires in case its task is lost.
RETRAIN_CHECK_PENDING_S = 60


def retrain_check_key() -> str:
    """Per installation (database and queue), so two sites or test runs sharing a Redis never
    take each other's pending check for their own."""
    return f"labeling:retrain-check-pending:{settings.INFERENCE_QUEUE}:{settings.DATABASES['default']['NAME']}"


def _retrain_check_enqueue() -> None:
    if settings.RETRAIN_AFTER_LABELS <= 0:
        return
    from .tasks import retrain_if_due

    key = retrain_check_key()
    if caches["shared"].add(key, 1, timeout=RETRAIN_CHECK_PENDING_S):
        try:
            retrain_if_due.delay()
        except Exception:
            caches["shared"].delete(key)  # no check is waiting: the next decision must enqueue one
            raise


def retrain_check() -> TrainingRun | None:
    """The queued check: lets later decisions enqueue again, then counts. A decision that found
    the key set committed before this delete, so the count below sees its label."""
    caches["shared"].delete(retrain_check_key())
    return retrain_if_due()


def retrain_if_due() -> TrainingRun | None:
    """A training run once RETRAIN_AFTER_LABELS labels arrived since the last run was asked for.

    Runs in a worker (decisions only enqueue the check): counting is cheap, but checking the
    labels can be trained on reads them all."""
    if settings.RETRAIN_AFTER_LABELS <= 0:
        return None
    last = TrainingRun.objects.order_by("-created", "-id").first()
    if labels_since(last.created if last else None) < settings.RETRAIN_AFTER_LABELS:
        return None
    try:
        return training.training_request(mode=settings.RETRAIN_MODE, trigger=TrainingRun.Trigger.LABELS)
    except training.TrainingRefused as e:
        logger.info("retrain after labels skipped: %s", e)
        return None


def _species(label: str | None) -> Species:
    name = (label or "").strip().lower()
    species = Species.objects.filter(name=name, active=True).first()
    if species is None:
        raise ValueError(f"No active class named {label!r}.")
    return species


@transaction.atomic
def decision_undo(*, user) -> tuple[Annotation, Claim]:
    """Revert the user's last decision and hand the image back to them."""
    last = selectors.last_decision(user)
    if last is None:
        raise Conflict("There is nothing to undo.")
    _lock_image(last.image_id)
    if Annotation.objects.filter(image_id=last.image_id, id__gt=last.id).exclude(user=user).exists():
        raise Conflict("Someone else has decided on this image since; open its history instead of undoing.")
    try:
        with transaction.atomic():
            undo = Annotation.objects.create(
                image_id=last.image_id, kind=Annotation.Kind.UNDO, role=last.role, user=user, reverts=last,
                label=last.label, species=last.species,
            )
    except IntegrityError:  # a double click: the one-to-one `reverts` lets only one through
        raise Conflict("This decision was already undone.") from None
    now = timezone.now()
    Claim.objects.filter(image_id=last.image_id).delete()
    claim = Claim.objects.create(
        image_id=last.image_id, user=user, token=secrets.token_hex(16), created=now,
        expires=now + timedelta(seconds=settings.REVIEW_CLAIM_SECONDS),
    )
    return undo, claim


@transaction.atomic
def skip(*, user, token: str) -> None:
    claim = _live_claim(user=user, token=token)
    Skip.objects.get_or_create(image=claim.image, user=user)
    claim.delete()


@transaction.atomic
def feedback_give(*, user, image: Image, label: str) -> Annotation:
    """An uploader's "wrong? it's a ___": a suggestion, not ground truth, that jumps the queue."""
    species = _species(label)
    prediction = image.latest_prediction()
    return Annotation.objects.create(
        image=image,
        kind=Annotation.Kind.FEEDBACK,
        role=Annotation.Role.UPLOADER,
        species=species,
        label=species.name,
        user=user,
        prediction=prediction,
        model_version=prediction.model_version if prediction else None,
        suggested_label=prediction.label if prediction else "",
    )
