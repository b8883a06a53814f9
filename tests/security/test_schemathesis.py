"""schemathesis over the API's own OpenAPI schema, in process: a few generated requests per
operation, as staff (every operation reachable): no server error, and every answer (status code,
content type, body) as the schema documents it."""

import json
import os

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from animalsite.wsgi import application


@pytest.fixture
def in_process():
    """The WSGI app in this test's transaction: like Django's test client, keep the connection
    open between requests."""
    for signal in (signals.request_started, signals.request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (signals.request_started, signals.request_finished):
        signal.connect(close_old_connections)


def load_schema():
    """The schema exactly as /api/schema/ serves it, generated here (no request, no database)."""
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    document = json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
    loaded = schemathesis.openapi.from_dict(document)
    loaded.app = application
    return loaded


@pytest.fixture
def staff_token(staff) -> str:
    return Token.objects.create(user=staff).key


schema = load_schema()


@schema.parametrize()
@settings(max_examples=int(os.environ.get("SCHEMATHESIS_EXAMPLES", "4")), deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_generated_requests_get_documented_answers_and_no_server_error(case, species, staff_token, in_process):
    response = case.call(headers={"Authorization": f"Token {staff_token}"})
    # Every check (server errors, status codes and bodies as documented, ...) but two: a
    # generated string is "valid" for a multipart file field, and the API rightly refuses it;
    # ignored_auth takes our fixed staff token for generated auth (tests/labeling/
    # test_permission_matrix.py checks every route for every role, anonymous included).
    case.validate_response(response, excluded_checks=[positive_data_acceptance, ignored_auth])
