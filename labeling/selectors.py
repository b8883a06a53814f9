"""Reads for labeling: the current label of an image (derived from its append-only history,
never stored), what training reads as ground truth, and what a user decided last."""

from collections import defaultdict
from datetime import datetime
from typing import Iterable

from django.db.models import QuerySet
from django.utils import timezone

from classifier.ml.class_map import OTHER
from classifier.models import Image

from .models import Annotation, Claim

HUMAN_ROLES = (Annotation.Role.ANNOTATOR, Annotation.Role.REVIEWER)
_ID_BATCH = 5000  # ids per IN (...) query: SQLite caps the parameters of one statement
# Uploader feedback is a suggestion, not ground truth: it never becomes training data.
GROUND_TRUTH_KINDS = (Annotation.Kind.ACCEPTED, Annotation.Kind.CORRECTED, Annotation.Kind.REJECTED,
                      Annotation.Kind.IMPORTED)


def training_labels() -> dict[int, str]:
    """image id -> class name today, for every image with a ground-truth label.

    "Not an animal / none of these" becomes the class "other"; labels of a retired class are
    left out (a merged class's labels count as the class it was merged into).
    """
    image_ids = (
        Annotation.objects.filter(kind__in=GROUND_TRUTH_KINDS, reverted_by__isnull=True)
        .values_list("image_id", flat=True).distinct()
    )
    labels = {}
    for image_id, annotation in current_labels(list(image_ids)).items():
        if annotation.kind == Annotation.Kind.REJECTED:
            labels[image_id] = OTHER
        elif annotation.kind in GROUND_TRUTH_KINDS and annotation.species is not None:
            species = annotation.species.resolved()
            if species.active:
                labels[image_id] = species.name
    return labels


def labels_since(moment: datetime | None) -> int:
    """Ground-truth decisions made after `moment` (all of them for None), undone ones excluded."""
    decisions = Annotation.objects.filter(kind__in=GROUND_TRUTH_KINDS, reverted_by__isnull=True)
    if moment is not None:
        decisions = decisions.filter(created__gt=moment)
    return decisions.count()


def _winner(annotations: list[Annotation]) -> Annotation | None:
    reverted = {a.reverts_id for a in annotations if a.kind == Annotation.Kind.UNDO}
    labels = [a for a in annotations if a.is_label and a.id not in reverted]
    if not labels:
        return None
    # A reviewer's decision beats an annotator's, which beats uploader feedback and imports;
    # within a rank the latest decision wins.
    return max(labels, key=lambda a: (Annotation.ROLE_RANK[a.role], a.created, a.id))


def current_labels(image_ids: Iterable[int]) -> dict[int, Annotation]:
    """image id -> the annotation that sets its current label (absent: unlabelled)."""
    by_image: dict[int, list[Annotation]] = defaultdict(list)
    for a in Annotation.objects.filter(image_id__in=list(image_ids)).select_related("species", "user"):
        by_image[a.image_id].append(a)
    result = {}
    for image_id, annotations in by_image.items():
        winner = _winner(annotations)
        if winner is not None:
            if winner.species is not None and winner.species.merged_into_id:
                # Report the label under its class's name today (after merges); the stored
                # row keeps the name the annotator chose. In memory only, never saved.
                winner.label = winner.species.resolved().name
            result[image_id] = winner
    return result


def current_label(image: Image) -> Annotation | None:
    return current_labels([image.id]).get(image.id)


def latest_annotation_id(image_id: int) -> int:
    """What a client saw: any later annotation means the label may have changed since."""
    return Annotation.objects.filter(image_id=image_id).order_by("-id").values_list("id", flat=True).first() or 0


def history(image: Image) -> QuerySet[Annotation]:
    return image.annotations.select_related("user", "species", "model_version", "reverts").order_by("created", "id")


def last_decision(user) -> Annotation | None:
    """The user's latest queue decision that has not been undone."""
    return (
        Annotation.objects.filter(
            user=user,
            kind__in=[Annotation.Kind.ACCEPTED, Annotation.Kind.CORRECTED, Annotation.Kind.REJECTED],
            reverted_by__isnull=True,
        )
        .order_by("-created", "-id")
        .first()
    )


def live_claims(user) -> QuerySet[Claim]:
    return Claim.objects.filter(user=user, expires__gt=timezone.now()).select_related("image").order_by("created", "id")


def live_labels():
    return Annotation.objects.filter(kind__in=Annotation.LABELLING_KINDS, reverted_by__isnull=True)


def batches(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _ID_BATCH):
        yield ids[start:start + _ID_BATCH]
