"""The Celery workers that announced themselves (its own module: classifier.models is at its size limit)."""

from django.db import models
from django.utils import timezone


class WorkerNode(models.Model):
    """One `celery worker` process: what it serves and on what, refreshed by its heartbeat.

    A row is written when the worker is ready and touched every WORKER_HEARTBEAT_S; a row whose
    last_seen is older than WORKER_FRESH_S (a worker killed without a goodbye) counts as gone.
    """

    hostname = models.CharField(max_length=255, unique=True)  # Celery's node name, e.g. training-1a2b3c@host
    queues = models.JSONField(default=list)
    device = models.CharField(max_length=255)  # the CUDA device's name, or "CPU"
    training_device = models.CharField(max_length=8)  # where a training run would run here: cuda or cpu
    backend = models.CharField(max_length=32)  # what serves predictions here: onnxruntime or torch
    concurrency = models.PositiveIntegerField(default=1)
    pid = models.PositiveIntegerField(null=True, blank=True)
    started = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)
    stopped = models.DateTimeField(null=True, blank=True)  # a warm shutdown said goodbye

    class Meta:
        ordering = ["hostname"]

    def __str__(self) -> str:
        return f"{self.hostname} ({', '.join(self.queues)}; {self.device})"
