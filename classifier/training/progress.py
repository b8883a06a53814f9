"""The trainer's progress callback: what the training page shows live, and the heartbeat."""

import time
from typing import TYPE_CHECKING

from django.utils import timezone

from ..models import TrainingRun

if TYPE_CHECKING:
    from ..ml.train import ProgressEvent


class Cancelled(Exception):
    pass


class Reporter:
    """Writes progress and the heartbeat at most once a second, and raises Cancelled when
    someone asked to stop (fit then writes nothing)."""

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
