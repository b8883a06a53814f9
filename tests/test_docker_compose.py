"""docker-compose.yml and the Dockerfile describe a stack that our code can actually run.

No Docker engine is needed: the compose file is parsed (with compose's ${VAR} interpolation)
and every command, URL and setting it names is checked against the project itself.
"""

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from urllib.parse import urlsplit

import dj_database_url
import pytest
from celery.app.utils import find_app
from celery.beat import Scheduler
from celery.utils.imports import symbol_by_name
from django.core.management import get_commands
from django.http.request import validate_host
from django.urls import resolve

from tests.compose import (
    APP_SERVICES,
    BACKENDS,
    CELERY_SERVICES,
    DOCKERIGNORE,
    LONG_RUNNING_APP_SERVICES,
    OPERATOR_ENV,
    WORKERS,
    MissingVariable,
    command_of,
    dockerfile_instructions,
    environment_of,
    healthcheck_argv,
    load_compose,
    option,
    parse_duration,
)
from tests.helpers import REPO


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose(OPERATOR_ENV)


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def settings_in(services, tmp_path_factory):
    """Our settings module as a service's container would load it, in a fresh interpreter.

    A subprocess, because Django's settings in this process are already configured (and the
    test fixtures override the queue names).
    """
    code = """
import json
from animalsite import settings as s
db = s.DATABASES["default"]
print(json.dumps({
    "DEBUG": s.DEBUG,
    "ALLOWED_HOSTS": s.ALLOWED_HOSTS,
    "DATABASE": {k: db.get(k) for k in ("ENGINE", "HOST", "PORT", "NAME", "USER", "PASSWORD")},
    "CELERY_BROKER_URL": s.CELERY_BROKER_URL,
    "CELERY_BROKER_TRANSPORT_OPTIONS": s.CELERY_BROKER_TRANSPORT_OPTIONS,
    "CELERY_TASK_ACKS_LATE": s.CELERY_TASK_ACKS_LATE,
    "CELERY_BEAT_SCHEDULER": s.CELERY_BEAT_SCHEDULER,
    "INFERENCE_QUEUE": s.INFERENCE_QUEUE,
    "TRAINING_QUEUE": s.TRAINING_QUEUE,
    "MEDIA_ROOT": str(s.MEDIA_ROOT),
    "VAR_DIR": str(s.VAR_DIR),
    "WSGI_APPLICATION": s.WSGI_APPLICATION,
}))
"""
    var_dir = tmp_path_factory.mktemp("compose-var")

    @cache
    def load(name: str) -> dict:
        env = environment_of(services[name])
        # The image's /var/lib/animalsite exists only in the image; settings create VAR_DIR.
        env["VAR_DIR"] = str(var_dir)
        env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
        env["DJANGO_SETTINGS_MODULE"] = "animalsite.settings"
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"settings refused {name}'s environment:\n{done.stderr}"
        return json.loads(done.stdout.strip().splitlines()[-1])

    return load


# --- the services -------------------------------------------------------------------------


def test_it_describes_every_service_of_the_real_stack(services):
    assert set(BACKENDS + APP_SERVICES) <= set(services)


def test_it_runs_every_app_service_from_the_projects_image(services):
    for name in APP_SERVICES:
        assert services[name]["build"] == ".", name
        assert services[name]["image"] == services["web"]["image"], name


def test_it_requires_the_operator_to_set_a_secret_key():
    with pytest.raises(MissingVariable, match="SECRET_KEY"):
        load_compose({})


# --- commands point at real entry points ----------------------------------------------------


def test_it_migrates_with_the_projects_manage_py(services):
    argv = command_of(services["migrate"])
    assert argv[:3] == ["python", "manage.py", "migrate"]
    assert "--no-input" in argv
    assert (REPO / "manage.py").is_file()
    assert get_commands()["migrate"] == "django.core"


# Building the WSGI handler starts whitenoise, which warns that collectstatic has not run here.
@pytest.mark.filterwarnings("ignore:No directory at:UserWarning")
def test_it_points_gunicorn_at_the_wsgi_application(services, settings_in):
    argv = command_of(services["web"])
    assert argv[0] == "gunicorn"
    module_path, _, attribute = next(arg for arg in argv[1:] if re.fullmatch(r"[\w.]+:\w+", arg)).partition(":")
    module = importlib.import_module(module_path)
    assert callable(getattr(module, attribute))
    assert f"{module_path}.{attribute}" == settings_in("web")["WSGI_APPLICATION"]
    assert option(argv, "--bind", "-b") == "0.0.0.0:8000"


def test_it_sizes_gunicorn_from_the_environment():
    web = load_compose({**OPERATOR_ENV, "WEB_WORKERS": "7"})["services"]["web"]
    assert option(command_of(web), "--workers", "-w") == "7"


def test_it_points_celery_at_the_animalsite_app(services):
    from animalsite.celery import app

    for name in CELERY_SERVICES:
        argv = command_of(services[name])
        assert argv[0] == "celery", name
        assert find_app(option(argv, "-A", "--app")) is app, name


def test_it_runs_each_worker_on_its_queue_from_the_settings(services, settings_in):
    inference = option(command_of(services["worker-inference"]), "-Q", "--queues")
    training = option(command_of(services["worker-training"]), "-Q", "--queues")
    assert inference == settings_in("worker-inference")["INFERENCE_QUEUE"] == "inference"
    assert training == settings_in("worker-training")["TRAINING_QUEUE"] == "training"


def test_it_has_a_worker_for_every_queue_a_task_is_routed_to(services, settings_in, settings):
    from animalsite.celery import app, route_task

    defaults = settings_in("worker-inference")
    settings.INFERENCE_QUEUE = defaults["INFERENCE_QUEUE"]
    settings.TRAINING_QUEUE = defaults["TRAINING_QUEUE"]
    consumed = set()
    for name in WORKERS:
        consumed.update(option(command_of(services[name]), "-Q", "--queues").split(","))
    app.loader.import_default_modules()
    ours = [name for name in app.tasks if not name.startswith("celery.")]
    assert ours, "no tasks registered"
    for task_name in ours:
        route = route_task(task_name, (), {}, {}) or {"queue": defaults["INFERENCE_QUEUE"]}
        assert route["queue"] in consumed, task_name


def test_it_schedules_beat_from_the_database(services, settings_in):
    argv = command_of(services["beat"])
    assert argv[3] == "beat"
    scheduler = option(argv, "--scheduler", "-S")
    cls = symbol_by_name(scheduler)
    assert issubclass(cls, Scheduler)
    assert cls.__name__ == "DatabaseScheduler"
    assert scheduler == settings_in("beat")["CELERY_BEAT_SCHEDULER"]


# --- workers --------------------------------------------------------------------------------


def test_it_reserves_an_nvidia_gpu_for_the_training_worker(services):
    devices = services["worker-training"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and int(d.get("count", 0)) >= 1 and "gpu" in d.get("capabilities", [])
        for d in devices
    )


def test_it_trains_one_model_at_a_time_per_training_worker(services):
    argv = command_of(services["worker-training"])
    assert option(argv, "--concurrency", "-c") == "1"


def test_it_sizes_the_inference_worker_from_the_environment(services):
    assert option(command_of(services["worker-inference"]), "--concurrency", "-c") == "2"
    scaled = load_compose({**OPERATOR_ENV, "INFERENCE_CONCURRENCY": "8"})["services"]["worker-inference"]
    assert option(command_of(scaled), "--concurrency", "-c") == "8"


def test_it_gives_workers_time_to_finish_acks_late_tasks(services, settings_in):
    for name in WORKERS:
        assert settings_in(name)["CELERY_TASK_ACKS_LATE"] is True
        # Docker's default is 10 s, after which the task would be killed mid-run.
        assert parse_duration(services[name]["stop_grace_period"]) >= 60, name


def test_it_pings_each_worker_by_its_own_node_name(services):
    for name in WORKERS:
        argv = healthcheck_argv(services[name])
        assert argv[0] == "CMD-SHELL", name  # $HOSTNAME is expanded by the shell
        words = shlex.split(argv[1])
        assert words[:5] == ["celery", "-A", "animalsite", "inspect", "ping"], name
        assert option(words, "-d", "--destination") == "celery@$HOSTNAME", name


# --- health and start-up order --------------------------------------------------------------


def test_it_healthchecks_postgres_redis_and_web(services):
    assert "pg_isready" in " ".join(healthcheck_argv(services["postgres"]))
    assert healthcheck_argv(services["redis"])[-2:] == ["redis-cli", "ping"]
    assert healthcheck_argv(services["web"])[:2] == ["CMD", "python"]


def test_it_checks_web_health_at_the_projects_healthz_view(services):
    argv = healthcheck_argv(services["web"])
    source = argv[argv.index("-c") + 1]
    compile(source, "<healthcheck>", "exec")
    url = re.search(r"https?://[^'\"\s]+", source).group(0)
    parts = urlsplit(url)
    assert (parts.hostname, parts.port) == ("127.0.0.1", 8000)
    match = resolve(parts.path)
    assert match.url_name == "healthz"
    assert match.func.__module__ == "classifier.views"


def test_it_allows_the_host_the_web_healthcheck_asks_for(services, settings_in):
    argv = healthcheck_argv(services["web"])
    url = re.search(r"https?://[^'\"\s]+", argv[argv.index("-c") + 1]).group(0)
    assert validate_host(urlsplit(url).hostname, settings_in("web")["ALLOWED_HOSTS"])
    # ... also when the operator names the public host.
    web = load_compose({**OPERATOR_ENV, "ALLOWED_HOSTS": "animals.example.com"})["services"]["web"]
    hosts = environment_of(web)["ALLOWED_HOSTS"].split(",")
    assert "animals.example.com" in hosts and validate_host("127.0.0.1", hosts)


def test_it_starts_app_services_once_postgres_and_redis_are_healthy(services):
    for name in APP_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
    for name in LONG_RUNNING_APP_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name


def test_it_runs_migrate_once_and_the_rest_until_stopped(services):
    assert services["migrate"]["restart"] == "no"
    for name in BACKENDS + LONG_RUNNING_APP_SERVICES:
        assert services[name]["restart"] == "unless-stopped", name


# --- environment ----------------------------------------------------------------------------


def test_it_gives_settings_the_postgres_service_as_database(services, settings_in):
    for name in APP_SERVICES:
        url = environment_of(services[name])["DATABASE_URL"]
        assert urlsplit(url).scheme in ("postgres", "postgresql"), name
        parsed = dj_database_url.parse(url)
        assert parsed["ENGINE"] == "django.db.backends.postgresql"
        postgres = environment_of(services["postgres"])
        assert (parsed["HOST"], parsed["PORT"]) == ("postgres", 5432)
        assert (parsed["NAME"], parsed["USER"], parsed["PASSWORD"]) == (
            postgres["POSTGRES_DB"],
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
        )
        assert settings_in(name)["DATABASE"]["ENGINE"] == "django.db.backends.postgresql", name


def test_it_gives_settings_the_redis_service_as_broker(services, settings_in):
    for name in APP_SERVICES:
        url = environment_of(services[name])["CELERY_BROKER_URL"]
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname, parts.port) == ("redis", "redis", 6379), name
        loaded = settings_in(name)
        assert loaded["CELERY_BROKER_URL"] == url
        assert loaded["CELERY_BROKER_TRANSPORT_OPTIONS"]["visibility_timeout"] > 0


def test_it_runs_app_services_with_debug_off(services, settings_in):
    for name in APP_SERVICES:
        assert settings_in(name)["DEBUG"] is False, name


def test_it_keeps_queued_tasks_across_a_redis_restart(services):
    argv = command_of(services["redis"])
    assert option(argv, "--appendonly") == "yes"
    assert any(str(v).endswith(":/data") for v in services["redis"]["volumes"])


def test_it_keeps_database_and_queue_in_named_volumes(compose, services):
    assert any(str(v).startswith("pgdata:/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    assert {"pgdata", "redisdata", "media"} <= set(compose["volumes"])


def test_it_shares_one_media_volume_at_media_root(compose, services, settings_in):
    assert "media" in compose["volumes"]
    for name in ("web",) + WORKERS:
        media_root = settings_in(name)["MEDIA_ROOT"]
        assert f"media:{media_root}" in services[name]["volumes"], name


# --- the image ------------------------------------------------------------------------------


def test_it_builds_from_python_311_slim():
    assert ("FROM", "python:3.11-slim") in dockerfile_instructions()


def test_it_serves_the_wsgi_application_by_default():
    run = [args for instruction, args in dockerfile_instructions() if instruction in ("CMD", "ENTRYPOINT")]
    assert run, "the Dockerfile has no CMD or ENTRYPOINT"
    assert "animalsite.wsgi" in " ".join(run)
    assert "gunicorn" in run[-1]


def test_it_runs_the_image_as_a_non_root_user():
    users = [args for instruction, args in dockerfile_instructions() if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_it_installs_the_project_with_pip():
    runs = [args for instruction, args in dockerfile_instructions() if instruction == "RUN"]
    assert any(re.search(r"pip install (--no-deps )?\.(\s|$|\[)", run) for run in runs)


def test_it_collects_static_files_at_build_with_debug_off_and_a_dummy_key():
    runs = [args for instruction, args in dockerfile_instructions() if instruction == "RUN"]
    collect = [run for run in runs if "collectstatic" in run]
    assert collect
    assert "DEBUG=0" in collect[0] and "SECRET_KEY=" in collect[0]


def test_it_keeps_state_under_the_same_var_dir_in_image_and_compose(services):
    env_lines = " ".join(args for instruction, args in dockerfile_instructions() if instruction == "ENV")
    assert "VAR_DIR=/var/lib/animalsite" in env_lines
    for name in APP_SERVICES:
        assert environment_of(services[name])["VAR_DIR"] == "/var/lib/animalsite", name


def test_it_leaves_local_state_out_of_the_build_context():
    ignored = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".venv", "var", ".git", ".pytest_cache"} <= ignored
    assert ignored & {"__pycache__", "**/__pycache__"}


# --- model versions in the object store (issue 13) ------------------------------------------


def test_it_keeps_model_versions_in_the_s3_store_and_shares_no_model_volume(compose, services):
    assert "models" not in compose["volumes"]
    create_bucket = " ".join(services["minio-buckets"]["entrypoint"])
    for name in LONG_RUNNING_APP_SERVICES:
        env = environment_of(services[name])
        assert env["MODELS_STORAGE"] == "storages.backends.s3.S3Storage", name
        options = json.loads(env["MODELS_STORAGE_OPTIONS"])
        assert urlsplit(options["endpoint_url"]).hostname == "minio", name
        assert f"store/{options['bucket_name']}" in create_bucket
        minio = environment_of(services["minio"])
        assert options["access_key"] == minio["MINIO_ROOT_USER"], name
        assert options["secret_key"] == minio["MINIO_ROOT_PASSWORD"], name
        assert services[name]["depends_on"]["minio-buckets"]["condition"] == "service_completed_successfully", name
        assert not any(str(v).split(":")[1:2] == [env["MODELS_ROOT"]] for v in services[name].get("volumes", [])), name


def test_its_model_store_settings_load_in_the_image(services):
    """Settings accept the compose environment, and the store class is the s3 extra's (in the image)."""
    env = os.environ | {k: str(v) for k, v in environment_of(services["worker-training"]).items()}
    code = ("from django.conf import settings; import django; django.setup(); "
            "print(settings.STORAGES['models']['BACKEND'], settings.STORAGES['models']['OPTIONS']['bucket_name'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["storages.backends.s3.S3Storage", "animalsite-models"], out.stderr
