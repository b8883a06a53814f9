"""404 for URLs that match no route: JSON under /api/ (a malformed id such as /api/images/abc/
matches no route, since every id in a path is an integer), Django's page elsewhere."""

from django.http import JsonResponse
from django.views import defaults


def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)
