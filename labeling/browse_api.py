"""GET /api/images/ with the browser's filters and keyset pages; the rest of the image API
(upload, one image) is classifier's ImageViewSet, which this extends."""

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view, parser_classes
from rest_framework.exceptions import PermissionDenied
from rest_framework.pagination import BasePagination
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from classifier import predictions
from classifier.api import images as images_api
from classifier.api.serializers import ImageSerializer, ModelVersionSerializer, PredictionSerializer
from classifier.errors import Rejected
from classifier.ml.images import InvalidImage
from classifier.models import Image

from . import browse, similar, summaries
from . import bulk as bulk_actions
from .api import AnnotationSerializer


class BrowseImageSerializer(ImageSerializer):
    label = serializers.CharField(source="summary.label", help_text="current label; empty: unlabelled")
    predicted = serializers.CharField(source="summary.predicted", help_text="production prediction; empty: none")
    confidence = serializers.FloatField(source="summary.confidence", allow_null=True)
    margin = serializers.FloatField(source="summary.margin", allow_null=True)
    split = serializers.CharField(source="summary.split")
    near_duplicate_of = serializers.IntegerField(source="near_duplicate_shown", allow_null=True, help_text=(
        "the earlier image this one looks like; null: none, or one you may not see"))

    class Meta(ImageSerializer.Meta):
        fields = ImageSerializer.Meta.fields + ["label", "predicted", "confidence", "margin", "split",
                                                "near_duplicate_of"]

    def get_prediction(self, image) -> PredictionSerializer(allow_null=True):
        latest = self.context.get("latest_predictions")
        if latest is None:
            return super().get_prediction(image)
        return latest.get(image.id)  # read and serialised for the whole page at once


class PagePredictionSerializer(PredictionSerializer):
    """PredictionSerializer's output for a page at a third of its cost: `top` as plain dicts, and
    each model version serialised once (a page's predictions share one or two)."""

    top = serializers.SerializerMethodField()
    model_version = serializers.SerializerMethodField()

    def get_top(self, prediction) -> list[dict]:
        return [{"label": str(t["label"]), "p": float(t["p"])} for t in prediction.top]

    def get_model_version(self, prediction) -> dict:
        versions = self.context.setdefault("model_versions", {})
        if prediction.model_version_id not in versions:
            versions[prediction.model_version_id] = ModelVersionSerializer(prediction.model_version).data
        return versions[prediction.model_version_id]


class KeysetPagination(BasePagination):
    """`?sort=` (-created, created, -confidence, confidence, -margin, margin), `?cursor=` from the
    previous page's `next`, `?page_size=` (at most 200). No counts: they cost a scan per page."""

    def paginate_queryset(self, queryset, request, view=None):
        params = request.query_params
        size = params.get("page_size", "")
        if params.get("sort", browse.DEFAULT_SORT) not in browse.SORTS:
            raise Rejected(f"Unknown sort {params['sort']!r}; choose one of: {', '.join(browse.SORTS)}")
        if size and not size.isdigit():
            raise Rejected(f"page_size must be a whole number, got {size!r}")
        self.request = request
        self.page = browse.page(queryset, sort=params.get("sort", browse.DEFAULT_SORT), cursor=params.get("cursor"),
                                size=int(size) if size.isdigit() else browse.PAGE_SIZE)
        return self.page.images

    def get_paginated_response(self, data):
        next_url = None
        if self.page.next_cursor:
            next_url = self.request.build_absolute_uri(
                _with(self.request.query_params, cursor=self.page.next_cursor))
        return Response({"next": next_url, "previous": None, "sort": self.page.sort, "results": data})

    def get_paginated_response_schema(self, schema):
        return {"type": "object", "required": ["results"], "properties": {
            "next": {"type": "string", "nullable": True, "format": "uri"},
            "previous": {"type": "string", "nullable": True},
            "sort": {"type": "string"},
            "results": schema,
        }}

    def get_schema_operation_parameters(self, view):
        return [
            {"name": "sort", "in": "query", "required": False,
             "schema": {"type": "string", "enum": list(browse.SORTS)}},
            {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}},
            {"name": "page_size", "in": "query", "required": False, "schema": {"type": "integer"}},
        ]


def _with(params, **changes) -> str:
    query = params.copy()
    for name, value in changes.items():
        query[name] = value
    return "?" + query.urlencode()


class ImageViewSet(images_api.ImageViewSet):
    """Upload images, read each one's latest prediction, and browse them all with filters."""

    filter_backends = [DjangoFilterBackend]
    filterset_class = browse.ImageFilter
    pagination_class = KeysetPagination

    def get_serializer_class(self):
        return BrowseImageSerializer if self.action == "list" else super().get_serializer_class()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return Image.objects.none()
        return browse.images_for(self.request.user)

    def list(self, request, *args, **kwargs):
        # A filter given empty is a mistake over the API (the page leaves empty fields out of its URLs).
        empty = [n for n in browse.ImageFilter.base_filters if n in request.query_params and
                 not any(v.strip() for v in request.query_params.getlist(n))]
        if empty:
            raise Rejected(f"Empty filter{'s' if len(empty) > 1 else ''} {', '.join(empty)}: leave a filter out "
                           "to not filter by it.")
        images = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        # One query and one serializer for the page's predictions: a serializer per image costs
        # milliseconds each (DRF builds its fields per instance).
        latest = list(browse.latest_predictions([i.id for i in images]).values())
        serialized = {p.image_id: data for p, data in zip(latest, PagePredictionSerializer(latest, many=True).data)}
        context = {**self.get_serializer_context(), "latest_predictions": serialized}
        return self.get_paginated_response(BrowseImageSerializer(images, many=True, context=context).data)


class BulkRequestSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=bulk_actions.ACTIONS, help_text=(
        "label (reviewers: one annotation per image, the bulk action its source), review (send to the review "
        "queue), predict (a batch prediction job), export (CSV of the selection's labels)"))
    ids = serializers.ListField(child=serializers.IntegerField(), required=False)
    filter = serializers.CharField(required=False, allow_blank=True,
                                   help_text="the browser's query string: every image it matches")
    label = serializers.CharField(required=False, help_text="for label: a class name or `other`")


@extend_schema(request=BulkRequestSerializer, responses=inline_serializer("BulkResult", {
    "action": serializers.CharField(), "done": serializers.ListField(child=serializers.IntegerField()),
    "skipped": serializers.DictField(child=serializers.CharField()), "message": serializers.CharField(),
    "source": serializers.CharField(), "job": serializers.IntegerField(allow_null=True),
}))
@api_view(["POST"])
def bulk(request):
    """Act on a selection of images (ids, or everything a browser filter matches)."""
    body = BulkRequestSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    data = body.validated_data
    ids = bulk_actions.selection(user=request.user, ids=data.get("ids"), filter_query=data.get("filter"))
    result = bulk_actions.bulk_run(user=request.user, action=data["action"], image_ids=ids, label=data.get("label"))
    if result.content is not None:
        response = HttpResponse(result.content, content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="selection.csv"'
        return response
    return Response({"action": result.action, "done": result.done, "skipped": result.skipped,
                     "message": result.message, "source": result.source,
                     "job": result.job.id if result.job else None})


@extend_schema(request=None, responses=AnnotationSerializer)
@api_view(["POST"])
def bulk_undo(request, image_id: int):
    """Undo your bulk label on one image."""
    undo = bulk_actions.bulk_label_undo(user=request.user, image_id=image_id)
    return Response(AnnotationSerializer(undo).data)


class SimilarSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    similarity = serializers.FloatField(help_text="cosine of the embeddings")
    label = serializers.CharField(help_text="current label; empty: unlabelled")
    predicted = serializers.CharField()
    thumbnail_url = serializers.CharField()
    page_url = serializers.CharField()


@extend_schema(parameters=[OpenApiParameter("k", int, description="how many (default SIMILAR_DEFAULT_K, at most 100)")],
               responses=SimilarSerializer(many=True))
@api_view(["GET"])
def image_similar(request, image_id: int):
    """The images nearest to this one by the production backbone's embedding (exact cosine), best
    first, with their labels; an uploader gets their own images only."""
    image = get_object_or_404(Image, id=image_id)
    if not image.is_visible_to(request.user):
        raise PermissionDenied("This image was uploaded by someone else.")
    return Response(similar.similar_to_image(user=request.user, image=image, k=request.query_params.get("k")))


@extend_schema(request={"multipart/form-data": inline_serializer("SimilarQuery", {
    "file": serializers.FileField(), "k": serializers.IntegerField(required=False)})},
    responses=SimilarSerializer(many=True))
@api_view(["POST"])
@parser_classes([MultiPartParser])
def photo_similar(request):
    """The stored images nearest to an uploaded photo; the photo itself is not stored."""
    upload = request.FILES.get("file")
    if upload is None:
        raise Rejected("Send a photo as `file`.")
    try:
        _, vector = predictions.photo_embedding(upload.read())
    except InvalidImage as e:
        raise Rejected(f"That file is not a photo we can read: {e}") from None
    return Response(similar.similar_to_vector(user=request.user, vector=vector, k=request.data.get("k")))


class NotDuplicateSerializer(serializers.Serializer):
    image = serializers.IntegerField(source="image_id")
    other = serializers.IntegerField(source="other_id", help_text="the earlier image it was linked to")
    user = serializers.CharField(source="user.username", allow_null=True, help_text="the reviewer who said so")
    created = serializers.DateTimeField()


@extend_schema(request=None, responses={201: NotDuplicateSerializer})
@api_view(["POST"])
def not_duplicate(request, image_id: int):
    """A reviewer marks the image as not a duplicate of the image it is linked to: the link is
    removed (the near_duplicate filter and snapshots stop grouping them), recorded with who and
    when, and never made again for that pair. Not flagged: 400; not a reviewer: 403."""
    mark = summaries.near_duplicate_dismiss(user=request.user, image_id=image_id)
    return Response(NotDuplicateSerializer(mark).data, status=201)
