"""The watchdog (Celery beat, every minute): retries once, then fails, runs whose worker stopped
sending heartbeats, removes what dead workers left on disk, and starts the next queued run."""

import shutil
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from ..models import ModelVersion, TrainingRun
from .liveness import recover_if_stale
from .runs import CHECKPOINTS, start_next_queued


def training_watchdog() -> dict:
    """Retries or fails runs whose worker died, sweeps half-written folders, starts a waiting run."""
    report = stale_runs_recover()
    swept = sweep_models_root()
    started = start_next_queued(resend_after_s=300)
    return {**report, "swept": swept, "started": started}


def stale_runs_recover() -> dict:
    """Also run by the recovery loop (classifier.recovery), which does not need the broker."""
    stale_before = timezone.now() - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT_S)
    report = {"retried": [], "failed": []}
    for run in TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING):  # stale, or its process gone
        outcome = recover_if_stale(run, stale_before)
        if outcome:
            report[outcome].append(run.id)
    return report


def sweep_models_root() -> list[str]:
    """Removes what a dead worker left behind: temporary folders of an unfinished write, model
    folders no version points to, checkpoints of finished runs."""
    root = Path(settings.MODELS_ROOT)
    if not root.is_dir():
        return []
    cutoff = time.time() - settings.TRAINING_HEARTBEAT_TIMEOUT_S
    known = set(ModelVersion.objects.exclude(model_dir="").values_list("model_dir", flat=True))
    live = set(TrainingRun.objects.filter(status__in=[TrainingRun.Status.RUNNING, TrainingRun.Status.QUEUED])
               .values_list("id", flat=True))
    removed = []
    onnx_dir = Path(settings.ONNX_DIR).resolve()
    for path in root.iterdir():
        if path.resolve() == onnx_dir:
            removed += _sweep_partial_exports(path, cutoff)
        elif path.name == CHECKPOINTS:
            removed += _sweep_checkpoints(path, live)
        elif path.name not in known and path.stat().st_mtime <= cutoff:
            # Neither registered nor perhaps still being written by a live run.
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def _sweep_partial_exports(folder: Path, cutoff: float) -> list[str]:
    # Exports are shared by card, not owned by a version; only a killed export's temporary file goes.
    removed = []
    for partial in folder.glob(".*.partial"):
        if partial.stat().st_mtime < cutoff:
            partial.unlink(missing_ok=True)
            removed.append(f"{folder.name}/{partial.name}")
    return removed


def _sweep_checkpoints(folder: Path, live_runs: set[int]) -> list[str]:
    removed = []
    for checkpoint in folder.glob("run-*.pt"):
        run_id = checkpoint.stem.removeprefix("run-")
        if run_id.isdigit() and int(run_id) not in live_runs:
            checkpoint.unlink(missing_ok=True)
            removed.append(f"{CHECKPOINTS}/{checkpoint.name}")
    return removed
