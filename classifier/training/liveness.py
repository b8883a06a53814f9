"""Is a running run's worker still there? A run is retaken (queued again once, then failed) when
its heartbeat is older than TRAINING_HEARTBEAT_TIMEOUT_S, or at once when its worker was a
process of this machine that no longer exists (killed with its pool by the out-of-memory killer
or a supervisor's restart): the heartbeat timeout has to cover the longest quiet stage of a live
run, so waiting for it would hold a dead run for minutes.

Every update of a run by its worker is conditional on the run still being that worker's claim
(its status, worker and attempt): once retaken, what the dead or stalled claim would still write
is discarded, so a retried run registers one version, never two.
"""

import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import enqueue
from ..heartbeat import worker_gone
from ..models import TrainingRun

logger = logging.getLogger(__name__)
TRAIN_TASK = "classifier.tasks.model_train"


def claim_of(run: TrainingRun) -> dict:
    """The filter that matches the run only while it is still this claim of it."""
    return {"status": TrainingRun.Status.RUNNING, "worker": run.worker, "attempts": run.attempts}


def finish(run_id: int, status: str, *, error: str = "", only_if: dict | None = None, **fields) -> bool:
    updated = TrainingRun.objects.filter(id=run_id, **(only_if or {})).update(
        status=status, finished=timezone.now(), error=error[:10_000], **fields)
    if updated:
        logger.info("training run %s %s %s", run_id, status, error)
    return bool(updated)


def recover_if_stale(run: TrainingRun, stale_before) -> str | None:
    """A running run whose worker stopped reporting, or whose process is gone: queued again while
    it has attempts left (TRAINING_MAX_ATTEMPTS: a killed run is retried once), failed after that.
    "retried", "failed", or None when it is not stale (or someone else acted first)."""
    gone = worker_gone(run.worker)
    if not gone and not (run.heartbeat and run.heartbeat < stale_before):
        return None
    last = f"{run.heartbeat:%Y-%m-%d %H:%M:%S} UTC" if run.heartbeat else "never"
    stopped = f"The worker {run.worker} stopped reporting (last heartbeat: {last}{'; its process is gone' * gone})"
    still_stale = claim_of(run) | ({} if gone else {"heartbeat__lt": stale_before})
    if run.attempts < settings.TRAINING_MAX_ATTEMPTS and not run.cancel_requested:
        try:
            with transaction.atomic():
                if not TrainingRun.objects.filter(id=run.id, **still_stale).update(
                        status=TrainingRun.Status.QUEUED, stage="", worker="", heartbeat=None, enqueued=timezone.now(),
                        error=f"{stopped} on attempt {run.attempts}; retrying."):
                    return None
                enqueue.on_commit(TRAIN_TASK, run.id)
            logger.warning("training run %s: %s; queued again", run.id, stopped)
            return "retried"
        except IntegrityError:
            pass  # another run of this mode is queued already: this one is failed instead
    message = f"{stopped} on attempt {run.attempts}; nothing was registered. Start a new run."
    return "failed" if finish(run.id, TrainingRun.Status.FAILED, error=message, only_if=still_stale) else None
