"""Reads for labeling: the current label of an image (derived from its append-only history,
never stored), what training reads as ground truth, and what a user decided last."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from classifier.ml.class_map import OTHER
from classifier.ml.datasets import SPLITS, Item, assign_splits
from classifier.models import Image, Species

from .models import Annotation, Claim, ImageSummary

HUMAN_ROLES = (Annotation.Role.ANNOTATOR, Annotation.Role.REVIEWER)
_ID_BATCH = 5000  # ids per IN (...) query: SQLite caps the parameters of one statement
# Uploader feedback is a suggestion, not ground truth: it never becomes training data.
GROUND_TRUTH_KINDS = (Annotation.Kind.ACCEPTED, Annotation.Kind.CORRECTED, Annotation.Kind.REJECTED,
                      Annotation.Kind.IMPORTED)


def training_labels() -> dict[int, str]:
    """image id -> class name today, for every image with a ground-truth label.

    "Not an animal / none of these" becomes the class "other"; labels of a retired class are
    left out (a merged class's labels count as the class it was merged into). An uploader's
    claim neither makes nor hides a label: the winner is taken among ground-truth decisions only.
    """
    image_ids = (
        Annotation.objects.filter(kind__in=GROUND_TRUTH_KINDS, reverted_by__isnull=True)
        .values_list("image_id", flat=True).distinct()
    )
    labels = {}
    for batch in batches(list(image_ids)):
        labels.update((i, name) for i, (name, _) in ground_truth_labels(batch).items())
    return labels


def ground_truth_labels(image_ids: Iterable[int]) -> dict[int, tuple[str, Annotation]]:
    """image id -> (class name, the deciding annotation) for those of `image_ids` with a
    ground-truth label, named as training_labels names them."""
    labels = {}
    for image_id, annotation in current_labels(image_ids, ground_truth=True).items():
        if annotation.kind == Annotation.Kind.REJECTED:
            labels[image_id] = (OTHER, annotation)
        elif annotation.species is not None:
            species = annotation.species.resolved()
            if species.active:
                labels[image_id] = (species.name, annotation)
    return labels


@dataclass
class ClassLabels:
    """One row of the labels page: a class's ground-truth labels per split, and what it still needs."""

    name: str
    display: str
    splits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))

    @property
    def total(self) -> int:
        return sum(self.splits.values())

    @property
    def needed(self) -> int:
        """More labels before a run learns this class (TRAINING_MIN_PER_CLASS); 0: it has enough."""
        return max(0, settings.TRAINING_MIN_PER_CLASS - self.total)


def label_counts() -> list[ClassLabels]:
    """Per class (every active one, and "other" for "not an animal"), the ground-truth labels in
    each split, assigned by content hash exactly as a training snapshot assigns them."""
    rows = {s.name: ClassLabels(name=s.name, display=s.label) for s in Species.objects.filter(active=True)}
    rows[OTHER] = ClassLabels(name=OTHER, display="other (not an animal / none of these)")
    labels = training_labels()
    # The browser's summary row holds each image's split, its near-duplicate group's included.
    known = {i: s for batch in batches(list(labels))
             for i, s in ImageSummary.objects.filter(image_id__in=batch).values_list("image_id", "split")}
    shas = dict(Image.objects.filter(id__in=[i for i in labels if i not in known]).values_list("id", "sha256"))
    items = assign_splits([Item(path=Path(sha), label=labels[i], sha256=sha) for i, sha in shas.items()],
                          test_fraction=settings.TRAINING_TEST_FRACTION, val_fraction=settings.TRAINING_VAL_FRACTION)
    items += [Item(path=Path(str(i)), label=labels[i], split=split) for i, split in known.items()]
    for item in items:
        rows.setdefault(item.label, ClassLabels(name=item.label, display=item.label))
        rows[item.label].splits[item.split] += 1
    return sorted(rows.values(), key=lambda r: (r.name == OTHER, r.name))


def labels_since(moment: datetime | None) -> int:
    """Ground-truth decisions made after `moment` (all of them for None), undone ones excluded."""
    decisions = Annotation.objects.filter(kind__in=GROUND_TRUTH_KINDS, reverted_by__isnull=True)
    if moment is not None:
        decisions = decisions.filter(created__gt=moment)
    return decisions.count()


def _winner(annotations: list[Annotation], kinds) -> Annotation | None:
    reverted = {a.reverts_id for a in annotations if a.kind == Annotation.Kind.UNDO}
    labels = [a for a in annotations if a.kind in kinds and a.id not in reverted]
    if not labels:
        return None
    # A reviewer's decision beats an annotator's, which beats uploader feedback and imports;
    # within a rank the latest decision wins.
    return max(labels, key=lambda a: (Annotation.ROLE_RANK[a.role], a.created, a.id))


def current_labels(image_ids: Iterable[int], *, ground_truth: bool = False) -> dict[int, Annotation]:
    """image id -> the annotation that sets its current label (absent: unlabelled).

    ground_truth: uploader feedback left out, so the answer is the label training and exports use
    (an image with only a claim is absent; a claim after an import does not hide the import).
    """
    kinds = GROUND_TRUTH_KINDS if ground_truth else Annotation.LABELLING_KINDS
    by_image: dict[int, list[Annotation]] = defaultdict(list)
    for a in Annotation.objects.filter(image_id__in=list(image_ids)).select_related("species", "user"):
        by_image[a.image_id].append(a)
    result = {}
    for image_id, annotations in by_image.items():
        winner = _winner(annotations, kinds)
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


QUEUE_DECISION_KINDS = (Annotation.Kind.ACCEPTED, Annotation.Kind.CORRECTED, Annotation.Kind.REJECTED)


def last_decision(user) -> Annotation | None:
    """The user's latest queue decision that has not been undone."""
    return (
        Annotation.objects.filter(user=user, kind__in=QUEUE_DECISION_KINDS, reverted_by__isnull=True)
        .order_by("-created", "-id")
        .first()
    )


def recent_decisions(user, *, limit: int) -> list[Annotation]:
    """The user's latest queue decisions, newest first, undone ones included (their log)."""
    rows = Annotation.objects.filter(user=user, kind__in=QUEUE_DECISION_KINDS).select_related("reverted_by")
    return list(rows.order_by("-created", "-id")[:limit])


def latest_feedback(image_ids: Iterable[int] | None = None) -> dict[int, Annotation]:
    """image id -> its uploader's latest claim ("wrong? it's a ___") not undone; all images for None."""
    rows = Annotation.objects.filter(kind=Annotation.Kind.FEEDBACK, reverted_by__isnull=True)
    if image_ids is not None:
        rows = rows.filter(image_id__in=list(image_ids))
    return {a.image_id: a for a in rows.select_related("species", "user", "image").order_by("created", "id")}


def uploader_claims(image_ids: Iterable[int]) -> dict[int, str]:
    """image id -> the class its uploader says it is. A claim, not a label: it never reaches
    training (GROUND_TRUTH_KINDS) nor an export's class folders; the review card shows it so the
    annotator can weigh it."""
    return {i: (a.species.resolved().name if a.species else a.label) for i, a in latest_feedback(image_ids).items()}


def live_claims(user) -> QuerySet[Claim]:
    return Claim.objects.filter(user=user, expires__gt=timezone.now()).select_related("image").order_by("created", "id")


def live_labels():
    return Annotation.objects.filter(kind__in=Annotation.LABELLING_KINDS, reverted_by__isnull=True)


def batches(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _ID_BATCH):
        yield ids[start:start + _ID_BATCH]
