"""REST API for training runs and the model registry (reviewers and staff: classifier.train)."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.response import Response

from .. import registry
from ..models import ModelEvent, ModelVersion, TrainingRun
from ..training import runs as training_runs
from .permissions import CanTrain


class TrainingRunSerializer(serializers.ModelSerializer):
    requested_by = serializers.CharField(source="requested_by.username", default=None)
    version = serializers.CharField(source="version.name", default=None)
    version_id = serializers.IntegerField(default=None)
    snapshot = serializers.CharField(source="snapshot.sha256", default=None)

    class Meta:
        model = TrainingRun
        fields = ["id", "mode", "trigger", "status", "outcome", "requested_by", "options", "stage", "progress",
                  "history", "cancel_requested", "heartbeat", "worker", "error", "snapshot", "version", "version_id",
                  "created", "started", "finished"]


class VersionSummarySerializer(serializers.ModelSerializer):
    summary = serializers.SerializerMethodField()
    parent = serializers.CharField(source="parent.name", default=None)
    page_url = serializers.CharField(source="get_absolute_url")

    class Meta:
        model = ModelVersion
        fields = ["id", "name", "kind", "backbone", "status", "status_reason", "parent", "created", "promoted",
                  "summary", "page_url"]

    def get_summary(self, version) -> dict:
        return version.metrics.get("summary", {})


class VersionDetailSerializer(VersionSummarySerializer):
    class Meta(VersionSummarySerializer.Meta):
        fields = VersionSummarySerializer.Meta.fields + ["classes", "card", "gate", "model_dir"]


class EventSerializer(serializers.ModelSerializer):
    version = serializers.CharField(source="version.name")
    previous = serializers.CharField(source="previous.name", default=None)
    user = serializers.CharField(source="user.username", default=None)

    class Meta:
        model = ModelEvent
        fields = ["id", "action", "version", "previous", "user", "reason", "created"]


class TrainingRequestSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=training_runs.MODES, default="head")
    options = serializers.DictField(required=False, help_text=f"overrides: {', '.join(training_runs.OPTION_TYPES)}")
    confirm_cpu = serializers.BooleanField(
        default=False, help_text="start a fine-tune even though no CUDA worker serves the training queue (it runs "
                                 "on a CPU; without this the answer is 409 with the estimate)")


@extend_schema(request=TrainingRequestSerializer, responses={200: TrainingRunSerializer(many=True),
                                                             201: TrainingRunSerializer})
@api_view(["GET", "POST"])
@permission_classes([CanTrain])
def runs(request):
    """GET: the latest runs, each with its outcome (skipped and refused requests included).
    POST: ask for a run; joins the queued run of that mode, or the running one with the same options (200);
    refused with the reason (400) when today's labels cannot train, which also leaves a refused row; a
    fine-tune that would run on a CPU needs confirm_cpu (else 409 with confirm_cpu_required and estimate_s)."""
    if request.method == "GET":
        return Response(TrainingRunSerializer(TrainingRun.objects.select_related(
            "requested_by", "version", "snapshot")[:20], many=True).data)
    body = TrainingRequestSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    before = set(TrainingRun.objects.filter(status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING])
                 .values_list("id", flat=True))
    run = training_runs.training_request(mode=body.validated_data["mode"], trigger=TrainingRun.Trigger.MANUAL,
                                user=request.user, options=body.validated_data.get("options"),
                                cpu_confirmed=body.validated_data["confirm_cpu"])
    return Response(TrainingRunSerializer(run).data,
                    status=status.HTTP_200_OK if run.id in before else status.HTTP_201_CREATED)


@extend_schema(responses=TrainingRunSerializer)
@api_view(["GET"])
@permission_classes([CanTrain])
def run_detail(request, run_id: int):
    return Response(TrainingRunSerializer(get_object_or_404(TrainingRun, id=run_id)).data)


@extend_schema(request=None, responses=TrainingRunSerializer)
@api_view(["POST"])
@permission_classes([CanTrain])
def run_cancel(request, run_id: int):
    run = training_runs.training_cancel(run=get_object_or_404(TrainingRun, id=run_id), user=request.user)
    return Response(TrainingRunSerializer(run).data)


@extend_schema(responses=VersionSummarySerializer(many=True))
@api_view(["GET"])
@permission_classes([CanTrain])
def versions(request):
    return Response(VersionSummarySerializer(ModelVersion.objects.select_related("parent")[:50], many=True).data)


@extend_schema(responses=VersionDetailSerializer)
@api_view(["GET"])
@permission_classes([CanTrain])
def version_detail(request, version_id: int):
    return Response(VersionDetailSerializer(get_object_or_404(ModelVersion, id=version_id)).data)


@extend_schema(request=None, responses=VersionDetailSerializer)
@api_view(["POST"])
@permission_classes([CanTrain])
def version_promote(request, version_id: int):
    """Make this version production by hand (logged); the gate is not asked. The answer's
    coverage_lost lists the classes the replaced version served and this one does not."""
    version = get_object_or_404(ModelVersion, id=version_id)
    lost = registry.promotion_coverage_loss(version)
    version = registry.model_promote_by_hand(version=version, user=request.user)
    return Response(VersionDetailSerializer(version).data | {"coverage_lost": lost})


@extend_schema(request=None, responses=VersionDetailSerializer)
@api_view(["POST"])
@permission_classes([CanTrain])
def rollback(request):
    """Back to the version that was production before the current one (logged)."""
    version = registry.model_rollback(user=request.user)
    return Response(VersionDetailSerializer(version).data)


@extend_schema(responses=EventSerializer(many=True))
@api_view(["GET"])
@permission_classes([CanTrain])
def events(request):
    return Response(EventSerializer(ModelEvent.objects.select_related("version", "previous", "user")[:50],
                                    many=True).data)
