from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import permissions, serializers, status
from rest_framework.decorators import api_view, parser_classes, permission_classes
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from classifier.api.serializers import PredictionSerializer
from classifier.errors import Rejected
from classifier.models import Image

from . import agreement as agreement_stats
from . import exports, imports, label_errors, review_queue, selectors, services
from .models import Annotation, ImportJob


class CanAnnotate(permissions.BasePermission):
    message = "Working the review queue needs the annotator role."

    def has_permission(self, request, view):
        return request.user.is_authenticated and request.user.has_perm("labeling.annotate")


class AnnotationSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", default=None)
    reverts = serializers.IntegerField(source="reverts_id", default=None)
    model_version = serializers.CharField(source="model_version.name", default=None)

    class Meta:
        model = Annotation
        fields = ["id", "image", "kind", "role", "label", "suggested_label", "user", "model_version", "reverts",
                  "time_taken_ms", "source", "created"]


class SuspectedLabelSerializer(serializers.Serializer):
    label = serializers.CharField(help_text="the current label")
    model_label = serializers.CharField(help_text="what a model that never saw that label confidently says")


class QueueItemSerializer(serializers.Serializer):
    """A claim, with what the card shows: context["suspects"] (image id -> SuspectedLabel, why a
    suspect is queued), context["claims"] (image id -> the uploader's claim) and context["left"]."""

    token = serializers.CharField()
    expires = serializers.DateTimeField()
    image = serializers.IntegerField(source="image.id")
    preview_url = serializers.CharField(source="image.preview.url")
    page_url = serializers.CharField(source="image.get_absolute_url")
    prediction = serializers.SerializerMethodField()
    based_on = serializers.SerializerMethodField()
    suspected_label = serializers.SerializerMethodField()
    uploader_claim = serializers.SerializerMethodField()
    left = serializers.SerializerMethodField()

    def get_prediction(self, claim) -> PredictionSerializer(allow_null=True):
        prediction = claim.image.latest_prediction()
        return PredictionSerializer(prediction).data if prediction else None

    def get_suspected_label(self, claim) -> SuspectedLabelSerializer(allow_null=True):
        suspect = self.context.get("suspects", {}).get(claim.image_id)
        return SuspectedLabelSerializer(suspect).data if suspect else None

    def get_based_on(self, claim) -> int:
        return selectors.latest_annotation_id(claim.image_id)

    @extend_schema_field(serializers.CharField(allow_null=True, help_text=(
        "the class the uploader says this is (their latest feedback): a claim to weigh, not a label")))
    def get_uploader_claim(self, claim):
        return self.context.get("claims", {}).get(claim.image_id)

    @extend_schema_field(serializers.IntegerField(allow_null=True, help_text=(
        "images still waiting for your decision when this answer was made, those held for you included")))
    def get_left(self, claim):
        return self.context.get("left")


class DecisionSerializer(serializers.Serializer):
    token = serializers.CharField()
    action = serializers.ChoiceField(choices=services.ACTIONS)
    label = serializers.CharField(required=False, allow_blank=True)
    based_on = serializers.IntegerField(required=False, help_text="the `based_on` of the queue item")
    prediction = serializers.IntegerField(required=False, help_text=(
        "the id of the prediction shown (the queue item's prediction.id): `accept` takes exactly its label"))
    time_taken_ms = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()


class FeedbackSerializer(serializers.Serializer):
    label = serializers.CharField()


@extend_schema(responses=QueueItemSerializer(many=True))
@api_view(["GET"])
@permission_classes([CanAnnotate])
def queue_next(request):
    """The next images to review, each held for you for a while (prefetch several)."""
    try:
        count = max(1, min(int(request.query_params.get("count", 1)), 20))
    except ValueError:
        raise Rejected("count must be a number") from None
    claims = review_queue.queue_next(user=request.user, count=count)
    return Response(_queue_items(request.user, claims))


def _queue_items(user, claims) -> list[dict]:
    suspects = {}
    if user.has_perm("labeling.review"):  # annotators are not told, nor made to wait for a run
        suspects = {s.image_id: s for s in label_errors.suspected_labels()}
    context = {"suspects": suspects, "claims": selectors.uploader_claims(c.image_id for c in claims),
               "left": review_queue.queue_left(user)}
    return QueueItemSerializer(claims, many=True, context=context).data


@extend_schema(request=DecisionSerializer, responses={201: AnnotationSerializer})
@api_view(["POST"])
@permission_classes([CanAnnotate])
def decision_create(request):
    """Accept the suggestion, choose a class, or reject ("not an animal / none of these")."""
    data = DecisionSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    annotation = services.decision_make(user=request.user, **data.validated_data)
    return Response(AnnotationSerializer(annotation).data, status=status.HTTP_201_CREATED)


@extend_schema(request=None, responses={200: QueueItemSerializer})
@api_view(["POST"])
@permission_classes([CanAnnotate])
def decision_undo(request):
    """Undo your last decision; its image comes back to you."""
    _, claim = services.decision_undo(user=request.user)
    return Response(_queue_items(request.user, [claim])[0])


@extend_schema(request=None, responses={200: QueueItemSerializer})
@api_view(["POST"])
@permission_classes([CanAnnotate])
def decision_reopen(request, annotation_id: int):
    """Hold the image of one of your recent decisions for you again; deciding appends a new decision
    (the history keeps the old one)."""
    claim = services.decision_reopen(user=request.user, annotation_id=annotation_id)
    return Response(_queue_items(request.user, [claim])[0])


@extend_schema(request=TokenSerializer, responses={204: None})
@api_view(["POST"])
@permission_classes([CanAnnotate])
def skip(request):
    data = TokenSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    services.skip(user=request.user, token=data.validated_data["token"])
    return Response(status=status.HTTP_204_NO_CONTENT)


def _visible_image(request, image_id) -> Image:
    image = get_object_or_404(Image, id=image_id)
    if not image.is_visible_to(request.user):
        raise PermissionDenied("This image was uploaded by someone else.")
    return image


@extend_schema(responses=AnnotationSerializer(many=True))
@api_view(["GET"])
def image_history(request, image_id: int):
    """Every decision about an image, oldest first, with who, when and from what suggestion."""
    image = _visible_image(request, image_id)
    return Response(AnnotationSerializer(selectors.history(image), many=True).data)


@extend_schema(request=FeedbackSerializer, responses={201: AnnotationSerializer})
@api_view(["POST"])
def image_feedback(request, image_id: int):
    """"Wrong? It's a ___": a suggestion from the uploader that moves the image up the queue."""
    image = _visible_image(request, image_id)
    data = FeedbackSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    annotation = services.feedback_give(user=request.user, image=image, label=data.validated_data["label"])
    return Response(AnnotationSerializer(annotation).data, status=status.HTTP_201_CREATED)



class CanReview(permissions.BasePermission):
    message = "Imports and exports need the reviewer role."

    def has_permission(self, request, view):
        return request.user.is_authenticated and request.user.has_perm("labeling.review")


class ImportSuspectSerializer(SuspectedLabelSerializer):
    image = serializers.IntegerField(source="image_id")


class ImportJobSerializer(serializers.ModelSerializer):
    percent = serializers.IntegerField(read_only=True)
    suspected_labels = serializers.SerializerMethodField()

    class Meta:
        model = ImportJob
        fields = ["id", "filename", "status", "total", "processed", "percent", "created_images", "existing_images",
                  "rejected", "error", "created", "started", "finished", "suspected_labels"]

    def get_suspected_labels(self, job) -> ImportSuspectSerializer(many=True):
        """The imported labels a model trained on the others confidently contradicts (once done)."""
        if job.status != ImportJob.Status.DONE:
            return []
        return ImportSuspectSerializer(label_errors.import_suspects([job.id])[job.id], many=True).data


class ImportRequestSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="a zip in ImageFolder layout: class/photo.jpg")


@extend_schema(request={"multipart/form-data": ImportRequestSerializer}, responses={202: ImportJobSerializer})
@api_view(["POST"])
@permission_classes([CanReview])
@parser_classes([MultiPartParser])
def import_create(request):
    """Import labelled photos from a zip; poll the job for progress and the rejected files."""
    upload = request.FILES.get("file")
    if upload is None:
        raise Rejected("Send the zip as the multipart field `file`.")
    job = imports.import_start(user=request.user, file=upload)
    return Response(ImportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(responses=ImportJobSerializer)
@api_view(["GET"])
@permission_classes([CanReview])
def import_detail(request, job_id: int):
    return Response(ImportJobSerializer(get_object_or_404(ImportJob, id=job_id)).data)


EXPORTS = {
    "zip": ("application/zip", "labels.zip", exports.export_zip),
    "csv": ("text/csv", "labels.csv", exports.export_csv),
    "json": ("application/json", "label-history.json", exports.export_history_json),
}


@extend_schema(
    parameters=[OpenApiParameter("kind", str, enum=list(EXPORTS),
                                 description="zip (ImageFolder), csv, json (history)")],
    responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
)
@api_view(["GET"])
@permission_classes([CanReview])
def export(request):
    """The current labels as an ImageFolder zip or CSV, or the full history as JSON."""
    fmt = request.query_params.get("kind", "zip")
    if fmt not in EXPORTS:
        raise Rejected(f"Unknown format {fmt!r}; choose one of: {', '.join(EXPORTS)}")
    content_type, filename, make = EXPORTS[fmt]
    response = HttpResponse(make(), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@extend_schema(responses=inline_serializer("Agreement", {
    "pairs": serializers.ListField(child=serializers.DictField()),
    "confusion": serializers.ListField(child=serializers.DictField()),
    "disagreements_open": serializers.IntegerField(),
}))
@api_view(["GET"])
@permission_classes([CanReview])
def agreement(request):
    """Inter-annotator agreement on double-annotated images: Cohen's kappa per pair."""
    return Response(agreement_stats.agreement())
