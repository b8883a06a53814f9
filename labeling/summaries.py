"""The one writer of ImageSummary, the data browser's derived row per image.

Every input it copies has a trigger here (and near-duplicates are flagged here when an image's
features are stored): a new image, an annotation (the current label), a
prediction by the production version (single rows and predictions_write's bulk inserts), a new
production version and a class renamed, retired or merged (every row). Each refresh recomputes
the rows of the images it is given from the truth (annotation history, Prediction rows), so a
refresh twice is harmless and `summaries_rebuild` repairs anything.
"""

import functools

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.db.models import F, FloatField, OuterRef, Q, Subquery, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce
from django.db.models.signals import post_save

from classifier import similarity
from classifier.errors import Rejected
from classifier.ml import near_duplicates
from classifier.ml.datasets import TRAIN, stable_split, validation_split
from classifier.models import Image, ModelVersion, Prediction, Species
from classifier.selectors import production_model
from classifier.signals import predictions_written

from .models import Annotation, ImageSummary, NotDuplicate
from .selectors import batches, ground_truth_labels

FIELDS = ["created", "label", "labelled_by", "predicted", "confidence", "margin", "disagrees", "split"]
# PostgreSQL advisory lock taken by every summary write, held to the end of the writer's transaction.
# Writers upsert from transactions that do other work (a promotion rebuilds every row; a worker's
# prediction refreshes its image), sometimes twice in one transaction: without one lock, two of
# them could each hold rows the other needs next (a deadlock, seen in the test suite).
SUMMARY_LOCK = 7_231_001


def split_of(sha256: str) -> str:
    """The split a snapshot puts this content in (classifier.training.snapshots does the same)."""
    split = stable_split(sha256, test_fraction=settings.TRAINING_TEST_FRACTION)
    if split == TRAIN:
        split = validation_split(sha256, val_fraction=settings.TRAINING_VAL_FRACTION)
    return split


def _margin(top: list[dict]) -> float | None:
    if not top:
        return None
    return float(top[0]["p"]) - (float(top[1]["p"]) if len(top) > 1 else 0.0)


def _locked(function):
    """Runs `function` in a transaction holding SUMMARY_LOCK to its end (the outer transaction's,
    when there is one). SQLite serialises writers by itself."""
    @functools.wraps(function)
    def run(*args, **kwargs):
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SUMMARY_LOCK])
            return function(*args, **kwargs)
    return run


@_locked
def summaries_refresh(image_ids) -> int:
    """Recompute the summary rows of these images; returns how many were written."""
    written = 0
    version = production_model()
    for batch in batches(sorted(set(image_ids))):
        labels = ground_truth_labels(batch)
        predictions = {}
        if version is not None:
            predictions = {p["image_id"]: p for p in Prediction.objects.filter(
                model_version=version, image_id__in=batch).values("image_id", "label", "confidence", "top")}
        rows = []
        shas = _group_shas(batch)
        # In id order, as every writer: two transactions upserting overlapping rows then lock them in the
        # same order and one waits for the other instead of deadlocking (an upload during a rebuild).
        for image_id, created, sha in (Image.objects.filter(id__in=batch).order_by("id")
                                       .values_list("id", "created", "sha256")):
            label, annotation = labels.get(image_id, ("", None))
            p = predictions.get(image_id)
            rows.append(ImageSummary(
                image_id=image_id, created=created, label=label,
                labelled_by_id=annotation.user_id if annotation else None,
                predicted=p["label"] if p else "", confidence=p["confidence"] if p else None,
                margin=_margin(p["top"]) if p else None,
                disagrees=bool(label and p and p["label"] != label), split=split_of(shas.get(image_id, sha)),
            ))
        ImageSummary.objects.bulk_create(rows, update_conflicts=True, unique_fields=["image"], update_fields=FIELDS)
        written += len(rows)
    return written


def summaries_rebuild() -> int:
    """Every image's row (a class changed, or a repair)."""
    return summaries_refresh(Image.objects.values_list("id", flat=True))


@_locked
def summaries_predictions_switch() -> int:
    """Every row's prediction columns from the production version now (a promotion or rollback),
    set-based: two UPDATEs in the database instead of every row through Python and an upsert (at
    100,000 images 20x faster). Labels and splits do not depend on the version. Returns the rows."""
    version = production_model()
    mine = Prediction.objects.filter(image_id=OuterRef("image_id"), model_version=version).order_by()  # one
    top1, top2 = (Cast(KT(f"top__{i}__p"), FloatField()) for i in (0, 1))
    written = ImageSummary.objects.update(
        predicted=Coalesce(Subquery(mine.values("label")[:1]), Value("")),
        confidence=Subquery(mine.values("confidence")[:1]),
        margin=Subquery(mine.annotate(m=top1 - Coalesce(top2, Value(0.0))).values("m")[:1]),
    )
    differ = ~Q(label="") & ~Q(predicted="") & ~Q(label=F("predicted"))
    ImageSummary.objects.filter(differ, disagrees=False).update(disagrees=True)
    ImageSummary.objects.filter(~differ, disagrees=True).update(disagrees=False)
    return written


# --- near-duplicates -----------------------------------------------------------------------------

def near_duplicate_roots() -> dict[int, int]:
    """image id -> the first image of its near-duplicate group, for every flagged image
    (settings.NEAR_DUPLICATE_GROUPS_SOURCE: what a snapshot reads to keep a group on one side)."""
    links = dict(ImageSummary.objects.filter(near_duplicate_of__isnull=False)
                 .values_list("image_id", "near_duplicate_of_id"))
    roots = {}
    for image_id in links:
        root, seen = links[image_id], {image_id}
        while root in links and root not in seen:  # links point to earlier images: chains end
            seen.add(root)
            root = links[root]
        roots[image_id] = root
    return roots


def _group_shas(image_ids: list[int]) -> dict[int, str]:
    """image id -> the content hash its split is drawn from: its group's first image's."""
    roots = {i: r for i, r in near_duplicate_roots().items() if i in set(image_ids)}
    shas = dict(Image.objects.filter(id__in=set(roots.values())).values_list("id", "sha256"))
    return {i: shas[r] for i, r in roots.items() if r in shas}


def _dismissed(image_ids) -> dict[int, set[int]]:
    """image id -> the images a reviewer said it is not a duplicate of."""
    out: dict[int, set[int]] = {}
    for image_id, other in NotDuplicate.objects.filter(image_id__in=image_ids).values_list("image_id", "other_id"):
        out.setdefault(image_id, set()).add(other)
    return out


@_locked
def near_duplicates_flag(image_ids, *, backbone: str | None = None) -> list[int]:
    """Link each image to the earlier image it is a near-duplicate of (classifier.ml.near_duplicates'
    rule at NEAR_DUPLICATE_COSINE), never one a reviewer said it is not a duplicate of; the image
    is stored and shown, never dropped, and its split becomes its group's. Returns the linked ids."""
    flagged, checked = [], []
    dismissed = _dismissed(image_ids)
    for image_id in image_ids:
        try:
            vector = similarity.image_embedding(image_id, backbone)
        except Rejected:
            continue  # no features of this backbone (a failed prediction)
        checked.append(image_id)
        hits = similarity.nearest(vector, k=10, exclude=image_id, name=backbone)
        # the index sees a deletion up to SIMILARITY_RESYNC_SECONDS late
        existing = set(Image.objects.filter(id__in=[i for i, _ in hits]).values_list("id", flat=True))
        earlier = near_duplicates.earlier_match([h for h in hits if h[0] in existing], image_id=image_id,
                                                threshold=settings.NEAR_DUPLICATE_COSINE,
                                                dismissed=dismissed.get(image_id, ()))
        if earlier is not None and ImageSummary.objects.filter(
                image_id=image_id, near_duplicate_of__isnull=True).update(near_duplicate_of_id=earlier):
            flagged.append(image_id)
    ImageSummary.objects.filter(image_id__in=checked).update(duplicate_checked=True)
    if flagged:
        summaries_refresh(flagged)  # the split follows the group
    return flagged


@_locked
def near_duplicate_dismiss(*, user, image_id: int) -> NotDuplicate:
    """A reviewer says the image is not a duplicate of the one it is linked to: the link goes
    (the filter and snapshots stop grouping them), who and when is recorded, and no later check
    links the pair again. The images that were grouped through it take their new group's split."""
    if not user.has_perm("labeling.review"):
        raise PermissionDenied("Only reviewers can mark a pair as not a duplicate.")
    row = ImageSummary.objects.select_for_update().filter(image_id=image_id).first()
    if row is None or row.near_duplicate_of_id is None:
        raise Rejected(f"Image {image_id} is not flagged as a near-duplicate.")
    roots = near_duplicate_roots()
    group = [i for i, root in roots.items() if root == roots[image_id]]
    mark, _ = NotDuplicate.objects.get_or_create(image_id=image_id, other_id=row.near_duplicate_of_id,
                                                 defaults={"user": user})
    ImageSummary.objects.filter(image_id=image_id).update(near_duplicate_of=None)
    summaries_refresh(group)
    return mark


# --- triggers ------------------------------------------------------------------------------------

def _image_saved(sender, instance, created, **kwargs):
    if created:
        summaries_refresh([instance.id])


def _annotation_saved(sender, instance, **kwargs):
    summaries_refresh([instance.image_id])


def _prediction_saved(sender, instance, created, **kwargs):
    if created and instance.model_version.status == ModelVersion.Status.PRODUCTION:
        summaries_refresh([instance.image_id])


def _predictions_written(sender, version, image_ids, **kwargs):
    if version.status == ModelVersion.Status.PRODUCTION:
        summaries_refresh(image_ids)
    # Once per image: a re-predict by a new version stores no new features of it.
    unchecked = ImageSummary.objects.filter(image_id__in=image_ids, duplicate_checked=False)
    near_duplicates_flag(list(unchecked.values_list("image_id", flat=True)), backbone=version.backbone)


def _version_saved(sender, instance, update_fields=None, **kwargs):
    if instance.status == ModelVersion.Status.PRODUCTION and (update_fields is None or "status" in update_fields):
        # After the promotion commits: inside it, the switch would wait for SUMMARY_LOCK while holding the
        # version rows that a worker holding the lock needs for its prediction's foreign key (a deadlock).
        transaction.on_commit(summaries_predictions_switch)


def _species_saved(sender, instance, created, **kwargs):
    if not created:  # renamed, retired or merged: labels may read differently now
        summaries_refresh(ImageSummary.objects.exclude(label="").values_list("image_id", flat=True))


def connect() -> None:
    """Called once from LabelingConfig.ready."""
    post_save.connect(_image_saved, sender=Image, dispatch_uid="summary-image")
    post_save.connect(_annotation_saved, sender=Annotation, dispatch_uid="summary-annotation")
    post_save.connect(_prediction_saved, sender=Prediction, dispatch_uid="summary-prediction")
    post_save.connect(_version_saved, sender=ModelVersion, dispatch_uid="summary-version")
    post_save.connect(_species_saved, sender=Species, dispatch_uid="summary-species")
    predictions_written.connect(_predictions_written, dispatch_uid="summary-predictions")
