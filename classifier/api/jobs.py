"""REST API for batch inference jobs (reviewers and staff: classifier.train)."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import api_view, parser_classes, permission_classes
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from .. import jobs
from ..models import InferenceJob
from .permissions import CanTrain


class JobSerializer(serializers.ModelSerializer):
    version = serializers.CharField(source="version.name")
    requested_by = serializers.CharField(source="requested_by.username", default=None)
    progress = serializers.SerializerMethodField()
    page_url = serializers.CharField(source="get_absolute_url")

    class Meta:
        model = InferenceJob
        fields = ["id", "source", "status", "version", "requested_by", "filename", "total", "processed",
                  "failed_images", "chunk_size", "progress", "rejected", "summary", "error", "cancel_requested",
                  "created", "started", "finished", "page_url"]

    def get_progress(self, job) -> dict:
        return jobs.job_progress(job)


class JobRequestSerializer(serializers.Serializer):
    source = serializers.ChoiceField(choices=[s.value for s in InferenceJob.REQUESTABLE])
    image_ids = serializers.ListField(child=serializers.IntegerField(), required=False,
                                      help_text="for source=selection")
    file = serializers.FileField(required=False, help_text="for source=zip: a zip of photos")


@extend_schema(request={"multipart/form-data": JobRequestSerializer, "application/json": JobRequestSerializer},
               responses={200: JobSerializer(many=True), 201: JobSerializer})
@api_view(["GET", "POST"])
@parser_classes([MultiPartParser, FormParser, JSONParser])
@permission_classes([CanTrain])
def job_list(request):
    """GET: recent jobs. POST: predict all unlabelled images, a selection of ids, or a zip of photos."""
    if request.method == "GET":
        return Response(JobSerializer(InferenceJob.objects.select_related("version", "requested_by")[:20],
                                      many=True).data)
    body = JobRequestSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    job = jobs.job_create(user=request.user, source=body.validated_data["source"],
                          image_ids=body.validated_data.get("image_ids"), archive=body.validated_data.get("file"))
    return Response(JobSerializer(job).data, status=status.HTTP_201_CREATED)


@extend_schema(responses=JobSerializer)
@api_view(["GET"])
@permission_classes([CanTrain])
def job_detail(request, job_id: int):
    return Response(JobSerializer(get_object_or_404(InferenceJob, id=job_id)).data)


@extend_schema(request=None, responses=JobSerializer)
@api_view(["POST"])
@permission_classes([CanTrain])
def job_cancel(request, job_id: int):
    job = jobs.job_cancel(job=get_object_or_404(InferenceJob, id=job_id))
    return Response(JobSerializer(job).data)
