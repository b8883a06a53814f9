"""Settings come from the environment and fail at start-up, by name, on bad values."""

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


def start_django(**env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"],
        cwd=REPO, env=full_env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(
    "env, named",
    [
        ({"UPLOAD_MAX_BYTES": "twenty"}, "UPLOAD_MAX_BYTES"),
        ({"UPLOAD_MAX_PIXELS": "5"}, "UPLOAD_MAX_PIXELS"),
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"CELERY_BROKER_URL": "amqp://guest@localhost//"}, "CELERY_BROKER_URL"),
        ({"DATABASE_URL": "nosuchdb://x"}, "DATABASE_URL"),
        ({"MEDIA_STORAGE_OPTIONS": "{not json"}, "MEDIA_STORAGE_OPTIONS"),
        ({"DEBUG": "0", "SECRET_KEY": ""}, "SECRET_KEY"),
    ],
)
def test_it_refuses_to_start_on_a_bad_value(env, named):
    result = start_django(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert named in result.stderr


def test_it_starts_with_production_values():
    result = start_django(DEBUG="0", SECRET_KEY="x" * 50, ALLOWED_HOSTS="example.org",
                          DATABASE_URL="postgres://u@db:5432/animals", CELERY_BROKER_URL="redis://redis:6379/0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
