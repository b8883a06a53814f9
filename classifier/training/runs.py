"""Training runs, from a request to a registered version.

A run's life: training_request() makes it queued, or joins the run of that mode already
queued (or running, with the same options), and enqueues model_train on commit; a request that
today's labels cannot train is a refused row, and the automatic triggers (training_automatic)
also leave a skipped row when no label changed. training_execute() claims it with a conditional
UPDATE (a second delivery of the task finds it taken and does nothing; the database allows one
running run at all), freezes a snapshot of the labels, trains with classifier.ml.train.fit (the
same code as the command line), registers the version and lets the gate decide whether it
replaces the champion. A run whose snapshot, mode, options and parent match a registered
version's run returns that version instead of training it again. The watchdog (watchdog.py)
queues a run whose worker died again once (TRAINING_MAX_ATTEMPTS), and fails it after that.
"""

import hashlib
import json
import logging
import secrets
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from .. import enqueue, model_store, selectors, serving, workers
from ..errors import Conflict, Rejected
from ..heartbeat import worker_name
from ..ml.cards import CARD_FILE, KIND_FINETUNE, KIND_HEAD, ModelDirError, file_sha256
from ..ml.datasets import Item, TooFewImages, snapshot_sha256
from ..ml.images import InvalidImage
from ..models import Embedding, Image, ModelVersion, TrainingRun
from ..storage import local_path
from .gate import gate_and_promote
from .liveness import TRAIN_TASK, claim_of, finish, recover_if_stale
from .progress import Cancelled, Reporter
from .snapshots import TrainingRefused, project_class_map, snapshot_create, training_check

# The trainer and the embedding cache (torch) are imported where training runs: the web never trains.

logger = logging.getLogger(__name__)

MODES = (KIND_HEAD, KIND_FINETUNE)
OPTION_TYPES = {"epochs": int, "seed": int, "batch_size": int, "patience": int}
CHECKPOINTS = ".checkpoints"


class _NoLongerRunning(Exception):
    pass


class _AlreadyRegistered(Exception):
    """The run would train what a registered version was trained on: that version is the answer."""

    def __init__(self, *, version: ModelVersion, run_id: int):
        super().__init__(version.name)
        self.version, self.run_id = version, run_id


# --- requests and cancel ---------------------------------------------------------------------

def option_bounds() -> dict[str, tuple[int, int]]:
    """Each option's allowed range: a huge batch or epoch count would take the training worker's
    memory or time, so the API refuses it up front."""
    return {"epochs": (1, settings.TRAINING_MAX_EPOCHS), "seed": (0, 2**31 - 1),
            "batch_size": (1, settings.TRAINING_MAX_BATCH_SIZE), "patience": (1, settings.TRAINING_MAX_EPOCHS)}


def _clean_options(options: dict | None) -> dict:
    cleaned, bounds = {}, option_bounds()
    for key, value in (options or {}).items():
        if key not in OPTION_TYPES:
            raise Rejected(f"Unknown training option {key!r}; choose from: {', '.join(OPTION_TYPES)}")
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise Rejected(f"Training option {key} must be a whole number, got {value!r}")
        try:
            number = float(value)
            cleaned[key] = OPTION_TYPES[key](number)
        except (TypeError, ValueError, OverflowError):
            raise Rejected(f"Training option {key} must be a whole number, got {value!r}") from None
        if cleaned[key] != number:
            raise Rejected(f"Training option {key} must be a whole number, got {value!r}")
        low, high = bounds[key]
        if not low <= cleaned[key] <= high:
            raise Rejected(f"Training option {key} must be between {low} and {high}, got {value!r}")
    return cleaned


def training_request(*, mode: str, trigger: str, user=None, options: dict | None = None,
                     cpu_confirmed: bool = True) -> TrainingRun:
    """A run of this mode: the one already queued, or the one running with the same options (the
    request joins it), or a new queued one. Today's labels cannot train: a refused row is left
    and TrainingRefused raised with the reason. cpu_confirmed=False: a new fine-tune that no CUDA
    worker would train raises workers.CpuFinetuneUnconfirmed with the CPU estimate, writing nothing."""
    if mode not in MODES:
        raise Rejected(f"Unknown training mode {mode!r}; choose one of: {', '.join(MODES)}")
    options = _clean_options(options)
    joined = _joinable(mode=mode, options=options)
    if joined is not None:
        return joined
    try:
        items = training_check(mode)  # refuse now, with the reason, rather than queue a run that must fail
    except TrainingRefused as e:
        _outcome_row(mode=mode, trigger=trigger, user=user, options=options, status=TrainingRun.Status.REFUSED,
                     outcome=f"refused: {e}")
        raise
    workers.cpu_finetune_check(mode=mode, items=items, options=options, confirmed=cpu_confirmed)
    return _queue(mode=mode, trigger=trigger, user=user, options=options)


def training_automatic(*, mode: str, trigger: str) -> TrainingRun:
    """A run for the label trigger or the schedule, always a row: joined, queued, or one that says
    why nothing was trained ("skipped: no new labels since run N", "refused: ...")."""
    joined = _joinable(mode=mode, options={})
    if joined is not None:
        return joined
    try:
        items = training_check(mode)
    except TrainingRefused as e:
        return _outcome_row(mode=mode, trigger=trigger, status=TrainingRun.Status.REFUSED, outcome=f"refused: {e}")
    last = (TrainingRun.objects.filter(mode=mode, status=TrainingRun.Status.SUCCEEDED, snapshot__isnull=False)
            .select_related("snapshot").order_by("-finished", "-id").first())
    if last is not None and last.snapshot.sha256 == snapshot_sha256(items):
        return _outcome_row(mode=mode, trigger=trigger, status=TrainingRun.Status.SKIPPED,
                            outcome=f"skipped: no new labels since run {last.id}")
    return _queue(mode=mode, trigger=trigger, user=None, options={})


def training_scheduled(*, mode: str) -> TrainingRun:
    """The schedule's run (Celery beat): see training_automatic."""
    return training_automatic(mode=mode, trigger=TrainingRun.Trigger.SCHEDULE)


def _joinable(*, mode: str, options: dict) -> TrainingRun | None:
    """The run a request of this mode joins: the queued one, or the running one with the same
    options (a second click during a run would otherwise train the same snapshot again)."""
    for run in TrainingRun.objects.filter(mode=mode, status__in=[TrainingRun.Status.QUEUED,
                                                                TrainingRun.Status.RUNNING], cancel_requested=False):
        if run.status == TrainingRun.Status.QUEUED or run.options == options:
            return run
    return None


def _queue(*, mode: str, trigger: str, user, options: dict) -> TrainingRun:
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(mode=mode, trigger=trigger, requested_by=user, options=options,
                                             enqueued=timezone.now())
            enqueue.on_commit(TRAIN_TASK, run.id)
    except IntegrityError:
        # The partial unique index allows one queued run per mode: join it.
        run = TrainingRun.objects.get(mode=mode, status=TrainingRun.Status.QUEUED)
    return run


def _outcome_row(*, mode: str, trigger: str, status: str, outcome: str, user=None,
                 options: dict | None = None) -> TrainingRun:
    """A request that ends where it starts: a finished row that says what became of it."""
    logger.info("%s training (%s) %s", mode, trigger, outcome)
    now = timezone.now()
    return TrainingRun.objects.create(mode=mode, trigger=trigger, requested_by=user, options=options or {},
                                      status=status, stage=status, outcome=outcome[:10_000], created=now,
                                      finished=now)


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
                stage="starting", error="", attempts=F("attempts") + 1)
    except IntegrityError:
        return None  # another run is training; this one starts when that one ends
    if claimed:
        return TrainingRun.objects.get(id=run_id)
    run = TrainingRun.objects.filter(id=run_id).first()
    if run is not None and run.status == TrainingRun.Status.RUNNING:
        # Delivered again: after a crash (the broker re-delivers unacknowledged tasks) the run
        # is running with a stale heartbeat: it failed. Otherwise another worker has it.
        recover_if_stale(run, now - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT_S))
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
    still_running = claim_of(run)
    try:
        version = _train(run, checkpoint)
    except _AlreadyRegistered as same:
        finish(run.id, TrainingRun.Status.SUCCEEDED, stage="done", only_if=still_running, version=same.version,
               outcome=(f"returned {same.version.name} without training: same snapshot, mode, options and parent "
                        f"as run {same.run_id}"))
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
        version.refresh_from_db()
        verdict = "promoted" if version.status == ModelVersion.Status.PRODUCTION else "kept as a candidate"
        finish(run.id, TrainingRun.Status.SUCCEEDED, stage="done", only_if=still_running,
               outcome=f"trained {version.name}: {verdict}")
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


def _chosen(run: TrainingRun, defaults) -> dict:
    """What the run trains with besides its labels: its options with the settings' defaults."""
    return {
        "backbone": settings.DEFAULT_BACKBONE,
        "seed": run.options.get("seed", 0),
        "batch_size": run.options.get("batch_size", settings.TRAINING_BATCH_SIZE),
        "epochs": run.options.get("epochs", settings.TRAINING_EPOCHS),
        "patience": run.options.get("patience", defaults.patience),
        "tta": settings.TRAINING_HEAD_TTA if run.mode == KIND_HEAD else False,
        "min_per_class": settings.TRAINING_MIN_PER_CLASS,
        # The project's classes and ImageNet mappings: the classes a version serves by zero-shot.
        "class_map": project_class_map(),
    }


def run_fingerprint(*, snapshot_sha256: str, mode: str, chosen: dict, parent: ModelVersion | None) -> str:
    """Equal for two runs that would train the same thing: same labels, mode, options, parent."""
    key = {"snapshot": snapshot_sha256, "mode": mode, "chosen": chosen, "parent": parent.id if parent else None}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _registered_twin(run: TrainingRun, fingerprint: str) -> TrainingRun | None:
    return (TrainingRun.objects.filter(fingerprint=fingerprint, status=TrainingRun.Status.SUCCEEDED,
                                       version__isnull=False)
            .exclude(id=run.id).select_related("version").order_by("created", "id").first())


def _train(run: TrainingRun, checkpoint: Path) -> ModelVersion:
    from ..ml.train import TrainConfig, fit  # torch: only where training runs

    if run.version_id is not None:  # the attempt before registered it and died before the gate
        return run.version
    snapshot = snapshot_create()
    parent = selectors.production_model()  # what the new version is trained from and measured against
    chosen = _chosen(run, TrainConfig)
    fingerprint = run_fingerprint(snapshot_sha256=snapshot.sha256, mode=run.mode, chosen=chosen, parent=parent)
    TrainingRun.objects.filter(id=run.id).update(snapshot=snapshot, stage="preparing", fingerprint=fingerprint)
    twin = _registered_twin(run, fingerprint)
    if twin is not None:
        raise _AlreadyRegistered(version=twin.version, run_id=twin.id)
    originals = dict(Image.objects.filter(id__in=[row[0] for row in snapshot.items]).values_list("id", "original"))
    items = [Item(path=local_path(originals[image_id]), label=label, split=split, sha256=sha)
             for image_id, sha, label, split in snapshot.items]
    if not chosen["tta"]:
        _seed_embedding_cache([row[0] for row in snapshot.items], chosen["backbone"])
    name = f"{run.mode}-{run.id}-{secrets.token_hex(3)}"
    config = TrainConfig(
        out=Path(settings.MODELS_ROOT) / name, items=items, mode=run.mode, device=_device(),
        cache_dir=settings.EMBEDDING_CACHE_DIR, weights_dir=settings.WEIGHTS_DIR, checkpoint=checkpoint, **chosen,
    )
    result = fit(config, progress=Reporter(run.id))
    # Every file is in the model store before the row exists: a crash here leaves an
    # unreferenced folder that the watchdog sweeps, never a version without files.
    model_store.publish(name, config.out)
    card_sha = file_sha256(config.out / CARD_FILE)
    with transaction.atomic():
        version = ModelVersion.objects.create(
            name=name, kind=run.mode, backbone=chosen["backbone"], card=result.card.to_dict(), card_sha256=card_sha,
            model_dir=name, parent=parent, snapshot=snapshot, status=ModelVersion.Status.CANDIDATE,
        )
        attached = TrainingRun.objects.filter(id=run.id, **claim_of(run)).update(
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
