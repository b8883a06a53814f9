"""Which Celery workers serve which queue, on what device, with which serving backend.

Each worker process writes its own WorkerNode row when it is ready (animalsite.celery) and
touches it from a heartbeat thread; the training page and GET /api/workers/ read the rows seen
within WORKER_FRESH_S. A fine-tune asked for while no fresh worker with a CUDA device serves the
training queue would run on a CPU: it needs a confirmation that has seen the estimate.
"""

import logging
import os
import threading
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from . import serving
from .errors import Conflict
from .ml.cards import KIND_FINETUNE
from .ml.datasets import TRAIN, VAL, Item
from .models import WorkerNode

logger = logging.getLogger(__name__)

CPU = "CPU"


class CpuFinetuneUnconfirmed(Conflict):
    """A fine-tune would run on a CPU and the request did not say it knows (409, with the estimate)."""

    def __init__(self, message: str, *, estimate: dict):
        super().__init__(message)
        self.estimate = estimate

    def body(self) -> dict:
        return {"detail": str(self), "confirm_cpu_required": True, **self.estimate}


# --- what a worker is ------------------------------------------------------------------------

def this_machine() -> dict:
    """The device this process computes on and the backend that would serve a prediction here."""
    import torch

    cuda = torch.cuda.is_available()
    training = ("cuda" if cuda else "cpu") if settings.TRAINING_DEVICE == "auto" else settings.TRAINING_DEVICE
    cpu_backend = "onnxruntime" if serving.exports_onnx() else "torch"
    return {"device": torch.cuda.get_device_name(0) if cuda else CPU, "training_device": training,
            "backend": "torch" if serving.default_device() == "cuda" else cpu_backend}


def worker_announce(*, hostname: str, queues: list[str], concurrency: int = 1, pid: int | None = None,
                    machine: dict | None = None) -> WorkerNode:
    """The worker's row, written afresh (a restarted worker of the same name starts over)."""
    now = timezone.now()
    node, _ = WorkerNode.objects.update_or_create(hostname=hostname, defaults=dict(
        queues=sorted(queues), concurrency=concurrency, pid=pid, started=now, last_seen=now, stopped=None,
        **(machine or this_machine())))
    return node


def worker_seen(*, hostname: str) -> bool:
    """The heartbeat; False when the row is gone (deleted by hand), so the caller announces again."""
    return WorkerNode.objects.filter(hostname=hostname).update(last_seen=timezone.now(), stopped=None) > 0


def worker_stopped(*, hostname: str) -> None:
    WorkerNode.objects.filter(hostname=hostname).update(stopped=timezone.now())


def workers_fresh(queue: str | None = None) -> list[WorkerNode]:
    """Workers heard from within WORKER_FRESH_S and not stopped; those serving `queue` if given."""
    since = timezone.now() - timedelta(seconds=settings.WORKER_FRESH_S)
    nodes = WorkerNode.objects.filter(last_seen__gte=since, stopped__isnull=True)
    return [n for n in nodes if queue is None or queue in n.queues]


def training_workers() -> list[WorkerNode]:
    return workers_fresh(settings.TRAINING_QUEUE)


# --- the fine-tune's CPU confirmation ------------------------------------------------------------

def finetune_cpu_estimate(items: list[Item], *, epochs: int | None = None) -> dict:
    """Seconds of one CPU core for a fine-tune on these labelled items, at most `epochs` epochs
    (early stopping often ends it sooner)."""
    epochs = epochs or settings.TRAINING_EPOCHS
    n_train = sum(i.split == TRAIN for i in items)
    n_val = sum(i.split == VAL for i in items)
    seconds = epochs * (n_train + n_val / 4) * settings.FINETUNE_CPU_S_PER_IMAGE
    return {"estimate_s": round(seconds), "images": len(items), "train_images": n_train, "epochs": epochs,
            "cpu_s_per_image": settings.FINETUNE_CPU_S_PER_IMAGE}


def minutes(seconds: float) -> str:
    return f"{max(1, round(seconds / 60))} min"


def cpu_finetune_check(*, mode: str, items: list[Item], options: dict, confirmed: bool) -> None:
    """CpuFinetuneUnconfirmed when a fine-tune would run on a CPU (no fresh training-queue worker
    trains on CUDA) and the request was not confirmed; nothing otherwise."""
    if mode != KIND_FINETUNE or confirmed:
        return
    workers = training_workers()
    if any(w.training_device == "cuda" for w in workers):
        return
    estimate = finetune_cpu_estimate(items, epochs=options.get("epochs"))
    who = (f"the training queue is served by {', '.join(w.hostname for w in workers)} on the CPU"
           if workers else "no worker serves the training queue now (it waits in the queue until one does)")
    raise CpuFinetuneUnconfirmed(
        f"No CUDA worker: {who}. A fine-tune of {estimate['images']} images would take up to about "
        f"{minutes(estimate['estimate_s'])} of one CPU core ({estimate['epochs']} epochs; early stopping often "
        f"ends it sooner). Predictions will not wait for it: they have their own worker, and training runs at a "
        f"lower priority. Confirm to start it on the CPU.", estimate=estimate)


# --- the heartbeat thread (in each worker's main process) --------------------------------------

class Heartbeat:
    """Announces the worker, then touches its row every WORKER_HEARTBEAT_S until stopped."""

    def __init__(self, *, hostname: str, queues: list[str], concurrency: int):
        self.hostname, self.queues, self.concurrency = hostname, queues, concurrency
        self.machine = this_machine()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="worker-heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)
        try:
            worker_stopped(hostname=self.hostname)
        finally:
            connection.close()

    def _announce(self) -> None:
        worker_announce(hostname=self.hostname, queues=self.queues, concurrency=self.concurrency,
                        pid=os.getpid(), machine=self.machine)

    def _run(self) -> None:
        first = True
        while not self.done.is_set():
            try:
                close_old_connections()
                if first or not worker_seen(hostname=self.hostname):
                    self._announce()
                first = False
            except Exception:  # the database away for a moment: try again at the next beat
                logger.warning("worker heartbeat for %s failed", self.hostname, exc_info=True)
            finally:
                connection.close()  # no idle connection held between beats
            self.done.wait(settings.WORKER_HEARTBEAT_S)
