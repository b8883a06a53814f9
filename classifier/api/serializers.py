from django.conf import settings
from rest_framework import serializers

from ..models import Image, ModelVersion, Prediction, Species


class ScoredSerializer(serializers.Serializer):
    label = serializers.CharField()
    p = serializers.FloatField()


class ModelVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["id", "name", "kind", "backbone", "status", "created", "promoted"]


class PredictionSerializer(serializers.ModelSerializer):
    top = ScoredSerializer(many=True)
    model_version = ModelVersionSerializer()

    class Meta:
        model = Prediction
        fields = ["id", "label", "confidence", "top", "model_version", "backend", "model_ms", "latency_ms", "created"]


class ImageSerializer(serializers.ModelSerializer):
    prediction = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    preview_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    page_url = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = [
            "id", "sha256", "status", "error", "format", "width", "height", "size_bytes", "created",
            "url", "preview_url", "thumbnail_url", "page_url", "prediction",
        ]

    def get_prediction(self, image) -> PredictionSerializer(allow_null=True):
        prediction = image.latest_prediction()
        return PredictionSerializer(prediction).data if prediction else None

    def get_url(self, image) -> str:
        return image.original.url

    def get_preview_url(self, image) -> str:
        return image.preview.url

    def get_thumbnail_url(self, image) -> str:
        return image.thumbnail.url

    def get_page_url(self, image) -> str:
        return image.get_absolute_url()


class UploadResultSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    created = serializers.BooleanField(help_text="false: you had uploaded this content before")
    filename = serializers.CharField()
    url = serializers.CharField(help_text="the API URL to poll for the prediction")


class UploadRequestSerializer(serializers.Serializer):
    files = serializers.ListField(
        child=serializers.FileField(), help_text=f"one or more image files (at most {settings.UPLOAD_MAX_FILES})"
    )


class SpeciesSerializer(serializers.ModelSerializer):
    class Meta:
        model = Species
        fields = ["id", "name", "display_name", "imagenet_classes", "active"]
