from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.reverse import reverse

from .. import selectors, uploads
from ..converters import ID_REGEX
from ..errors import Rejected
from ..models import Image
from ..training.snapshots import training_labels
from .serializers import (
    ImageSerializer,
    SpeciesSerializer,
    UploadRequestSerializer,
    UploadResultSerializer,
)

UploadErrorSerializer = inline_serializer(
    "UploadError", {"detail": serializers.CharField(), "errors": serializers.DictField(child=serializers.CharField())}
)


LIST_FILTERS = [
    OpenApiParameter("status", str, enum=list(Image.Status.values), description="the image's processing status"),
    OpenApiParameter("label", str, description=(
        "the image's current label, derived from its annotation history: the latest decision of the highest "
        "rank (reviewer, then annotator, then import), undone decisions left out, merged classes under their "
        "new name; `other` for \"not an animal / none of these\". An uploader's claim (feedback) is not a label. "
        "Changes as soon as someone corrects the label.")),
    OpenApiParameter("predicted", str, description=(
        "the class the production version predicts for the image (images it has not predicted yet are left "
        "out); not a label")),
]


ID_PARAMETER = OpenApiParameter("id", int, OpenApiParameter.PATH)


@extend_schema_view(list=extend_schema(parameters=LIST_FILTERS), retrieve=extend_schema(parameters=[ID_PARAMETER]))
class ImageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Upload images and read each one's latest prediction."""

    serializer_class = ImageSerializer
    lookup_value_regex = ID_REGEX  # /api/images/abc/ matches no route: a JSON 404, never a 500
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        images = selectors.images_visible_to(self.request.user)
        params = self.request.query_params
        if "status" in params:  # an empty or unknown value is a mistake, not "any status"
            if params["status"] not in Image.Status.values:
                raise Rejected(f"Unknown status {params['status']!r}; choose one of: {', '.join(Image.Status.values)}")
            images = images.filter(status=params["status"])
        if params.get("label"):
            wanted = params["label"].strip().lower()
            # Labels are derived, never stored: read through the same source training reads.
            images = images.filter(id__in=[i for i, name in training_labels().items() if name == wanted])
        if params.get("predicted"):
            version = selectors.production_model()
            images = (images.filter(predictions__model_version=version, predictions__label=params["predicted"])
                      if version else images.none())
        return images.order_by("-created", "-id")

    def get_object(self):
        image = get_object_or_404(Image, pk=self.kwargs["pk"])
        if not image.is_visible_to(self.request.user):
            self.permission_denied(self.request, message="This image was uploaded by someone else.")
        return image

    @extend_schema(
        request={"multipart/form-data": UploadRequestSerializer},
        responses={201: UploadResultSerializer(many=True), 400: UploadErrorSerializer},
    )
    def create(self, request):
        files = request.FILES.getlist("files") or request.FILES.getlist("file")
        results = uploads.images_upload(user=request.user, files=files)
        body = [
            {
                "id": r.image.id,
                "status": r.image.status,
                "created": r.created,
                "filename": f.name,
                "url": reverse("api-image-detail", args=[r.image.id], request=request),
            }
            for r, f in zip(results, files)
        ]
        return Response(body, status=status.HTTP_201_CREATED)


@extend_schema_view(retrieve=extend_schema(parameters=[ID_PARAMETER]))
class SpeciesViewSet(viewsets.ReadOnlyModelViewSet):
    """The project's classes; staff edit them in the admin."""

    serializer_class = SpeciesSerializer
    lookup_value_regex = ID_REGEX
    queryset = selectors.active_species()
