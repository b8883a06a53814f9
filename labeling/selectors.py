"""Reads for labeling: the current label (derived, never stored) and the review queue."""

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from classifier.ml.active_learning import QueueParams, select_batch
from classifier.ml.label_errors import find_label_issues
from classifier.models import Embedding, Image, Prediction
from classifier.selectors import production_model

from .models import Annotation, Claim, Skip

HUMAN_ROLES = (Annotation.Role.ANNOTATOR, Annotation.Role.REVIEWER)

# Label-error detection (suspected_label_errors). Labels that teach the out-of-fold model:
# uploader feedback is a suggestion, not ground truth, so it is left out.
LABEL_ERROR_TRAINING_ROLES = (Annotation.Role.IMPORT, Annotation.Role.ANNOTATOR, Annotation.Role.REVIEWER)
# Labels that may be flagged: a reviewer's decision settles an image, so it is never second-guessed.
LABEL_ERROR_FLAGGED_ROLES = (Annotation.Role.IMPORT, Annotation.Role.ANNOTATOR)
LABEL_ERROR_WINDOW = 10_000  # the newest labelled images (by upload) analysed; bounds the work per run
LABEL_ERROR_MAX_AGE_SECONDS = 60  # reuse a run this long while labels keep arriving (see _label_error_run)
LABEL_ERROR_QUEUE_LIMIT = 500  # suspects considered per queue request
_ID_BATCH = 5000  # ids per IN (...) query: SQLite caps the parameters of one statement


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


def _live_labels():
    return Annotation.objects.filter(kind__in=Annotation.LABELLING_KINDS, reverted_by__isnull=True)


def wants_second_opinion(sha256: str) -> bool:
    """Whether an image goes to two annotators: a stable share of images, by content hash."""
    return int(sha256[:8], 16) % 100 < settings.DOUBLE_ANNOTATION_PERCENT


def awaiting_second_annotator() -> list[int]:
    """Images chosen for double annotation that have exactly one annotator's label so far."""
    if settings.DOUBLE_ANNOTATION_PERCENT <= 0:
        return []
    reviewed = _live_labels().filter(role=Annotation.Role.REVIEWER).values("image_id")
    once = (
        _live_labels().filter(role=Annotation.Role.ANNOTATOR).exclude(image_id__in=reviewed)
        .values("image_id").annotate(n=Count("user_id", distinct=True)).filter(n=1)
        .values_list("image_id", "image__sha256")
    )
    return [image_id for image_id, sha in once if wants_second_opinion(sha)]


def disagreements() -> list[int]:
    """Images two annotators labelled differently and no reviewer has settled yet."""
    reviewed = _live_labels().filter(role=Annotation.Role.REVIEWER).values("image_id")
    by_image: dict[int, dict[int, str]] = defaultdict(dict)
    rows = (
        _live_labels().filter(role=Annotation.Role.ANNOTATOR).exclude(image_id__in=reviewed)
        .order_by("created", "id").values_list("image_id", "user_id", "label")
    )
    for image_id, user_id, label in rows:
        by_image[image_id][user_id] = label  # a user's latest label counts
    return sorted(i for i, labels in by_image.items() if len(labels) >= 2 and len(set(labels.values())) > 1)


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
        _live_labels().filter(Exists(has_embedding), role__in=LABEL_ERROR_TRAINING_ROLES, species__isnull=False)
        .order_by("-image_id").values_list("image_id", flat=True).distinct()[:LABEL_ERROR_WINDOW]
    )
    # Read before the labels: a decision landing in between makes the history longer than
    # counted, so suspected_labels drops the suspect rather than keep a label that changed.
    lengths = _history_lengths(image_ids)
    labels = {}
    for batch in _batches(image_ids):
        labels.update(current_labels(batch))
    # As in training (labeling.datasets): uploader feedback is no ground truth, and a retired
    # class is no answer a reviewer could give.
    labels = {
        i: a for i, a in labels.items()
        if a.role in LABEL_ERROR_TRAINING_ROLES and a.species is not None and a.species.resolved().active
    }
    if not labels:
        return []
    ids = sorted(labels)
    vectors = {}
    for batch in _batches(ids):
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
    for batch in _batches(image_ids):
        rows = Annotation.objects.filter(image_id__in=batch).order_by().values("image_id").annotate(n=Count("id"))
        lengths.update(rows.values_list("image_id", "n"))
    return lengths


def _latest_id(rows: QuerySet) -> int:
    return rows.order_by("-id").values_list("id", flat=True).first() or 0


def _batches(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _ID_BATCH):
        yield ids[start:start + _ID_BATCH]


def queue_candidates(user) -> QuerySet[Image]:
    """Predicted images this user has not seen and nobody holds, that still need a label:
    none yet, or a second opinion (double annotation), or, for reviewers, a settled dispute
    or a suspected label error."""
    now = timezone.now()
    human_label = _live_labels().filter(image=OuterRef("pk"), role__in=HUMAN_ROLES)
    seen = Annotation.objects.filter(image=OuterRef("pk"), user=user)
    skipped = Skip.objects.filter(image=OuterRef("pk"), user=user)
    held = Claim.objects.filter(image=OuterRef("pk"), expires__gt=now)
    needs_label = ~Exists(human_label) | Q(id__in=awaiting_second_annotator())
    if user.has_perm("labeling.review"):
        needs_label |= Q(id__in=disagreements()) | Q(id__in=suspected_label_errors(limit=LABEL_ERROR_QUEUE_LIMIT))
    return (
        Image.objects.filter(status=Image.Status.PREDICTED)
        .filter(needs_label)
        .filter(~Exists(seen), ~Exists(skipped), ~Exists(held))
        .order_by("-created", "-id")
    )


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


def agreement() -> dict:
    """Cohen's kappa for each pair of annotators on the images both labelled, and the
    label-by-label confusion of all such pairs ("" is "not an animal")."""
    from sklearn.metrics import cohen_kappa_score

    latest: dict[int, dict[str, str]] = defaultdict(dict)
    rows = (
        _live_labels().filter(role=Annotation.Role.ANNOTATOR).order_by("created", "id")
        .values_list("image_id", "user__username", "label")
    )
    for image_id, username, label in rows:
        latest[image_id][username] = label or "(none)"
    pairs: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    confusion: dict[tuple[str, str], int] = defaultdict(int)
    for labels in latest.values():
        users = sorted(labels)
        for i, a in enumerate(users):
            for b in users[i + 1:]:
                pairs[(a, b)].append((labels[a], labels[b]))
                confusion[tuple(sorted((labels[a], labels[b])))] += 1
    result = []
    for (a, b), items in sorted(pairs.items()):
        left, right = [x for x, _ in items], [y for _, y in items]
        agree = sum(x == y for x, y in items) / len(items)
        # kappa is undefined when both annotators used a single class throughout.
        kappa = float(cohen_kappa_score(left, right)) if len(set(left) | set(right)) > 1 else None
        result.append({"annotators": [a, b], "images": len(items), "agreement": round(agree, 4),
                       "kappa": round(kappa, 4) if kappa is not None else None})
    return {
        "pairs": result,
        "confusion": [{"labels": list(k), "images": n} for k, n in sorted(confusion.items(), key=lambda kv: -kv[1])],
        "disagreements_open": len(disagreements()),
    }


def rank_images(image_ids: list[int], *, count: int, seed: int = 0) -> list[int]:
    version = production_model()
    probs = None
    if version is not None:
        by_image = dict(
            Prediction.objects.filter(image_id__in=image_ids, model_version=version).values_list("image_id", "probabilities")
        )
        image_ids = [i for i in image_ids if i in by_image] or image_ids
        if by_image:
            probs = np.array([by_image[i] for i in image_ids], dtype=np.float64)
    vectors = dict(
        Embedding.objects.filter(image_id__in=image_ids, backbone=settings.DEFAULT_BACKBONE).values_list("image_id", "vector")
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

