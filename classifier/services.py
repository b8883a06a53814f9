"""Writes for the classifier app. Views, tasks and commands call these; nothing else writes."""

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from . import selectors, serving
from .training import model_promote  # noqa: F401 (part of this module's API)
from .ml.cards import ModelCard
from .ml.class_map import OTHER, default_mapping
from .ml.images import DecodedImage, InvalidImage, decode_image, encode_jpeg, fit_within
from .models import Embedding, Image, ModelVersion, Prediction, Species, Upload, image_path

logger = logging.getLogger(__name__)


class UploadRejected(ValueError):
    """Some files were not usable images; errors maps each file name to the reason."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {reason}" for name, reason in errors.items()))


@dataclass(frozen=True)
class UploadResult:
    image: Image
    created: bool  # False: this content was already stored, the upload was recorded on it


# --- classes and the zero-shot version -------------------------------------------------------

@transaction.atomic
def species_create(*, name: str, display_name: str = "", imagenet_classes: list[int] | None = None) -> Species:
    """A new class, mapped onto ImageNet from the shipped table unless told otherwise."""
    species = _species_new(name=name, display_name=display_name, imagenet_classes=imagenet_classes)
    zero_shot_version_sync()
    return species


@transaction.atomic
def species_create_many(*, names: list[str]) -> list[Species]:
    """Several classes at once, and one new zero-shot version for all of them."""
    created = [_species_new(name=name) for name in names if not Species.objects.filter(name=name.strip().lower()).exists()]
    zero_shot_version_sync()
    return created


def _species_new(*, name: str, display_name: str = "", imagenet_classes: list[int] | None = None) -> Species:
    name = name.strip().lower()
    if not name:
        raise ValueError("A class needs a name.")
    if name == OTHER:
        raise ValueError(f"{OTHER!r} is reserved for everything outside the project's classes.")
    if imagenet_classes is None:
        imagenet_classes = default_mapping([name])[name]
    return Species.objects.create(name=name, display_name=display_name, imagenet_classes=imagenet_classes)


@transaction.atomic
def species_merge(*, source: Species, target: Species) -> Species:
    """Fold `source` into `target`: its labels count as target's from now on, its ImageNet
    classes join target's, and it is retired. No label row is rewritten: history keeps
    what each person chose, under the name they saw."""
    if source.id == target.id or target.resolved().id == source.id:
        raise ValueError("A class cannot be merged into itself.")
    target = target.resolved()
    target.imagenet_classes = sorted(set(target.imagenet_classes) | set(source.imagenet_classes))
    target.save(update_fields=["imagenet_classes"])
    source.merged_into = target
    source.active = False
    source.save(update_fields=["merged_into", "active"])
    zero_shot_version_sync()
    return target


def zero_shot_card() -> ModelCard:
    class_map = {s.name: list(s.imagenet_classes) for s in Species.objects.filter(active=True)}
    return ModelCard.zero_shot(backbone=settings.DEFAULT_BACKBONE, class_map=class_map)


@transaction.atomic
def zero_shot_version_sync() -> ModelVersion:
    """The zero-shot version for today's classes and mapping; made and promoted if new.

    A changed class list or mapping makes a new version rather than editing the old one,
    so every past prediction still points at the card it was made with. It only takes
    production from another zero-shot version (or from nobody), never from a trained model.
    """
    card = zero_shot_card().to_dict()
    digest = hashlib.sha256(json.dumps(card, sort_keys=True).encode()).hexdigest()
    version = ModelVersion.objects.filter(kind="zero_shot", card_sha256=digest).first()
    if version is None:
        count = ModelVersion.objects.filter(kind="zero_shot").count()
        try:
            with transaction.atomic():
                version = ModelVersion.objects.create(
                    name=f"zero-shot-{count + 1}-{digest[:8]}",
                    kind="zero_shot",
                    backbone=card["backbone"],
                    card=card,
                    card_sha256=digest,
                    parent=selectors.production_model(),
                )
        except IntegrityError:
            # Another process made the same card at the same moment: use theirs.
            version = ModelVersion.objects.get(kind="zero_shot", card_sha256=digest)
    current = selectors.production_model()
    if current is None or (current.kind == "zero_shot" and current.id != version.id):
        model_promote(version=version, reason="zero-shot: the class list or ImageNet mapping changed")
        version.refresh_from_db()
    return version


# --- uploads ---------------------------------------------------------------------------------

def image_validate(*, data: bytes) -> DecodedImage:
    if len(data) > settings.UPLOAD_MAX_BYTES:
        raise InvalidImage(f"The file is {len(data):,} bytes; the limit is {settings.UPLOAD_MAX_BYTES:,}.")
    return decode_image(data, max_pixels=settings.UPLOAD_MAX_PIXELS)


def _read_limited(file) -> bytes:
    # Read one byte past the limit: enough to know it is too big without reading it all.
    return file.read(settings.UPLOAD_MAX_BYTES + 1)


def images_upload(*, user, files) -> list[UploadResult]:
    """Store every file, or none: a batch with one bad file is rejected whole, with reasons."""
    if not files:
        raise UploadRejected({"files": "No file was sent."})
    if len(files) > settings.UPLOAD_MAX_FILES:
        raise UploadRejected({"files": f"{len(files)} files sent; at most {settings.UPLOAD_MAX_FILES} per request."})
    checked, errors = [], {}
    for index, file in enumerate(files):
        name = getattr(file, "name", None) or f"file {index + 1}"
        data = _read_limited(file)
        try:
            checked.append((name, data, image_validate(data=data)))
        except InvalidImage as e:
            errors[name] = str(e)
    if errors:
        raise UploadRejected(errors)
    return [_image_store(user=user, filename=name, data=data, decoded=decoded) for name, data, decoded in checked]


def image_upload(*, user, filename: str, data: bytes, classify: bool = True) -> UploadResult:
    """One image; classify=False when the caller predicts it itself (a batch job)."""
    try:
        decoded = image_validate(data=data)
    except InvalidImage as e:
        raise UploadRejected({filename: str(e)}) from None
    return _image_store(user=user, filename=filename, data=data, decoded=decoded, classify=classify)


def _image_store(*, user, filename: str, data: bytes, decoded: DecodedImage, classify: bool = True) -> UploadResult:
    digest = Image.digest(data)
    existing = Image.objects.filter(sha256=digest).first()
    if existing is None:
        # Files first, row second: a row never points at a missing file. A crash in
        # between leaves content-addressed files that the next upload of it reuses.
        suffix = "." + decoded.format.lower().replace("jpeg", "jpg").replace("mpo", "jpg")
        names = {
            "original": _store_once(image_path(digest, suffix), data),
            "preview": _store_once(
                image_path(digest, ".preview.jpg"), encode_jpeg(fit_within(decoded.image, settings.PREVIEW_SIZE))
            ),
            "thumbnail": _store_once(
                image_path(digest, ".thumb.jpg"), encode_jpeg(fit_within(decoded.image, settings.THUMBNAIL_SIZE))
            ),
        }
        try:
            with transaction.atomic():
                image = Image.objects.create(
                    sha256=digest,
                    format=decoded.format,
                    original_mode=decoded.original_mode,
                    width=decoded.width,
                    height=decoded.height,
                    size_bytes=len(data),
                    **names,
                )
                Upload.objects.create(image=image, user=user, filename=filename[:255])
                if classify:
                    transaction.on_commit(lambda: _enqueue_classify(image.id))
            return UploadResult(image=image, created=True)
        except IntegrityError:
            # The same content arrived twice at once; the other request stored it.
            existing = Image.objects.get(sha256=digest)
    Upload.objects.create(image=existing, user=user, filename=filename[:255])
    if existing.status == Image.Status.FAILED and classify:
        image_requeue(image=existing)
    return UploadResult(image=existing, created=False)


def _store_once(name: str, content: bytes) -> str:
    if default_storage.exists(name):
        return name
    return default_storage.save(name, ContentFile(content))


def _enqueue_classify(image_id: int) -> None:
    from .tasks import image_classify

    image_classify.delay(image_id)


def image_requeue(*, image: Image) -> None:
    with transaction.atomic():
        now = timezone.now()
        Image.objects.filter(id=image.id).update(status=Image.Status.QUEUED, status_changed=now, queued_at=now, error="")
        transaction.on_commit(lambda: _enqueue_classify(image.id))


# --- predictions -----------------------------------------------------------------------------

def _claim(image_id: int) -> bool:
    """Take the image for prediction; False if another worker has it or it is done.

    A conditional UPDATE is the claim: of two workers given the same task, exactly one
    sees a row count of 1. A claim older than the timeout belongs to a dead worker and may
    be taken over.
    """
    stale = timezone.now() - timedelta(seconds=settings.PREDICTION_CLAIM_TIMEOUT_S)
    # PREDICTED is claimable too: the caller has checked there is no prediction by today's
    # production version, so a new champion re-predicts old images.
    claimable = Q(status__in=[Image.Status.QUEUED, Image.Status.FAILED, Image.Status.PREDICTED]) | Q(
        status=Image.Status.PREDICTING, status_changed__lt=stale
    )
    updated = (
        Image.objects.filter(id=image_id)
        .filter(claimable)
        .update(status=Image.Status.PREDICTING, status_changed=timezone.now(), error="")
    )
    return updated == 1


def image_classify(*, image_id: int) -> Prediction | None:
    """Predict one image with the production model; idempotent."""
    version = selectors.production_model()
    if version is None:
        version = zero_shot_version_sync()
    existing = Prediction.objects.filter(image_id=image_id, model_version=version).first()
    if existing is not None:
        Image.objects.filter(id=image_id).exclude(status=Image.Status.PREDICTED).update(
            status=Image.Status.PREDICTED, status_changed=timezone.now()
        )
        return existing
    if not _claim(image_id):
        return None
    image = Image.objects.get(id=image_id)
    try:
        with default_storage.open(image.original.name, "rb") as f:
            decoded = decode_image(f.read(), max_pixels=settings.UPLOAD_MAX_PIXELS)
        result = serving.get_predictor(version).predict([decoded.image], top_k=settings.PREDICTION_TOP_K)[0]
    except (InvalidImage, FileNotFoundError, OSError) as e:
        _mark_failed(image_id, f"{type(e).__name__}: {e}")
        return None
    except Exception as e:
        # Unexpected: record it for the page, then let the task's retry policy decide.
        _mark_failed(image_id, f"{type(e).__name__}: {e}")
        raise
    return _prediction_save(image=image, version=version, result=result, backend=serving.get_predictor(version).backend)


def _mark_failed(image_id: int, error: str) -> None:
    logger.warning("image %s failed: %s", image_id, error)
    Image.objects.filter(id=image_id).update(status=Image.Status.FAILED, status_changed=timezone.now(), error=error)


@transaction.atomic
def _prediction_save(*, image: Image, version: ModelVersion, result, backend: str) -> Prediction:
    now = timezone.now()
    prediction, _ = Prediction.objects.get_or_create(
        image=image,
        model_version=version,
        defaults=dict(
            label=result.label,
            confidence=result.confidence,
            top=[{"label": s.label, "p": round(s.p, 6)} for s in result.top],
            probabilities=[round(p, 6) for p in result.probabilities],
            backend=backend,
            model_ms=round(result.duration_ms, 2),
            latency_ms=round((now - image.queued_at).total_seconds() * 1000.0, 1),
            created=now,
        ),
    )
    if version.card.get("tta"):
        # Flip-averaged features are not the plain ones the cache holds for every image.
        Image.objects.filter(id=image.id).update(status=Image.Status.PREDICTED, status_changed=now, error="")
        return prediction
    vector = np.asarray(result.embedding, dtype="<f4")
    Embedding.objects.get_or_create(
        image=image, backbone=version.backbone, defaults={"dim": int(vector.size), "vector": vector.tobytes()}
    )
    Image.objects.filter(id=image.id).update(status=Image.Status.PREDICTED, status_changed=now, error="")
    return prediction
