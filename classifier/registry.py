"""The model registry: classes, the zero-shot version that follows them, promotion and rollback.

Classes are data. Each change of the class list or of an ImageNet mapping makes a new zero-shot
version rather than editing the old one, so every past prediction still points at the card it
was made with. One version is in production at a time (a partial unique index enforces it);
every change of the production version is a ModelEvent, and the new champion re-predicts the
images it has not seen (a batch job on the jobs page).
"""

import hashlib
import json
import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import enqueue, selectors
from .errors import Conflict, Rejected
from .ml.cards import ModelCard, zero_shot_temperature
from .ml.class_map import OTHER, default_mapping
from .ml.coverage import coverage_loss
from .models import ModelEvent, ModelVersion, Species

logger = logging.getLogger(__name__)


# --- classes ---------------------------------------------------------------------------------

@transaction.atomic
def species_create(*, name: str, display_name: str = "", imagenet_classes: list[int] | None = None) -> Species:
    """A new class, mapped onto ImageNet from the shipped table unless told otherwise."""
    species = _species_new(name=name, display_name=display_name, imagenet_classes=imagenet_classes)
    zero_shot_version_sync()
    return species


@transaction.atomic
def species_create_many(*, names: list[str]) -> list[Species]:
    """Several classes at once, and one new zero-shot version for all of them."""
    created = [_species_new(name=name) for name in names
               if not Species.objects.filter(name=name.strip().lower()).exists()]
    zero_shot_version_sync()
    return created


def _species_new(*, name: str, display_name: str = "", imagenet_classes: list[int] | None = None) -> Species:
    name = name.strip().lower()
    if not name:
        raise Rejected("A class needs a name.")
    if name == OTHER:
        raise Rejected(f"{OTHER!r} is reserved for everything outside the project's classes.")
    if imagenet_classes is None:
        imagenet_classes = default_mapping([name])[name]
    return Species.objects.create(name=name, display_name=display_name, imagenet_classes=imagenet_classes)


@transaction.atomic
def species_merge(*, source: Species, target: Species) -> Species:
    """Fold `source` into `target`: its labels count as target's from now on, its ImageNet
    classes join target's, and it is retired. No label row is rewritten: history keeps
    what each person chose, under the name they saw."""
    if source.id == target.id or target.resolved().id == source.id:
        raise Rejected("A class cannot be merged into itself.")
    target = target.resolved()
    target.imagenet_classes = sorted(set(target.imagenet_classes) | set(source.imagenet_classes))
    target.save(update_fields=["imagenet_classes"])
    source.merged_into = target
    source.active = False
    source.save(update_fields=["merged_into", "active"])
    zero_shot_version_sync()
    return target


# --- the zero-shot version -------------------------------------------------------------------

def zero_shot_card() -> ModelCard:
    class_map = {s.name: list(s.imagenet_classes) for s in Species.objects.filter(active=True)}
    return ModelCard.zero_shot(backbone=settings.DEFAULT_BACKBONE, class_map=class_map,
                               temperature=zero_shot_temperature(settings.DEFAULT_BACKBONE))


@transaction.atomic
def zero_shot_version_sync(*, reason: str = "zero-shot: the class list or ImageNet mapping changed") -> ModelVersion:
    """The zero-shot version for today's classes and mapping; made and promoted if new.

    It only takes production from another zero-shot version (or from nobody), never from a
    trained model.
    """
    card = zero_shot_card().to_dict()
    digest = hashlib.sha256(json.dumps(card, sort_keys=True).encode()).hexdigest()
    version = ModelVersion.objects.filter(kind="zero_shot", card_sha256=digest).first()
    if version is None:
        count = ModelVersion.objects.filter(kind="zero_shot").count()
        try:
            with transaction.atomic():
                version = ModelVersion.objects.create(
                    name=f"zero-shot-{count + 1}-{digest[:8]}", kind="zero_shot", backbone=card["backbone"],
                    card=card, card_sha256=digest, parent=selectors.production_model(),
                )
        except IntegrityError:
            # Another process made the same card at the same moment: use theirs.
            version = ModelVersion.objects.get(kind="zero_shot", card_sha256=digest)
    current = selectors.production_model()
    if current is None or (current.kind == "zero_shot" and current.id != version.id):
        model_promote(version=version, reason=reason)
        version.refresh_from_db()
    return version


def backbone_sync() -> ModelVersion | None:
    """Applies a changed DEFAULT_BACKBONE at start-up (run_all, demo_setup).

    While a zero-shot version serves, the zero-shot version on the new backbone takes over; its
    promotion starts the re-predict job (jobs.job_repredict: chunked, with progress on the jobs
    page), which stores every image's embedding for the new backbone as it predicts. A trained
    version keeps serving: it was made on its own backbone; jobs.job_embed stores the new
    backbone's features meanwhile, for the next training run and its promotion.
    """
    current = selectors.production_model()
    if current is None:
        return None
    # embedding_key names the preprocessing too: a zero-shot version made before its backbone's
    # preprocessing changed is replaced as well.
    if current.kind == "zero_shot" and current.embedding_key != settings.DEFAULT_BACKBONE:
        return zero_shot_version_sync(reason=f"zero-shot: the backbone is now {settings.DEFAULT_BACKBONE} "
                                             "(or its preprocessing changed)")
    if current.backbone != settings.DEFAULT_BACKBONE:
        logger.warning("DEFAULT_BACKBONE is %s but the production version %s runs on %s; the next training run "
                       "uses %s", settings.DEFAULT_BACKBONE, current.name, current.backbone,
                       settings.DEFAULT_BACKBONE)
    return current


def serving_version() -> ModelVersion:
    """The production version; the zero-shot one for today's classes when there is none yet."""
    return selectors.production_model() or zero_shot_version_sync()


# --- promotion and rollback ------------------------------------------------------------------

@transaction.atomic
def model_promote(*, version: ModelVersion, user=None, reason: str = "",
                  action: str = ModelEvent.Action.PROMOTED) -> ModelVersion:
    # Lock the current champion so two promotions serialise; the partial unique index on
    # status='production' is the backstop if anything ever bypasses this function.
    current = ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.PRODUCTION).first()
    if current is not None and current.id == version.id:
        return version
    if current is not None:
        current.status = ModelVersion.Status.RETIRED
        current.save(update_fields=["status"])
    version.status = ModelVersion.Status.PRODUCTION
    version.promoted = timezone.now()
    if reason:
        version.status_reason = reason
    version.save(update_fields=["status", "promoted", "status_reason"])
    ModelEvent.objects.create(version=version, previous=current, action=action, user=user, reason=reason)
    logger.info("model %s promoted (was %s): %s", version.name, current.name if current else None, reason)
    enqueue.on_commit("classifier.tasks.images_repredict", version.id)
    return version


def promotion_coverage_loss(version: ModelVersion) -> list[str]:
    """The classes production serves that `version` would stop serving, sorted."""
    current = selectors.production_model()
    return coverage_loss(current.card, version.card) if current is not None else []


def model_promote_by_hand(*, version: ModelVersion, user) -> ModelVersion:
    """Staff may promote any version; one that serves fewer classes than production says which
    in the reason (the confirmation on the page and the API's answer state it first)."""
    version.refresh_from_db()
    if version.status == ModelVersion.Status.PRODUCTION:
        raise Conflict(f"{version.name} is already in production.")
    lost = promotion_coverage_loss(version)
    reason = f"promoted by hand by {user}"
    if lost:
        reason += f"; it stops serving {', '.join(lost)}, which the version it replaced served"
    return model_promote(version=version, user=user, action=ModelEvent.Action.PROMOTED_BY_HAND, reason=reason)


@transaction.atomic
def model_rollback(*, user) -> ModelVersion:
    """Back to the version that was in production before the current one."""
    current = ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.PRODUCTION).first()
    event = (ModelEvent.objects.filter(version=current, previous__isnull=False)
             .exclude(action=ModelEvent.Action.KEPT_CANDIDATE).order_by("-created", "-id").first()) if current else None
    if event is None:
        raise Conflict("There is no earlier production version to roll back to.")
    return model_promote(version=event.previous, user=user, action=ModelEvent.Action.ROLLED_BACK,
                         reason=f"rolled back from {current.name} by {user}")
