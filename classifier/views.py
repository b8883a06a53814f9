from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, render

from . import selectors
from .models import Image


@login_required
def upload(request):
    recent = selectors.images_visible_to(request.user).order_by("-created", "-id")[:24]
    ctx = {
        "recent": recent,
        "production": selectors.production_model(),
        "species": selectors.active_species(),
        "max_bytes": settings.UPLOAD_MAX_BYTES,
    }
    return render(request, "classifier/upload.html", ctx)


@login_required
def image_detail(request, image_id: int):
    image = get_object_or_404(Image, id=image_id)
    if not image.is_visible_to(request.user):
        raise Http404("No such image")
    ctx = {"image": image, "prediction": image.latest_prediction(), "species": selectors.active_species()}
    return render(request, "classifier/image_detail.html", ctx)


def healthz(request):
    """Liveness for load balancers and compose: the database answers."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as e:  # report, don't raise: this page must answer
        return JsonResponse({"ok": False, "database": str(e)}, status=503)
    return JsonResponse({"ok": True, "model": getattr(selectors.production_model(), "name", None)})
