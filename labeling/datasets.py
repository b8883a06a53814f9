"""Labels as training data: what classifier's training reads (settings.TRAINING_LABELS_SOURCE)."""

from datetime import datetime

from classifier.ml.class_map import OTHER

from .models import Annotation
from .selectors import current_labels

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
