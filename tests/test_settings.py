"""Settings come from the environment and fail at start-up, by name, on bad values."""

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


def start_django(show: str = "DEBUG", **env) -> subprocess.CompletedProcess:
    """Django set up in a fresh process with env (and none of the suite's own services); prints settings.<show>."""
    ours = ("DATABASE_URL", "CELERY_BROKER_URL", "SHARED_CACHE_URL")
    full_env = {k: v for k, v in os.environ.items() if k not in ours}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c",
         f"import django; django.setup(); from django.conf import settings; print(settings.{show})"],
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
        ({"SHARED_CACHE_URL": "memcached://localhost:11211"}, "SHARED_CACHE_URL"),
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


def test_the_shared_cache_follows_the_broker_unless_told_otherwise():
    def shared_location(**env):
        result = start_django("CACHES['shared']['LOCATION']", **env)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert shared_location(CELERY_BROKER_URL="redis://redis:6379/0") == "redis://redis:6379/0"
    assert shared_location(CELERY_BROKER_URL="redis://redis:6379/0",
                           SHARED_CACHE_URL="redis://cache:6379/3") == "redis://cache:6379/3"
    assert shared_location().endswith("cache")  # files under VAR_DIR, beside the filesystem broker
