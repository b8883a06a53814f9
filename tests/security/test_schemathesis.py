"""schemathesis over the API's own OpenAPI schema, in process: a few generated requests per
operation, as staff (every operation reachable), and not one answer may be a server error."""

import json
import os

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error

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
def test_no_generated_request_is_a_server_error(case, species, staff_token, in_process):
    response = case.call(headers={"Authorization": f"Token {staff_token}"})
    case.validate_response(response, checks=[not_a_server_error])
