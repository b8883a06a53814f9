"""The database or the broker away answers 503 with a Retry-After, never an HTML 500: JSON
`{"detail", "retry_after"}` under /api/ (classifier/api/errors.py for DRF views,
animalsite/errors.py for the rest), a short page in the browser."""

import pytest
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.db import InterfaceError, OperationalError
from django.test import Client
from kombu.exceptions import OperationalError as BrokerError

from classifier import selectors, uploads
from tests.helpers import make_image_bytes

pytestmark = pytest.mark.django_db


def database_away(*args, **kwargs):
    raise OperationalError("server closed the connection unexpectedly")


def broker_away(*args, **kwargs):
    raise BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


@pytest.fixture
def browser(alice):
    client = Client(raise_request_exception=False)  # what a real server answers, not the exception
    client.force_login(alice)
    return client


def assert_api_503(response, what: str) -> None:
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert what in body["detail"]
    assert body["retry_after"] == int(response["Retry-After"]) > 0


@pytest.mark.parametrize("error, what", [(database_away, "database"), (broker_away, "task queue")])
def test_an_api_request_answers_503_json_when_the_database_or_the_broker_is_away(
        browser, monkeypatch, error, what):
    monkeypatch.setattr(uploads, "images_upload", error)
    response = browser.post("/api/images/", {"files": [make_image_bytes()]})
    assert_api_503(response, what)


def test_a_page_answers_a_friendly_503_page_when_the_database_is_away(browser, monkeypatch, species):
    monkeypatch.setattr(selectors, "production_model", database_away)
    response = browser.get("/")
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert b"Back in a moment" in response.content and b"database" in response.content
    assert int(response["Retry-After"]) > 0


def test_the_database_away_in_a_middleware_answers_503_json_under_api_and_a_page_elsewhere(browser, monkeypatch):
    def lost_connection(self, request):
        raise InterfaceError("connection already closed")

    monkeypatch.setattr(AuthenticationMiddleware, "process_request", lost_connection)
    assert_api_503(browser.get("/api/images/"), "database")
    page = browser.get("/")
    assert page.status_code == 503 and b"Back in a moment" in page.content


def test_any_other_server_error_under_api_is_json(browser, monkeypatch):
    def bug(self, request):
        raise RuntimeError("a bug")

    monkeypatch.setattr(AuthenticationMiddleware, "process_request", bug)
    response = browser.get("/api/images/")
    assert response.status_code == 500
    assert response.json()["detail"].startswith("Server error")
