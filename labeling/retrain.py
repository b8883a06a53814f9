"""The label trigger: a head retrain once RETRAIN_AFTER_LABELS new labels have arrived.

Decisions only enqueue a check (counting is cheap, but checking that the labels can be trained
on reads them all), and at most one check waits in the queue at a time.
"""

import logging

from django.conf import settings
from django.core.cache import caches

from classifier import enqueue
from classifier.models import TrainingRun
from classifier.training.runs import training_automatic

from .selectors import labels_since

logger = logging.getLogger(__name__)
CHECK_TASK = "labeling.tasks.retrain_if_due"

# While a retrain check waits in the queue, decisions enqueue no other: the waiting one counts
# their labels when it runs. Without this a burst of decisions (an import, many annotators)
# queued one check each on the inference queue, ahead of uploads' predictions, and the worker
# drained them at about 14 a second. The key expires in case its task is lost.
RETRAIN_CHECK_PENDING_S = 60


def retrain_check_key() -> str:
    """Per installation (database and queue), so two sites or test runs sharing a Redis never
    take each other's pending check for their own."""
    return f"labeling:retrain-check-pending:{settings.INFERENCE_QUEUE}:{settings.DATABASES['default']['NAME']}"


def retrain_check_enqueue() -> None:
    if settings.RETRAIN_AFTER_LABELS <= 0:
        return
    try:
        first = caches["shared"].add(retrain_check_key(), 1, timeout=RETRAIN_CHECK_PENDING_S)
    except Exception as e:
        # The shared cache (Redis) away: enqueue one anyway; a check too many only counts again.
        logger.warning("shared cache unavailable (%s); enqueuing a retrain check", e)
        first = True
    if first:
        enqueue.on_commit(CHECK_TASK)  # through the outbox: a broker away delays the check, never loses it


def retrain_check() -> TrainingRun | None:
    """The queued check: lets later decisions enqueue again, then counts. A decision that found
    the key set committed before this delete, so the count below sees its label."""
    caches["shared"].delete(retrain_check_key())
    return retrain_if_due()


def retrain_if_due() -> TrainingRun | None:
    """A training run once RETRAIN_AFTER_LABELS labels arrived since the last run was asked for.

    Runs in a worker (decisions only enqueue the check): counting is cheap, but checking the
    labels can be trained on reads them all. Once due, the attempt is always a row: a run, or
    one that says it was skipped or refused and why; the count starts again after it. A refused
    manual request does not restart the count: nobody asked this trigger to wait for it."""
    if settings.RETRAIN_AFTER_LABELS <= 0:
        return None
    runs = TrainingRun.objects.exclude(trigger=TrainingRun.Trigger.MANUAL, status=TrainingRun.Status.REFUSED)
    last = runs.order_by("-created", "-id").first()
    if labels_since(last.created if last else None) < settings.RETRAIN_AFTER_LABELS:
        return None
    return training_automatic(mode=settings.RETRAIN_MODE, trigger=TrainingRun.Trigger.LABELS)
