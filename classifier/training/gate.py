"""The promotion gate in the registry: a trained version replaces the champion only if it beats
it on the same test images, beyond what they can tell apart, and serves every class the
champion serves (classifier.ml.gate holds the rule).

The test images are the challenger's snapshot's test split, which holds every ground-truth
label: classes below the training minimum and "other" included."""

import logging

from django.conf import settings

from .. import registry, selectors
from ..ml import gate
from ..ml.coverage import served_classes
from ..ml.datasets import TEST
from ..models import ModelEvent, ModelVersion
from ..predictions import predicted_labels

logger = logging.getLogger(__name__)


def gate_evaluate(*, challenger: ModelVersion, champion: ModelVersion | None = None) -> gate.GateResult:
    """Both versions on the challenger's snapshot's test split (fixed by content hash)."""
    champion = champion or selectors.production_model()
    test = challenger.snapshot.split(TEST) if challenger.snapshot else []
    ids, truth = [row[0] for row in test], [row[2] for row in test]
    challenger_labels = predicted_labels(challenger, ids)
    champion_labels = predicted_labels(champion, ids) if champion else [""] * len(ids)
    return gate.compare(truth, champion_labels, challenger_labels, max_class_drop=settings.PROMOTION_MAX_CLASS_DROP,
                        min_images=settings.PROMOTION_MIN_TEST_IMAGES,
                        min_class_support=settings.PROMOTION_MIN_CLASS_SUPPORT,
                        significance=settings.PROMOTION_SIGNIFICANCE if settings.PROMOTION_SIGNIFICANCE < 1 else None,
                        champion_serves=served_classes(champion.card) if champion else None,
                        challenger_serves=served_classes(challenger.card))


def gate_and_promote(version: ModelVersion) -> None:
    """Scores the new version against the champion; promotes it, or keeps it as a candidate."""
    champion = selectors.production_model()
    try:
        result = gate_evaluate(challenger=version, champion=champion)
    except Exception as e:  # the version is sound; only the comparison failed: keep it as a candidate
        logger.exception("gate failed for %s", version.name)
        ModelVersion.objects.filter(id=version.id).update(status_reason=f"the gate could not run: {e}")
        return
    verdict = result.to_dict() | {"champion": champion.name if champion else None}
    ModelVersion.objects.filter(id=version.id).update(gate=verdict, status_reason=result.reason)
    version.refresh_from_db()
    if result.promote:
        registry.model_promote(version=version, reason=f"gate: {result.reason}")
    else:
        ModelEvent.objects.create(version=version, previous=champion, action=ModelEvent.Action.KEPT_CANDIDATE,
                                  reason=result.reason)
