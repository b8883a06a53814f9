"""Suspected label errors (DESIGN §4, confident learning on embeddings): labels that a model
trained on the other labels confidently contradicts go to reviewers' queues."""

import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Exists, OuterRef, QuerySet

from classifier.ml.label_errors import find_label_issues
from classifier.models import Embedding

from .models import Annotation
from .selectors import batches, current_labels, live_labels

# Labels that teach the out-of-fold model: uploader feedback is a suggestion, not ground truth,
# so it is left out.
LABEL_ERROR_TRAINING_ROLES = (Annotation.Role.IMPORT, Annotation.Role.ANNOTATOR, Annotation.Role.REVIEWER)
# Labels that may be flagged: a reviewer's decision settles an image, so it is never second-guessed.
LABEL_ERROR_FLAGGED_ROLES = (Annotation.Role.IMPORT, Annotation.Role.ANNOTATOR)
LABEL_ERROR_WINDOW = 10_000  # the newest labelled images (by upload) analysed; bounds the work per run
LABEL_ERROR_MAX_AGE_SECONDS = 60  # reuse a run this long while labels keep arriving (see _label_error_run)
LABEL_ERROR_QUEUE_LIMIT = 500  # suspects considered per queue request


@dataclass(frozen=True)
class SuspectedLabel:
    image_id: int
    label: str  # the current label, from an import or an annotator
    model_label: str  # what the out-of-fold model confidently says instead
    score: float  # higher is more suspicious
    annotations: int  # the length of the image's history when the run read its label


@dataclass(frozen=True)
class LabelErrorRun:
    last_annotation_id: int  # what the run saw: annotations up to this id...
    last_embedding_id: int  # ...and embeddings up to this one
    computed_at: float  # time.time(), comparable across processes sharing the cache
    suspects: list[SuspectedLabel]


def suspected_label_errors(limit: int | None = None) -> list[int]:
    """Image ids whose current label (from an import or an annotator) the model confidently
    disagrees with, most suspicious first; DESIGN §4, confident learning on embeddings."""
    return [s.image_id for s in suspected_labels()[:limit]]


def suspected_labels() -> list[SuspectedLabel]:
    """The suspects of the latest run whose images nobody has annotated since, most suspicious first."""
    run = _label_error_run()
    lengths = _history_lengths([s.image_id for s in run.suspects])
    # A decision made after the run (a reviewer's, an undo, another annotator's) may have
    # changed the label it suspected: the image leaves the queue at once, however old the
    # cached run is, and the next run looks at it afresh. The history is append-only, so a
    # longer one means exactly that, whatever order concurrent transactions committed in.
    return [s for s in run.suspects if lengths.get(s.image_id) == s.annotations]


def import_source(job_id: int) -> str:
    """How an imported label names its import (Annotation.source): "import 7: dog/rex.jpg"."""
    return f"import {job_id}: "


def import_suspects(job_ids: list[int]) -> dict[int, list[SuspectedLabel]]:
    """import job id -> the suspected label errors among the images it labelled, most suspicious first."""
    suspects = suspected_labels()
    by_image = {s.image_id: s for s in suspects}
    found: dict[int, list[SuspectedLabel]] = {job_id: [] for job_id in job_ids}
    for job_id in job_ids:
        rows = Annotation.objects.filter(role=Annotation.Role.IMPORT, image_id__in=list(by_image),
                                         source__startswith=import_source(job_id))
        images = set(rows.values_list("image_id", flat=True))
        found[job_id] = [s for s in suspects if s.image_id in images]
    return found


def _label_error_run() -> LabelErrorRun:
    """The suspects, computed again only when labels or embeddings changed.

    Every decision changes the latest annotation id, so while annotators are busy a run
    that is under LABEL_ERROR_MAX_AGE_SECONDS old is reused rather than redone on each
    reviewer's request: a new label is looked at a minute late at worst, and labels that
    changed since are dropped by suspected_labels either way.
    """
    last_ids = (_latest_id(Annotation.objects.all()), _latest_id(Embedding.objects.all()))
    key = f"labeling:suspected-labels:{settings.DEFAULT_BACKBONE}"
    run = cache.get(key)
    fresh = run is not None and (
        (run.last_annotation_id, run.last_embedding_id) == last_ids
        or time.time() - run.computed_at <= LABEL_ERROR_MAX_AGE_SECONDS
    )
    if not fresh:
        # The ids are read before the data, so whatever the run reads is at least that new.
        run = LabelErrorRun(*last_ids, computed_at=time.time(), suspects=_find_suspected_labels())
        # A class merge renames labels without a new annotation: look again at least hourly.
        cache.set(key, run, timeout=3600)
    return run


def _find_suspected_labels() -> list[SuspectedLabel]:
    backbone = settings.DEFAULT_BACKBONE
    has_embedding = Embedding.objects.filter(image=OuterRef("image_id"), backbone=backbone)
    # A rejection ("not an animal / none of these", no class) is everything else, not one
    # region of embedding space, so it neither teaches the model nor gets flagged.
    image_ids = list(
        live_labels().filter(Exists(has_embedding), role__in=LABEL_ERROR_TRAINING_ROLES, species__isnull=False)
        .order_by("-image_id").values_list("image_id", flat=True).distinct()[:LABEL_ERROR_WINDOW]
    )
    # Read before the labels: a decision landing in between makes the history longer than
    # counted, so suspected_labels drops the suspect rather than keep a label that changed.
    lengths = _history_lengths(image_ids)
    labels = {}
    for batch in batches(image_ids):
        labels.update(current_labels(batch, ground_truth=True))
    # As in training (selectors.training_labels): uploader feedback is no ground truth, and a retired
    # class is no answer a reviewer could give.
    labels = {
        i: a for i, a in labels.items()
        if a.role in LABEL_ERROR_TRAINING_ROLES and a.species is not None and a.species.resolved().active
    }
    if not labels:
        return []
    ids = sorted(labels)
    vectors = {}
    for batch in batches(ids):
        rows = Embedding.objects.filter(image_id__in=batch, backbone=backbone)
        vectors.update(rows.values_list("image_id", "vector"))
    embeddings = np.stack([np.frombuffer(bytes(vectors[i]), dtype="<f4") for i in ids])
    suspects = []
    for issue in find_label_issues(embeddings, [labels[i].label for i in ids]):
        annotation = labels[ids[issue.index]]
        if annotation.role in LABEL_ERROR_FLAGGED_ROLES:
            suspects.append(SuspectedLabel(image_id=annotation.image_id, label=issue.given_label,
                                           model_label=issue.suggested_label, score=issue.score,
                                           annotations=lengths[annotation.image_id]))
    return suspects


def _history_lengths(image_ids: list[int]) -> dict[int, int]:
    """image id -> how many annotations it has, undos and undone ones included."""
    lengths = {}
    for batch in batches(image_ids):
        rows = Annotation.objects.filter(image_id__in=batch).order_by().values("image_id").annotate(n=Count("id"))
        lengths.update(rows.values_list("image_id", "n"))
    return lengths


def _latest_id(rows: QuerySet) -> int:
    return rows.order_by("-id").values_list("id", flat=True).first() or 0
