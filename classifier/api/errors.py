"""The one place API errors are shaped: every error answer is `{"detail": ...}` JSON.

Services raise classifier.errors.Rejected (400) or Conflict (409) with a message for the person
who asked; the database or the broker away answers 503 `{"detail", "retry_after"}` with a
Retry-After header; DRF's own errors (validation, authentication, permission, not found) keep
DRF's handling, and a validation error that names only fields (a serializer's, a filter's) gains
a `detail` that sums them up. Errors outside DRF views are shaped by animalsite.errors with the
same body.
"""

from django.conf import settings
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from ..errors import Conflict, Rejected, unavailable_body, unavailable_errors


def unavailable_response(exc) -> Response:
    retry_after = settings.SERVICE_RETRY_AFTER_S
    return Response(unavailable_body(exc, retry_after), status=status.HTTP_503_SERVICE_UNAVAILABLE,
                    headers={"Retry-After": str(retry_after)})


def exception_handler(exc, context):
    if isinstance(exc, Conflict):
        return Response(exc.body(), status=status.HTTP_409_CONFLICT)
    if isinstance(exc, Rejected):
        return Response(exc.body(), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, unavailable_errors()):
        try:
            set_rollback()
        except unavailable_errors():
            pass  # the connection is gone; so is its transaction
        return unavailable_response(exc)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" not in response.data:
        response.data = {"detail": _summary(response.data), **response.data}
    return response


def _summary(fields: dict) -> str:
    def text(errors) -> str:
        return " ".join(str(e) for e in errors) if isinstance(errors, list | tuple) else str(errors)

    return "; ".join(f"{name}: {text(errors)}" for name, errors in fields.items())
