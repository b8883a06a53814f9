"""Login throttling, deployment checks and the Content-Security-Policy."""

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO
from tests.test_settings import start_django

pytestmark = pytest.mark.django_db

PRODUCTION = {"DEBUG": "0", "SECRET_KEY": "k3y-" + "x7Qp9-Lr2" * 6, "ALLOWED_HOSTS": "animals.example.org",
              "HTTPS": "1"}


def log_in(client, username: str, password: str):
    return client.post("/accounts/login/", {"username": username, "password": password})


def test_wrong_passwords_lock_the_login_for_a_while(client, alice, bob, settings):
    assert log_in(client, "alice", "wrong").status_code == 200  # the form again, with an error
    assert log_in(client, "alice", "alice-password-1").status_code == 302  # under the limit: it works
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, "alice", "guess")
    locked = log_in(client, "alice", "alice-password-1")
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    assert log_in(client, "bob", "bob-password-1").status_code == 302  # others are not locked out


def test_check_deploy_passes_with_production_settings():
    # The README's production variables (besides the database and broker URLs, which check does not read).
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO, env={**os.environ, **PRODUCTION},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_https_settings_follow_one_switch():
    result = start_django("SESSION_COOKIE_SECURE, settings.SECURE_SSL_REDIRECT, settings.SECURE_HSTS_SECONDS",
                          **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True True 31536000"
    plain = start_django("SESSION_COOKIE_SECURE, settings.SECURE_SSL_REDIRECT", DEBUG="0", SECRET_KEY="x" * 50)
    assert plain.stdout.strip() == "False False"  # plain HTTP (compose, the embedded default) keeps working


def test_pages_carry_a_content_security_policy(client, alice):
    client.force_login(alice)
    policy = client.get("/")["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert "<script>" not in docs.content.decode()  # no inline script: the policy lets the docs run
