"""Writes for training: dataset snapshots, training runs, the promotion gate, rollback.

A run's life: training_request() makes it queued, or joins the run of that mode already
queued, and enqueues model_train on commit. training_execute() claims it with a conditional
UPDATE (a second delivery of the task finds it taken and does nothing; the database allows one
running run at all), freezes a snapshot of the labels, trains with classifier.ml.train.fit (the
same code as the command line), registers the version and lets the gate decide whether it
replaces the champion. training_watchdog() (Celery beat, every minute) fails runs whose worker
stopped sending heartbeats, removes half-written model folders and starts the next queued run.
"""

import logging
import os
import secrets
import shutil
import socket
import time
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from . import selectors, serving
from .ml import gate
from .ml.cards import CARD_FILE, KIND_FINETUNE, KIND_HEAD, ModelDirError, file_sha256
from .ml.class_map import OTHER
from .ml.datasets import TEST, TRAIN, VAL, Item, TooFewImages, check_training_splits, snapshot_sha256, stable_split, validation_split
from .ml.images import InvalidImage, decode_image
from .models import DatasetSnapshot, Embedding, Image, ModelEvent, ModelVersion, Prediction, TrainingRun

if TYPE_CHECKING:
    from .ml.train import ProgressEvent

# The trainer and the embedding cache (torch) are imported where training runs: the web never trains.

logger = logging.getLogger(__name__)

MODES = (KIND_HEAD, KIND_FINETUNE)
OPTION_TYPES = {"epochs": int, "seed": int, "batch_size": int, "patience": int}
CHECKPOINTS = ".checkpoints"


class TrainingRefused(ValueError):
    """Training cannot start with today's labels; the message says what is missing."""


class Cancelled(Exception):
    pass


class _NoLongerRunning(Exception):
    pass


# --- snapshots -------------------------------------------------------------------------------

def training_labels() -> dict[int, str]:
    return import_string(settings.TRAINING_LABELS_SOURCE)()


def _snapshot_items() -> tuple[list[Item], dict[int, str], dict[str, str]]:
    """Today's labelled images as split items (path not yet resolved), their ids, and the
    classes left out; raises TrainingRefused with the reason when training cannot start."""
    labels = training_labels()
    minimum = settings.TRAINING_MIN_PER_CLASS
    counts = Counter(labels.values())
    excluded = {}
    if counts.get(OTHER, 0) < minimum and OTHER in counts:
        # "Not an animal" is optional: too few of them leave the class out, not the training.
        excluded[OTHER] = f"{counts[OTHER]} labelled images; a class needs {minimum}"
    short = {label: n for label, n in sorted(counts.items()) if n < minimum and label not in excluded}
    if short:
        listed = ", ".join(f"{label} ({n})" for label, n in short.items())
        raise TrainingRefused(f"Every class needs at least {minimum} labelled images to train; too few in: {listed}")
    if len(set(counts) - set(excluded)) < 2:
        raise TrainingRefused(f"Training needs at least two classes with {minimum} labelled images each; "
                              f"labelled so far: {dict(counts) or 'nothing'}")
    items, ids = [], {}
    for image_id, sha in Image.objects.filter(id__in=list(labels)).values_list("id", "sha256"):
        label = labels[image_id]
        if label in excluded:
            continue
        split = stable_split(sha, test_fraction=settings.TRAINING_TEST_FRACTION)
        if split == TRAIN:
            split = validation_split(sha, val_fraction=settings.TRAINING_VAL_FRACTION)
        items.append(Item(path=Path(sha), label=label, split=split, sha256=sha))
        ids[sha] = image_id
    try:
        check_training_splits(items, sorted({i.label for i in items}))
    except TooFewImages as e:
        raise TrainingRefused(str(e)) from None
    if not any(i.split == VAL for i in items):
        raise TrainingRefused("No labelled image falls in the validation split yet; label a few more.")
    return items, ids, excluded


def training_check() -> None:
    """Raises TrainingRefused if today's labels cannot be trained on."""
    _snapshot_items()


def snapshot_create() -> DatasetSnapshot:
    """Freezes today's labels; the same labels give the same snapshot (by content hash)."""
    items, ids, excluded = _snapshot_items()
    digest = snapshot_sha256(items)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {TRAIN: 0, VAL: 0, TEST: 0})
    for item in items:
        counts[item.label][item.split] += 1
    rows = sorted([ids[i.sha256], i.sha256, i.label, i.split] for i in items)
    try:
        with transaction.atomic():
            snapshot, _ = DatasetSnapshot.objects.get_or_create(sha256=digest, defaults=dict(
                items=rows, classes=sorted(counts), counts=dict(counts), excluded=excluded,
                test_fraction=settings.TRAINING_TEST_FRACTION, val_fraction=settings.TRAINING_VAL_FRACTION,
            ))
    except IntegrityError:
        snapshot = DatasetSnapshot.objects.get(sha256=digest)
    return snapshot


# --- requests, cancel, watchdog --------------------------------------------------------------

def _clean_options(options: dict | None) -> dict:
    cleaned = {}
    for key, value in (options or {}).items():
        if key not in OPTION_TYPES:
            raise ValueError(f"Unknown training option {key!r}; choose from: {', '.join(OPTION_TYPES)}")
        try:
            cleaned[key] = OPTION_TYPES[key](value)
        except (TypeError, ValueError):
            raise ValueError(f"Training option {key} must be a number, got {value!r}") from None
        if cleaned[key] < (0 if key == "seed" else 1):
            raise ValueError(f"Training option {key} is too small: {value!r}")
    return cleaned


def training_request(*, mode: str, trigger: str, user=None, options: dict | None = None) -> TrainingRun:
    """A queued run of this mode: a new one, or the one already waiting (the request joins it)."""
    if mode not in MODES:
        raise ValueError(f"Unknown training mode {mode!r}; choose one of: {', '.join(MODES)}")
    options = _clean_options(options)
    training_check()  # refuse now, with the reason, rather than queue a run that must fail
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(mode=mode, trigger=trigger, requested_by=user, options=options,
                                             enqueued=timezone.now())
            transaction.on_commit(lambda: _enqueue(run.id))
    except IntegrityError:
        # The partial unique index allows one queued run per mode: join it.
        run = TrainingRun.objects.get(mode=mode, status=TrainingRun.Status.QUEUED)
    return run


def training_scheduled(*, mode: str) -> TrainingRun | None:
    """A run for the schedule, unless the labels are what the last good run of this mode read."""
    items, _, _ = _snapshot_items()
    last = (TrainingRun.objects.filter(mode=mode, status=TrainingRun.Status.SUCCEEDED, snapshot__isnull=False)
            .select_related("snapshot").order_by("-finished", "-id").first())
    if last is not None and last.snapshot.sha256 == snapshot_sha256(items):
        logger.info("scheduled %s training skipped: no label changed since run %s", mode, last.id)
        return None
    return training_request(mode=mode, trigger=TrainingRun.Trigger.SCHEDULE)


def _enqueue(run_id: int) -> None:
    from .tasks import model_train

    model_train.delay(run_id)


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
                raise ValueError(f"Run {run.id} has already finished ({run.status}).")
    run.refresh_from_db()
    return run


def training_watchdog() -> dict:
    """Fails runs whose worker died, sweeps half-written folders, starts a waiting run."""
    stale_before = timezone.now() - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT_S)
    failed = []
    for run in TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, heartbeat__lt=stale_before):
        if _fail_if_stale(run, stale_before):
            failed.append(run.id)
    swept = _sweep_models_root()
    started = _start_next_queued(resend_after_s=300)
    return {"failed": failed, "swept": swept, "started": started}


def _fail_if_stale(run: TrainingRun, stale_before) -> bool:
    last = f"{run.heartbeat:%Y-%m-%d %H:%M:%S} UTC" if run.heartbeat else "never"
    message = (f"The worker {run.worker} stopped reporting (last heartbeat: {last}); nothing was registered. "
               "Start a new run.")
    return _finish(run.id, TrainingRun.Status.FAILED, error=message,
                   only_if=dict(status=TrainingRun.Status.RUNNING, heartbeat__lt=stale_before))


def _start_next_queued(*, resend_after_s: float = 0) -> int | None:
    if TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING).exists():
        return None
    run = TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED).order_by("created", "id").first()
    if run is None:
        return None
    now = timezone.now()
    if resend_after_s and run.enqueued and (now - run.enqueued).total_seconds() < resend_after_s:
        return None  # its task is most likely still on its way
    TrainingRun.objects.filter(id=run.id).update(enqueued=now)
    transaction.on_commit(lambda: _enqueue(run.id))
    return run.id


def _sweep_models_root() -> list[str]:
    """Removes what a dead worker left behind: temporary folders of an unfinished write, model
    folders no version points to, checkpoints of finished runs."""
    root = Path(settings.MODELS_ROOT)
    if not root.is_dir():
        return []
    cutoff = time.time() - settings.TRAINING_HEARTBEAT_TIMEOUT_S
    known = set(ModelVersion.objects.exclude(model_dir="").values_list("model_dir", flat=True))
    running = set(TrainingRun.objects.filter(status__in=[TrainingRun.Status.RUNNING, TrainingRun.Status.QUEUED])
                  .values_list("id", flat=True))
    removed = []
    onnx_dir = Path(settings.ONNX_DIR).resolve()
    for path in root.iterdir():
        if path.resolve() == onnx_dir:
            # Exports are shared by card, not owned by a version; only a killed export's temporary file goes.
            for partial in path.glob(".*.partial"):
                if partial.stat().st_mtime < cutoff:
                    partial.unlink(missing_ok=True)
                    removed.append(f"{path.name}/{partial.name}")
            continue
        if path.name == CHECKPOINTS:
            for checkpoint in path.glob("run-*.pt"):
                run_id = checkpoint.stem.removeprefix("run-")
                if run_id.isdigit() and int(run_id) not in running:
                    checkpoint.unlink(missing_ok=True)
                    removed.append(f"{CHECKPOINTS}/{checkpoint.name}")
            continue
        if path.name in known or path.stat().st_mtime > cutoff:
            continue  # registered, or perhaps still being written by a live run
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


# --- running a training run ------------------------------------------------------------------

def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _finish(run_id: int, status: str, *, error: str = "", only_if: dict | None = None, **fields) -> bool:
    updated = TrainingRun.objects.filter(id=run_id, **(only_if or {})).update(
        status=status, finished=timezone.now(), error=error[:10_000], **fields)
    if updated:
        logger.info("training run %s %s %s", run_id, status, error)
    return bool(updated)


def _claim(run_id: int) -> TrainingRun | None:
    now = timezone.now()
    try:
        with transaction.atomic():
            claimed = TrainingRun.objects.filter(id=run_id, status=TrainingRun.Status.QUEUED,
                                                 cancel_requested=False).update(
                status=TrainingRun.Status.RUNNING, started=now, heartbeat=now, worker=_worker_name(),
                stage="starting", error="")
    except IntegrityError:
        return None  # another run is training; this one starts when that one ends
    if claimed:
        return TrainingRun.objects.get(id=run_id)
    run = TrainingRun.objects.filter(id=run_id).first()
    if run is not None and run.status == TrainingRun.Status.RUNNING:
        # Delivered again: after a crash (the broker re-delivers unacknowledged tasks) the run
        # is running with a stale heartbeat: it failed. Otherwise another worker has it.
        _fail_if_stale(run, now - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT_S))
    return None


def training_execute(*, run_id: int) -> TrainingRun | None:
    """Trains one queued run; None if it was not this call's to run. Idempotent."""
    run = _claim(run_id)
    if run is None:
        return None
    checkpoint = Path(settings.MODELS_ROOT) / CHECKPOINTS / f"run-{run.id}.pt"
    # Every finish is conditional on the run still running: the watchdog may have failed it
    # meanwhile (a worker that stalled past the heartbeat timeout), and that verdict stands.
    still_running = {"status": TrainingRun.Status.RUNNING}
    try:
        version = _train(run, checkpoint)
    except Cancelled:
        _finish(run.id, TrainingRun.Status.CANCELLED, error="cancelled while training; nothing was registered",
                stage="cancelled", only_if=still_running)
    except _NoLongerRunning:
        logger.warning("training run %s was failed by the watchdog while it trained; result discarded", run.id)
    except (TrainingRefused, TooFewImages, ValueError, FileNotFoundError, InvalidImage, ModelDirError) as e:
        _finish(run.id, TrainingRun.Status.FAILED, error=str(e), stage="failed", only_if=still_running)
    except Exception as e:
        logger.exception("training run %s failed", run.id)
        _finish(run.id, TrainingRun.Status.FAILED, error=f"{type(e).__name__}: {e}", stage="failed",
                only_if=still_running)
    else:
        _export_for_serving(run.id, version)
        _gate_and_promote(version)
        _finish(run.id, TrainingRun.Status.SUCCEEDED, stage="done", only_if=still_running)
    finally:
        checkpoint.unlink(missing_ok=True)
        with transaction.atomic():
            _start_next_queued()
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
    from .ml.train import TrainConfig, fit

    snapshot = snapshot_create()
    TrainingRun.objects.filter(id=run.id).update(snapshot=snapshot, stage="preparing")
    backbone = settings.DEFAULT_BACKBONE
    tta = settings.TRAINING_HEAD_TTA if run.mode == KIND_HEAD else False
    items = [Item(path=_local_original(image_id), label=label, split=split, sha256=sha)
             for image_id, sha, label, split in snapshot.items]
    if not tta:
        _seed_embedding_cache([row[0] for row in snapshot.items], backbone)
    name = f"{run.mode}-{run.id}-{secrets.token_hex(3)}"
    config = TrainConfig(
        out=Path(settings.MODELS_ROOT) / name, items=items, mode=run.mode, backbone=backbone,
        seed=run.options.get("seed", 0), device=_device(),
        batch_size=run.options.get("batch_size", settings.TRAINING_BATCH_SIZE),
        cache_dir=settings.EMBEDDING_CACHE_DIR, weights_dir=settings.WEIGHTS_DIR,
        min_per_class=settings.TRAINING_MIN_PER_CLASS, tta=tta,
        epochs=run.options.get("epochs", settings.TRAINING_EPOCHS),
        patience=run.options.get("patience", TrainConfig.patience), checkpoint=checkpoint,
    )
    result = fit(config, progress=_Reporter(run.id))
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


def _local_original(image_id: int) -> Path:
    """A local path to the image's original bytes; remote storages are copied once."""
    name = Image.objects.values_list("original", flat=True).get(id=image_id)
    try:
        return Path(default_storage.path(name))
    except NotImplementedError:
        local = Path(settings.VAR_DIR) / "cache" / "originals" / name
        if not local.is_file():
            local.parent.mkdir(parents=True, exist_ok=True)
            with default_storage.open(name, "rb") as src, open(local.with_suffix(".partial"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(local.with_suffix(".partial"), local)
        return local


def _seed_embedding_cache(image_ids: list[int], backbone: str) -> None:
    """Copies the features every prediction stored into the trainer's cache, so the head is
    fitted without running the backbone on images it has seen."""
    from .ml.embed import EmbeddingCache

    cache = EmbeddingCache(settings.EMBEDDING_CACHE_DIR)
    rows = Embedding.objects.filter(image_id__in=image_ids, backbone=backbone).values_list("image__sha256", "vector")
    for sha, vector in rows.iterator(chunk_size=500):
        if not cache.path(sha, backbone, False).is_file():
            cache.put(sha, backbone, False, np.frombuffer(bytes(vector), dtype="<f4"))


class _Reporter:
    """The trainer's progress callback: writes progress and the heartbeat at most once a
    second, and raises Cancelled when someone asked to stop (fit then writes nothing)."""

    def __init__(self, run_id: int, *, every_s: float = 1.0):
        self.run_id = run_id
        self.every_s = every_s
        self.last = 0.0
        self.stage = None
        self.stage_started = time.monotonic()
        self.train_started = None
        self.history = []

    def __call__(self, event: "ProgressEvent") -> None:
        now = time.monotonic()
        if event.stage != self.stage:
            self.stage, self.stage_started = event.stage, now
        if event.stage == "epoch":
            self.history.append(event.metrics)
        final = event.done >= event.total or event.stage == "epoch"
        if not final and now - self.last < self.every_s:
            return
        self.last = now
        fields = dict(stage=event.stage, progress=self._progress(event, now), heartbeat=timezone.now())
        if event.stage == "epoch":
            fields["history"] = self.history
        TrainingRun.objects.filter(id=self.run_id).update(**fields)
        if event.stage != "write" and TrainingRun.objects.filter(id=self.run_id, cancel_requested=True).exists():
            raise Cancelled()

    def _progress(self, event: "ProgressEvent", now: float) -> dict:
        fraction = event.done / event.total if event.total else 1.0
        started = self.stage_started
        if event.stage in ("train", "epoch") and event.epochs:
            if self.train_started is None:
                self.train_started = now
            started = self.train_started
            within = fraction if event.stage == "train" else 1.0
            fraction = ((event.epoch or 1) - 1 + within) / event.epochs
        elapsed = now - started
        eta = elapsed / fraction * (1 - fraction) if 0 < fraction < 1 else 0.0
        return {"done": event.done, "total": event.total, "epoch": event.epoch, "epochs": event.epochs,
                "percent": round(100 * fraction, 1), "eta_s": round(eta, 1),
                "metrics": {k: v for k, v in event.metrics.items() if isinstance(v, (int, float, str))}}


# --- the gate, promotion, rollback -----------------------------------------------------------

def predict_labels(version: ModelVersion, image_ids: list[int]) -> list[str]:
    """The version's top label for each image, re-scoring stored features where its card allows."""
    predictor = serving.build_predictor(version)
    labels: dict[int, str] = {}
    if serving.rescores_embeddings(predictor.card):
        rows = list(Embedding.objects.filter(image_id__in=image_ids, backbone=version.backbone)
                    .values_list("image_id", "vector"))
        if rows:
            vectors = np.stack([np.frombuffer(bytes(v), dtype="<f4") for _, v in rows])
            for (image_id, _), result in zip(rows, predictor.predict_embeddings(vectors, top_k=1)):
                labels[image_id] = result.label
    missing = [i for i in image_ids if i not in labels]
    for start in range(0, len(missing), 32):
        batch = missing[start:start + 32]
        images = [decode_image(_local_original(i).read_bytes(), max_pixels=settings.UPLOAD_MAX_PIXELS).image
                  for i in batch]
        for image_id, result in zip(batch, predictor.predict(images, top_k=1)):
            labels[image_id] = result.label
    return [labels[i] for i in image_ids]


def gate_evaluate(*, challenger: ModelVersion, champion: ModelVersion | None = None) -> gate.GateResult:
    """Both versions on the challenger's snapshot's test split (fixed by content hash)."""
    champion = champion or selectors.production_model()
    test = challenger.snapshot.split(TEST) if challenger.snapshot else []
    ids, truth = [row[0] for row in test], [row[2] for row in test]
    challenger_labels = predict_labels(challenger, ids)
    champion_labels = predict_labels(champion, ids) if champion else [""] * len(ids)
    return gate.compare(truth, champion_labels, challenger_labels, max_class_drop=settings.PROMOTION_MAX_CLASS_DROP,
                        min_images=settings.PROMOTION_MIN_TEST_IMAGES,
                        min_class_support=settings.PROMOTION_MIN_CLASS_SUPPORT)


def _gate_and_promote(version: ModelVersion) -> None:
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
        model_promote(version=version, reason=f"gate: {result.reason}")
    else:
        ModelEvent.objects.create(version=version, previous=champion, action=ModelEvent.Action.KEPT_CANDIDATE,
                                  reason=result.reason)


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
    transaction.on_commit(lambda: images_repredict(version_id=version.id))
    return version


def model_promote_by_hand(*, version: ModelVersion, user) -> ModelVersion:
    version.refresh_from_db()
    if version.status == ModelVersion.Status.PRODUCTION:
        raise ValueError(f"{version.name} is already in production.")
    return model_promote(version=version, user=user, action=ModelEvent.Action.PROMOTED_BY_HAND,
                         reason=f"promoted by hand by {user}")


@transaction.atomic
def model_rollback(*, user) -> ModelVersion:
    """Back to the version that was in production before the current one."""
    current = ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.PRODUCTION).first()
    event = (ModelEvent.objects.filter(version=current, previous__isnull=False)
             .exclude(action=ModelEvent.Action.KEPT_CANDIDATE).order_by("-created", "-id").first()) if current else None
    if event is None:
        raise ValueError("There is no earlier production version to roll back to.")
    return model_promote(version=event.previous, user=user, action=ModelEvent.Action.ROLLED_BACK,
                         reason=f"rolled back from {current.name} by {user}")


# --- re-predicting after a promotion ---------------------------------------------------------

def images_repredict(*, version_id: int) -> int:
    """Queues chunks of the images the version has not predicted yet; returns the image count."""
    from .tasks import images_predict_chunk

    ids = list(Image.objects.exclude(predictions__model_version_id=version_id)
               .filter(status__in=[Image.Status.PREDICTED, Image.Status.QUEUED, Image.Status.FAILED])
               .order_by("id").values_list("id", flat=True))
    size = settings.REPREDICT_CHUNK_SIZE
    for start in range(0, len(ids), size):
        images_predict_chunk.delay(ids[start:start + size], version_id)
    return len(ids)


def images_predict_chunk(*, image_ids: list[int], version_id: int) -> int:
    """Predictions by the version for these images; idempotent (a chunk delivered twice
    finds its rows and writes nothing). Stored features are re-scored without the backbone
    where the card allows; the rest take the normal one-image path."""
    version = ModelVersion.objects.filter(id=version_id).first()
    if version is None or version.status != ModelVersion.Status.PRODUCTION:
        return 0  # a newer champion took over; its own re-predict covers these images
    done = set(Prediction.objects.filter(model_version=version, image_id__in=image_ids).values_list("image_id", flat=True))
    todo = [i for i in image_ids if i not in done]
    predictor = serving.get_predictor(version)
    written = 0
    if todo and serving.rescores_embeddings(predictor.card):
        rows = list(Embedding.objects.filter(image_id__in=todo, backbone=version.backbone)
                    .values_list("image_id", "vector"))
        if rows:
            vectors = np.stack([np.frombuffer(bytes(v), dtype="<f4") for _, v in rows])
            results = predictor.predict_embeddings(vectors, top_k=settings.PREDICTION_TOP_K)
            now = timezone.now()
            created = Prediction.objects.bulk_create([
                Prediction(image_id=image_id, model_version=version, label=r.label, confidence=r.confidence,
                           top=[{"label": s.label, "p": round(s.p, 6)} for s in r.top],
                           probabilities=[round(p, 6) for p in r.probabilities],
                           backend=f"{predictor.embeddings_backend} (stored features)", model_ms=round(r.duration_ms, 3),
                           latency_ms=round(r.duration_ms, 3), created=now)
                for (image_id, _), r in zip(rows, results)
            ], ignore_conflicts=True)
            written += len(created)
            rescored = {image_id for image_id, _ in rows}
            todo = [i for i in todo if i not in rescored]
    from .services import image_classify

    for image_id in todo:
        if image_classify(image_id=image_id) is not None:
            written += 1
    return written
