"""More like this, as a person sees it: the nearest images by embedding (classifier.similarity)
that the user may see, each with its current label and production prediction."""

from django.conf import settings

from classifier import similarity
from classifier.models import Image, Upload

from .models import ImageSummary

MAX_K = 100


def _visible_ids(user) -> list[int] | None:
    """None: every image (annotators, reviewers, staff); else the uploader's own."""
    if user.is_staff or user.has_perm("classifier.view_image"):
        return None
    return list(Upload.objects.filter(user=user).values_list("image_id", flat=True).distinct())


def _described(user, hits: list[tuple[int, float]]) -> list[dict]:
    summaries = {s.image_id: s for s in ImageSummary.objects.filter(image_id__in=[i for i, _ in hits])}
    images = {i.id: i for i in Image.objects.filter(id__in=[i for i, _ in hits])}
    out = []
    for image_id, score in hits:
        image, summary = images.get(image_id), summaries.get(image_id)
        if image is None:
            continue  # deleted since the matrix was read
        out.append({
            "id": image_id, "similarity": round(score, 6), "label": summary.label if summary else "",
            "predicted": summary.predicted if summary else "", "thumbnail_url": image.thumbnail.url,
            "page_url": image.get_absolute_url(),
        })
    return out


def _k(k) -> int:
    return max(1, min(int(k or settings.SIMILAR_DEFAULT_K), MAX_K))


def similar_to_image(*, user, image: Image, k=None) -> list[dict]:
    vector = similarity.image_embedding(image.id)
    hits = similarity.nearest(vector, k=_k(k), exclude=image.id, among=_visible_ids(user))
    return _described(user, hits)


def similar_to_vector(*, user, vector, k=None) -> list[dict]:
    return _described(user, similarity.nearest(vector, k=_k(k), among=_visible_ids(user)))
