"""Reads for the classifier app."""

from django.db.models import QuerySet

from .models import Image, ModelVersion, Species


def production_model() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()


def images_visible_to(user) -> QuerySet[Image]:
    images = Image.objects.all()
    if not (user.is_staff or user.has_perm("classifier.view_image")):
        images = images.filter(uploads__user=user).distinct()
    return images


def active_species() -> QuerySet[Species]:
    return Species.objects.filter(active=True)
