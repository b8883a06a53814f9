from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.reverse import reverse

from .. import selectors, uploads
from ..converters import ID_REGEX
from ..models import Image
from .serializers import (
    ImageSerializer,
    SpeciesSerializer,
    UploadRequestSerializer,
    UploadResultSerializer,
)

UploadErrorSerializer = inline_serializer(
    "UploadError", {"detail": serializers.CharField(), "errors": serializers.DictField(child=serializers.CharField())}
)


ID_PARAMETER = OpenApiParameter("id", int, OpenApiParameter.PATH)


@extend_schema_view(retrieve=extend_schema(parameters=[ID_PARAMETER]))
class ImageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Upload images and read each one's latest prediction."""

    serializer_class = ImageSerializer
    lookup_value_regex = ID_REGEX  # /api/images/abc/ matches no route: a JSON 404, never a 500
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        # labeling.browse_api extends this with the data browser's filters and keyset pages.
        return selectors.images_visible_to(self.request.user).order_by("-created", "-id")

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
