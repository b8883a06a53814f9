"""Errors outside DRF views: the database or the broker away answers 503 (a short page in the
browser, `{"detail", "retry_after"}` JSON under /api/), never Django's HTML 500.

ServiceUnavailableMiddleware catches what a view raises; server_error (handler500) catches what
a middleware raised (a session or user lookup with the database away) and keeps every other
error under /api/ JSON too.
"""

import logging
import sys

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.views import defaults

from classifier.errors import unavailable_body, unavailable_errors

logger = logging.getLogger(__name__)


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def unavailable(request, exc) -> HttpResponse:
    retry_after = settings.SERVICE_RETRY_AFTER_S
    body = unavailable_body(exc, retry_after)
    if _is_api(request):
        response = JsonResponse(body, status=503)
    else:
        # No base template: it reads the user, and the database may be what is away.
        response = HttpResponse(render_to_string("503.html", body), status=503)
    response["Retry-After"] = str(retry_after)
    return response


class ServiceUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exc):
        if isinstance(exc, unavailable_errors()):
            logger.warning("%s %s: %s: %s", request.method, request.path, type(exc).__name__, exc)
            return unavailable(request, exc)
        return None


def server_error(request, *args, **kwargs):
    """handler500: called while the exception is being handled, so sys.exc_info() names it."""
    exc = sys.exc_info()[1]
    if exc is not None and isinstance(exc, unavailable_errors()):
        return unavailable(request, exc)
    if _is_api(request):
        return JsonResponse({"detail": "Server error: the request could not be completed."}, status=500)
    return defaults.server_error(request, *args, **kwargs)
