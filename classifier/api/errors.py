"""The one place API errors are shaped: every error answer is `{"detail": ...}` JSON.

Services raise classifier.errors.Rejected (400) or Conflict (409) with a message for the person
who asked; DRF's own errors (validation, authentication, permission, not found) keep DRF's
handling.
"""

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..errors import Conflict, Rejected


def exception_handler(exc, context):
    if isinstance(exc, Conflict):
        return Response(exc.body(), status=status.HTTP_409_CONFLICT)
    if isinstance(exc, Rejected):
        return Response(exc.body(), status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)
