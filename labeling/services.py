"""Writes for labeling: decisions, undo, skip and uploader feedback.

Every write appends; nothing here updates an Annotation. Conflicts (a stale claim, a label
that changed since the client loaded it) raise Conflict, which the API turns into a 409.
"""

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from classifier import errors
from classifier.models import Image, Prediction, Species

from . import retrain, selectors
from .models import Annotation, Claim, Skip
from .review_queue import lock_image

ACTIONS = ("accept", "choose", "reject")
REOPEN_RECENT = 20  # how far back in their own log a person can reopen a decision


class Conflict(errors.Conflict):
    """The decision was based on something that is no longer true; nothing was written."""


def role_of(user) -> str:
    return Annotation.Role.REVIEWER if user.has_perm("labeling.review") else Annotation.Role.ANNOTATOR


# --- the queue -------------------------------------------------------------------------------


def _live_claim(*, user, token: str) -> Claim:
    claim = Claim.objects.select_related("image").filter(token=token).first()
    if claim is None or claim.user_id != user.id:
        raise Conflict("This image is no longer held for you (the claim was released or taken over). "
                       "Load the next one.")
    if not claim.is_live():
        raise Conflict("Your hold on this image expired and it may have gone to someone else. Load the next one.")
    return claim


def _hold(*, user, image_id: int) -> Claim:
    """A fresh claim on the image for the user (the caller holds the image's lock)."""
    now = timezone.now()
    Claim.objects.filter(image_id=image_id).delete()
    return Claim.objects.create(
        image_id=image_id, user=user, token=secrets.token_hex(16), created=now,
        expires=now + timedelta(seconds=settings.REVIEW_CLAIM_SECONDS),
    )


# --- decisions -------------------------------------------------------------------------------

def _shown_prediction(image: Image, prediction_id: int | None) -> Prediction | None:
    """The prediction the annotator was shown: the one the client names, else the latest (the
    queue item shows the latest, but a re-predict may have written a newer one since)."""
    if prediction_id is None:
        return image.latest_prediction()
    prediction = Prediction.objects.select_related("model_version").filter(id=prediction_id, image=image).first()
    if prediction is None:
        raise errors.Rejected(f"Prediction {prediction_id} is not a prediction of image {image.id}.")
    return prediction


@transaction.atomic
def decision_make(*, user, token: str, action: str, label: str | None = None, based_on: int | None = None,
                  time_taken_ms: int | None = None, prediction: int | None = None) -> Annotation:
    """Record one queue decision: accept the suggestion shown, choose a class, or reject.

    `accept` takes exactly the suggestion shown (`prediction`, the id the queue item carried)
    and never stands in another class for it: when the model's answer is "other", there is
    nothing to accept and the annotator must choose.
    """
    if action not in ACTIONS:
        raise errors.Rejected(f"Unknown action {action!r}; choose one of: {', '.join(ACTIONS)}")
    claim = _live_claim(user=user, token=token)
    lock_image(claim.image_id)
    image = claim.image
    if based_on is not None and selectors.latest_annotation_id(image.id) != based_on:
        raise Conflict("The label of this image changed since you loaded it. Reload to see its history.")
    prediction = _shown_prediction(image, prediction)
    suggestion = prediction.label if prediction else ""
    species = None
    if action == "accept":
        if not prediction or suggestion == "other":
            raise errors.Rejected("There is no suggestion to accept for this image; choose a class or reject it.")
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
    transaction.on_commit(retrain.retrain_check_enqueue, robust=True)
    return annotation


def _species(label: str | None) -> Species:
    name = (label or "").strip().lower()
    species = Species.objects.filter(name=name, active=True).first()
    if species is None:
        raise errors.Rejected(f"No active class named {label!r}.")
    return species


@transaction.atomic
def decision_undo(*, user) -> tuple[Annotation, Claim]:
    """Revert the user's last decision and hand the image back to them."""
    last = selectors.last_decision(user)
    if last is None:
        raise Conflict("There is nothing to undo.")
    lock_image(last.image_id)
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
    return undo, _hold(user=user, image_id=last.image_id)


@transaction.atomic
def decision_reopen(*, user, annotation_id: int) -> Claim:
    """Hold the image of one of the user's recent decisions for them again, to decide anew.

    Nothing is reverted: the next decision is appended and, being later and of the same rank,
    becomes the current label. The decision stays in the history either way.
    """
    recent = selectors.recent_decisions(user, limit=REOPEN_RECENT)
    decision = next((a for a in recent if a.id == annotation_id), None)
    if decision is None:
        raise errors.Rejected(f"Only your own last {REOPEN_RECENT} decisions can be reopened.")
    lock_image(decision.image_id)
    if Annotation.objects.filter(image_id=decision.image_id, id__gt=decision.id).exclude(user=user).exists():
        raise Conflict("Someone else has decided on this image since; open its history instead.")
    held = Claim.objects.filter(image_id=decision.image_id).first()
    if held is not None and held.is_live() and held.user_id != user.id:
        raise Conflict("Someone else holds this image right now; try again in a few minutes.")
    return _hold(user=user, image_id=decision.image_id)


@transaction.atomic
def skip(*, user, token: str) -> None:
    """Pass on the image: it goes to others at once, and back to this user once
    REVIEW_CLAIM_SECONDS have passed (review_queue.queue_candidates)."""
    claim = _live_claim(user=user, token=token)
    Skip.objects.update_or_create(image=claim.image, user=user, defaults={"created": timezone.now()})
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
