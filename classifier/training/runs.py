"""Training runs, from a request to a registered version.

A run's life: training_request() makes it queued, or joins the run of that mode already
queued, and enqueues model_train on commit. training_execute() claims it with a conditional
UPDATE (a second delivery of the task finds it taken and does nothing; the database allows one
running run at all), freezes a snapshot of the labels, trains with classifier.ml.train.fit (the
same code as the command line), registers the version and lets the gate decide whether it
replaces the champion. The watchdog (watchdog.py) fails runs whose worker died.
"""

import logging
import os
import secrets
import socket
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import enqueue, selectors, serving
from ..errors import Conflict, Rejected
from ..ml.cards import CARD_FILE, KIND_FINETUNE, KIND_HEAD, ModelDirError, file_sha256
from ..ml.datasets import Item, TooFewImages, snapshot_sha256
from ..ml.images import InvalidImage
from ..models import Embedding, Image, ModelVersion, TrainingRun
from ..storage import local_path
from .gate import gate_and_promote
from .progress import Cancelled, Reporter
from .snapshots import TrainingRefused, project_class_map, snapshot_create, snapshot_items, training_check

# The trainer and the embedding cache (torch) are imported where training runs: the web never trains.

logger = logging.getLogger(__name__)

MODES = (KIND_HEAD, KIND_FINETUNE)
OPTION_TYPES = {"epochs": int, "seed": int, "batch_size": int, "patience": int}
CHECKPOINTS = ".checkpoints"
TRAIN_TASK = "classifier.tasks.model_train"


class _NoLongerRunning(Exception):
    pass


# --- requests and cancel ---------------------------------------------------------------------

def _clean_options(options: dict | None) -> dict:
    cleaned = {}
    for key, value in (options or {}).items():
        if key not in OPTION_TYPES:
            raise Rejected(f"Unknown training option {key!r}; choose from: {', '.join(OPTION_TYPES)}")
        try:
            cleaned[key] = OPTION_TYPES[key](value)
        except (TypeError, ValueError):
            raise Rejected(f"Training option {key} must be a number, got {value!r}") from None
        if cleaned[key] < (0 if key == "seed" else 1):
            raise Rejected(f"Training option {key} is too small: {value!r}")
    return cleaned


def training_request(*, mode: str, trigger: str, user=None, options: dict | None = None) -> TrainingRun:
    """A queued run of this mode: a new one, or the one already waiting (the request joins it)."""
    if mode not in MODES:
        raise Rejected(f"Unknown training mode {mode!r}; choose one of: {', '.join(MODES)}")
    options = _clean_options(options)
    training_check()  # refuse now, with the reason, rather than queue a run that must fail
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(mode=mode, trigger=trigger, requested_by=user, options=options,
                                             enqueued=timezone.now())
            enqueue.on_commit(TRAIN_TASK, run.id)
    except IntegrityError:
        # The partial unique index allows one queued run per mode: join it.
        run = TrainingRun.objects.get(mode=mode, status=TrainingRun.Status.QUEUED)
    return run


def training_scheduled(*, mode: str) -> TrainingRun | None:
    """A run for the schedule, unless the labels are what the last good run of this mode read."""
    items, _, _ = snapshot_items()
    last = (TrainingRun.objects.filter(mode=mode, status=TrainingRun.Status.SUCCEEDED, snapshot__isnull=False)
            .select_related("snapshot").order_by("-finished", "-id").first())
    if last is not None and last.snapshot.sha256 == snapshot_sha256(items):
        logger.info("scheduled %s training skipped: no label changed since run %s", mode, last.id)
        return None
    return training_request(mode=mode, trigger=TrainingRun.Trigger.SCHEDULE)


def training_cancel(*, run: TrainingRun, user=None) -> TrainingRun:
    """A queued run is cancelled at once; a running one stops at its next progress report."""
    with transaction.atomic():
        now = timezone.now()
        cancelled = TrainingRun.objects.filter(id=run.id, status=TrainingRun.Status.QUEUED).update(
            status=TrainingRun.Status.CANCELLED, finished=now, error=f"cancelled by {user or 'the system'}")
        if not cancelled:
            asked = TrainingRun.objects.filter(id=run.id, status=TrainingRun.Status.RUNNING).update(
                cancel_requested=True)
            if not asked:
                raise Conflict(f"Run {run.id} has already finished ({run.status}).")
    run.refresh_from_db()
    return run


# --- the run's state -------------------------------------------------------------------------

def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def finish(run_id: int, status: str, *, error: str = "", only_if: dict | None = None, **fields) -> bool:
    updated = TrainingRun.objects.filter(id=run_id, **(only_if or {})).update(
        status=status, finished=timezone.now(), error=error[:10_000], **fields)
    if updated:
        logger.info("training run %s %s %s", run_id, status, error)
    return bool(updated)


def fail_if_stale(run: TrainingRun, stale_before) -> bool:
    last = f"{run.heartbeat:%Y-%m-%d %H:%M:%S} UTC" if run.heartbeat else "never"
    message = (f"The worker {run.worker} stopped reporting (last heartbeat: {last}); nothing was registered. "
               "Start a new run.")
    return finish(run.id, TrainingRun.Status.FAILED, error=message,
                  only_if=dict(status=TrainingRun.Status.RUNNING, heartbeat__lt=stale_before))


def start_next_queued(*, resend_after_s: float = 0) -> int | None:
    if TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING).exists():
        return None
    run = TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED).order_by("created", "id").first()
    if run is None:
        return None
    now = timezone.now()
    if resend_after_s and run.enqueued and (now - run.enqueued).total_seconds() < resend_after_s:
        return None  # its task is most likely still on its way
    TrainingRun.objects.filter(id=run.id).update(enqueued=now)
    enqueue.on_commit(TRAIN_TASK, run.id)
    return run.id


def _claim(run_id: int) -> TrainingRun | None:
    now = timezone.now()
    try:
        with transaction.atomic():
            claimed = TrainingRun.objects.filter(id=run_id, status=TrainingRun.Status.QUEUED,
                                                 cancel_requested=False).update(
                status=TrainingRun.Status.RUNNING, started=now, heartbeat=now, worker=worker_name(),
                stage="starting", error="")
    except IntegrityError:
        return None  # another run is training; this one starts when that one ends
    if claimed:
        return TrainingRun.objects.get(id=run_id)
    run = TrainingRun.objects.filter(id=run_id).first()
    if run is not None and run.status == TrainingRun.Status.RUNNING:
        # Delivered again: after a crash (the broker re-delivers unacknowledged tasks) the run
        # is running with a stale heartbeat: it failed. Otherwise another worker has it.
        fail_if_stale(run, now - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT_S))
    return None


# --- running a training run ------------------------------------------------------------------

def checkpoint_path(run_id: int) -> Path:
    return Path(settings.MODELS_ROOT) / CHECKPOINTS / f"run-{run_id}.pt"


def training_execute(*, run_id: int) -> TrainingRun | None:
    """Trains one queued run; None if it was not this call's to run. Idempotent."""
    run = _claim(run_id)
    if run is None:
        return None
    checkpoint = checkpoint_path(run.id)
    # Every finish is conditional on the run still running: the watchdog may have failed it
    # meanwhile (a worker that stalled past the heartbeat timeout), and that verdict stands.
    still_running = {"status": TrainingRun.Status.RUNNING}
    try:
        version = _train(run, checkpoint)
    except Cancelled:
        finish(run.id, TrainingRun.Status.CANCELLED, error="cancelled while training; nothing was registered",
               stage="cancelled", only_if=still_running)
    except _NoLongerRunning:
        logger.warning("training run %s was failed by the watchdog while it trained; result discarded", run.id)
    except (TrainingRefused, TooFewImages, ValueError, FileNotFoundError, InvalidImage, ModelDirError) as e:
        finish(run.id, TrainingRun.Status.FAILED, error=str(e), stage="failed", only_if=still_running)
    except Exception as e:
        logger.exception("training run %s failed", run.id)
        finish(run.id, TrainingRun.Status.FAILED, error=f"{type(e).__name__}: {e}", stage="failed",
               only_if=still_running)
    else:
        _export_for_serving(run.id, version)
        gate_and_promote(version)
        finish(run.id, TrainingRun.Status.SUCCEEDED, stage="done", only_if=still_running)
    finally:
        checkpoint.unlink(missing_ok=True)
        with transaction.atomic():
            start_next_queued()
    run.refresh_from_db()
    return run


def _export_for_serving(run_id: int, version: ModelVersion) -> None:
    """CPU workers serve through ONNX Runtime: export now, so that no prediction waits on it.

    A failed export does not fail the run: serving tries again, or falls back to PyTorch.
    """
    if not serving.exports_onnx():
        return
    TrainingRun.objects.filter(id=run_id).update(stage="export", heartbeat=timezone.now())
    try:
        serving.onnx_export(version)
    except Exception:
        logger.exception("ONNX export of %s failed; it is served by PyTorch until one succeeds", version)


def _device() -> str:
    return serving.default_device() if settings.TRAINING_DEVICE == "auto" else settings.TRAINING_DEVICE


def _train(run: TrainingRun, checkpoint: Path) -> ModelVersion:
    from ..ml.train import TrainConfig, fit  # torch: only where training runs

    snapshot = snapshot_create()
    TrainingRun.objects.filter(id=run.id).update(snapshot=snapshot, stage="preparing")
    backbone = settings.DEFAULT_BACKBONE
    tta = settings.TRAINING_HEAD_TTA if run.mode == KIND_HEAD else False
    originals = dict(Image.objects.filter(id__in=[row[0] for row in snapshot.items]).values_list("id", "original"))
    items = [Item(path=local_path(originals[image_id]), label=label, split=split, sha256=sha)
             for image_id, sha, label, split in snapshot.items]
    if not tta:
        _seed_embedding_cache([row[0] for row in snapshot.items], backbone)
    name = f"{run.mode}-{run.id}-{secrets.token_hex(3)}"
    config = TrainConfig(
        out=Path(settings.MODELS_ROOT) / name, items=items, mode=run.mode, backbone=backbone,
        seed=run.options.get("seed", 0), device=_device(),
        batch_size=run.options.get("batch_size", settings.TRAINING_BATCH_SIZE),
        cache_dir=settings.EMBEDDING_CACHE_DIR, weights_dir=settings.WEIGHTS_DIR,
        min_per_class=settings.TRAINING_MIN_PER_CLASS, tta=tta, class_map=project_class_map(),
        epochs=run.options.get("epochs", settings.TRAINING_EPOCHS),
        patience=run.options.get("patience", TrainConfig.patience), checkpoint=checkpoint,
    )
    result = fit(config, progress=Reporter(run.id))
    # The folder is complete on disk before the row exists: a crash here leaves an
    # unreferenced folder that the watchdog sweeps, never a version without files.
    card_sha = file_sha256(config.out / CARD_FILE)
    with transaction.atomic():
        version = ModelVersion.objects.create(
            name=name, kind=run.mode, backbone=backbone, card=result.card.to_dict(), card_sha256=card_sha,
            model_dir=name, parent=selectors.production_model(), snapshot=snapshot,
            status=ModelVersion.Status.CANDIDATE,
        )
        attached = TrainingRun.objects.filter(id=run.id, status=TrainingRun.Status.RUNNING).update(
            version=version, stage="gate", history=result.history if run.mode == KIND_FINETUNE else [],
            heartbeat=timezone.now())
        if not attached:
            raise _NoLongerRunning()  # rolls the version back; the sweep removes its folder
    return version


def _seed_embedding_cache(image_ids: list[int], backbone: str) -> None:
    """Copies the features every prediction stored into the trainer's cache, so the head is
    fitted without running the backbone on images it has seen."""
    from ..ml.embed import EmbeddingCache  # torch: only where training runs

    cache = EmbeddingCache(settings.EMBEDDING_CACHE_DIR)
    rows = Embedding.objects.filter(image_id__in=image_ids, backbone=backbone).values_list("image__sha256", "vector")
    for sha, vector in rows.iterator(chunk_size=500):
        if not cache.path(sha, backbone, False).is_file():
            cache.put(sha, backbone, False, np.frombuffer(bytes(vector), dtype="<f4"))
