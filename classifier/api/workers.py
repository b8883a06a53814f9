"""GET /api/workers/: the Celery workers heard from lately, what they serve and on what."""

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.response import Response

from .. import workers
from ..models import WorkerNode
from .permissions import CanSeeWorkers


class WorkerSerializer(serializers.ModelSerializer):
    class Meta:
        model = WorkerNode
        fields = ["hostname", "queues", "device", "training_device", "backend", "concurrency", "pid", "started",
                  "last_seen"]


class WorkersSerializer(serializers.Serializer):
    workers = WorkerSerializer(many=True)
    inference_queue = serializers.CharField()
    training_queue = serializers.CharField()
    training_served = serializers.BooleanField(help_text="some fresh worker serves the training queue")
    training_on_cuda = serializers.BooleanField(help_text="some fresh training-queue worker trains on CUDA")
    fresh_s = serializers.IntegerField(help_text="a worker not heard from for this long is left out")


@extend_schema(responses=WorkersSerializer)
@api_view(["GET"])
@permission_classes([CanSeeWorkers])
def worker_list(request):
    fresh = workers.workers_fresh()
    training = [w for w in fresh if settings.TRAINING_QUEUE in w.queues]
    return Response(WorkersSerializer({
        "workers": fresh, "inference_queue": settings.INFERENCE_QUEUE, "training_queue": settings.TRAINING_QUEUE,
        "training_served": bool(training), "training_on_cuda": any(w.training_device == "cuda" for w in training),
        "fresh_s": settings.WORKER_FRESH_S,
    }).data)
