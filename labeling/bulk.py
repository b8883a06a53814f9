"""Bulk actions on a selection from the data browser: label (one append-only annotation per
image, the bulk action recorded as its `source`), send to the review queue, predict, export.

A selection is a list of ids or a browser filter (its query string); either way only the
images the user may see are acted on.
"""

import secrets
from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import QueryDict
from django.utils import timezone

from classifier import jobs
from classifier.errors import Rejected
from classifier.ml.class_map import OTHER
from classifier.models import InferenceJob, Prediction
from classifier.selectors import production_model

from . import browse, exports, retrain
from .models import Annotation, Claim, ReviewRequest
from .review_queue import lock_image
from .services import Conflict, _species

ACTIONS = ("label", "review", "predict", "export")
MAX_SELECTION = 5000
BULK_SOURCE_PREFIX = "bulk "


@dataclass
class BulkResult:
    action: str
    done: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    message: str = ""
    source: str = ""
    job: InferenceJob | None = None
    content: str | None = None


def selection(*, user, ids=None, filter_query: str | None = None) -> list[int]:
    """The image ids a bulk action acts on: the given ids the user may see, or every image the
    filter matches (at most MAX_SELECTION)."""
    images = browse.images_for(user)
    if filter_query is not None:
        images, _ = browse.filtered(user, QueryDict(filter_query.lstrip("?")))
    elif ids:
        images = images.filter(id__in=[int(i) for i in ids])
    else:
        raise Rejected("Select some images (ids) or send the browser's filter.")
    chosen = list(images.order_by("id").values_list("id", flat=True)[: MAX_SELECTION + 1])
    if len(chosen) > MAX_SELECTION:
        raise Rejected(f"The selection has more than {MAX_SELECTION} images; narrow the filter.")
    return chosen


def bulk_run(*, user, action: str, image_ids: list[int], label: str | None = None) -> BulkResult:
    if action not in ACTIONS:
        raise Rejected(f"Unknown action {action!r}; choose one of: {', '.join(ACTIONS)}")
    return {"label": lambda: bulk_label(user=user, image_ids=image_ids, label=label or ""),
            "review": lambda: bulk_review(user=user, image_ids=image_ids),
            "predict": lambda: bulk_predict(user=user, image_ids=image_ids),
            "export": lambda: bulk_export(user=user, image_ids=image_ids)}[action]()


def bulk_label(*, user, image_ids: list[int], label: str) -> BulkResult:
    """A reviewer's decision on every image of the selection, each its own annotation. An image
    another person holds in the review queue is skipped and reported, never overwritten."""
    if not user.has_perm("labeling.review"):
        raise PermissionDenied("Labelling in bulk needs the reviewer role.")
    name = label.strip().lower()
    species = None if name == OTHER else _species(name)
    source = f"{BULK_SOURCE_PREFIX}{secrets.token_hex(6)}: {user.username} labelled {len(image_ids)} images {name}"
    result = BulkResult(action="label", source=source)
    version = production_model()
    predictions = {p.image_id: p for p in Prediction.objects.filter(model_version=version, image_id__in=image_ids)}
    for image_id in image_ids:
        with transaction.atomic():
            lock_image(image_id)
            held = Claim.objects.filter(image_id=image_id, expires__gt=timezone.now()).exclude(user=user)
            holder = held.select_related("user").first()
            if holder is not None:
                result.skipped[image_id] = f"held by {holder.user.username} in the review queue"
                continue
            prediction = predictions.get(image_id)
            suggestion = prediction.label if prediction else ""
            if species is None:
                kind = Annotation.Kind.REJECTED
            else:
                kind = Annotation.Kind.ACCEPTED if species.name == suggestion else Annotation.Kind.CORRECTED
            Annotation.objects.create(
                image_id=image_id, kind=kind, role=Annotation.Role.REVIEWER, species=species,
                label=species.name if species else "", user=user, prediction=prediction,
                model_version=prediction.model_version if prediction else None, suggested_label=suggestion,
                source=source,
            )
            result.done.append(image_id)
    transaction.on_commit(retrain.retrain_check_enqueue)
    result.message = f"Labelled {len(result.done)} images {name}" + (
        f"; skipped {len(result.skipped)} held by others in the review queue." if result.skipped else ".")
    return result


@transaction.atomic
def bulk_label_undo(*, user, image_id: int) -> Annotation:
    """Undo one image's bulk label (the user's own, nobody having decided since)."""
    if not user.has_perm("labeling.review"):
        raise PermissionDenied("Undoing a bulk label needs the reviewer role.")
    last = (Annotation.objects.filter(image_id=image_id, user=user, source__startswith=BULK_SOURCE_PREFIX,
                                      reverted_by__isnull=True).exclude(kind=Annotation.Kind.UNDO)
            .order_by("-id").first())
    if last is None:
        raise Rejected("You have no bulk label on this image to undo.")
    lock_image(image_id)
    if Annotation.objects.filter(image_id=image_id, id__gt=last.id).exists():
        raise Conflict("This image was decided on since; open its history instead of undoing.")
    return Annotation.objects.create(image_id=image_id, kind=Annotation.Kind.UNDO, role=last.role, user=user,
                                     reverts=last, label=last.label, species=last.species, source=last.source)


def bulk_review(*, user, image_ids: list[int]) -> BulkResult:
    """Put the images in the review queue until someone labels them again."""
    if not user.has_perm("labeling.review"):
        raise PermissionDenied("Sending images to review needs the reviewer role.")
    source = f"{BULK_SOURCE_PREFIX}{secrets.token_hex(6)}: sent to review by {user.username}"
    ReviewRequest.objects.bulk_create([ReviewRequest(image_id=i, user=user, source=source) for i in image_ids])
    return BulkResult(action="review", done=list(image_ids), source=source,
                      message=f"Sent {len(image_ids)} images to the review queue.")


def bulk_predict(*, user, image_ids: list[int]) -> BulkResult:
    if not user.has_perm("classifier.train"):
        raise PermissionDenied("Batch prediction jobs need the train permission.")
    job = jobs.job_create(user=user, source=InferenceJob.Source.SELECTION, image_ids=image_ids)
    return BulkResult(action="predict", done=list(image_ids), job=job,
                      message=f"Started batch job {job.id} on {len(image_ids)} images.")


def bulk_export(*, user, image_ids: list[int]) -> BulkResult:
    if not user.has_perm("labeling.review"):
        raise PermissionDenied("Exporting labels needs the reviewer role.")
    return BulkResult(action="export", done=list(image_ids), content=exports.export_csv(image_ids),
                      message=f"Exported the labels of {len(image_ids)} images.")
