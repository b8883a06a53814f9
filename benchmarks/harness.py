"""What the benchmarks that start a whole installation share: the photos of an ImageFolder, a
throwaway installation (a temporary VAR_DIR, its own database and broker queues, Django set up
in this process with the same settings as its servers), a Celery worker started and stopped
through animalsite.processes (the harness `run_all` and the tests use), and URLs fit to print.
"""

import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from animalsite import processes
from classifier.ml.images import IMAGE_SUFFIXES

REPO = processes.REPO
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "caltech101-animals"


# --- photos ---------------------------------------------------------------------------------

def class_photos(root: Path) -> dict[str, list[Path]]:
    """ImageFolder: {class folder name: its photos, sorted by name}, classes sorted by name."""
    if not root.is_dir():
        raise SystemExit(f"{root} is not a folder (expected an ImageFolder: class/photo.jpg)")
    return {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            for d in sorted(root.iterdir()) if d.is_dir()}


def interleaved_photos(root: Path) -> list[Path]:
    """Every photo of the ImageFolder, interleaved across classes, so a prefix covers them all."""
    by_class = list(class_photos(root).values())
    files = []
    for i in range(max(map(len, by_class), default=0)):
        files += [c[i] for c in by_class if i < len(c)]
    if not files:
        raise SystemExit(f"no photos under {root} (expected an ImageFolder: class/photo.jpg)")
    return files


class BenchmarkFailed(RuntimeError):
    """The benchmark cannot go on; the message says why."""


# --- a throwaway installation ---------------------------------------------------------------

class Installation:
    """A temporary VAR_DIR (media, models, embedding cache, ONNX exports, logs), its own database
    (a SQLite file there, or a database created on the PostgreSQL server of database_url and
    dropped by close()) and its own queue names (suffixed; with forget_redis, close() deletes
    those keys from that Redis database and nothing else). close() stops the processes it
    started, closes this process's database connections and removes the folder unless keep."""

    def __init__(self, prefix: str, *, database_url: str | None = None, redis_url: str | None = None,
                 forget_redis: bool = True, keep: bool = False):
        self.prefix, self.server_url, self.redis_url, self.keep = prefix, database_url, redis_url, keep
        self.forget_redis = forget_redis and bool(redis_url)
        self.var = Path(tempfile.mkdtemp(prefix=f"animalsite-{prefix}-"))
        self.suffix = secrets.token_hex(4)
        self.pg_name: str | None = None
        self.processes: list = []
        self.database_url = f"sqlite:///{self.var / 'db.sqlite3'}"

    def create_database(self) -> str:
        if self.server_url:
            name = f"animalsite_{self.prefix}".replace("-", "_")
            self.database_url, self.pg_name = postgres_create(self.server_url, name)
        return self.database_url

    def env(self, **settings: str) -> dict:
        """The servers' environment (and this process's, once django_setup() has run)."""
        var = self.var
        return dict(
            os.environ, VAR_DIR=str(var), MEDIA_ROOT=str(var / "media"), MODELS_ROOT=str(var / "models"),
            DATABASE_URL=self.database_url, CELERY_BROKER_URL=self.redis_url or "filesystem://",
            DJANGO_SETTINGS_MODULE="animalsite.settings",
            INFERENCE_QUEUE=f"{self.prefix}-inference-{self.suffix}",
            TRAINING_QUEUE=f"{self.prefix}-training-{self.suffix}",
            DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="127.0.0.1,localhost",
            PYTHONUNBUFFERED="1",
        ) | settings

    def start(self, name: str, command: list[str], env: dict, *, new_session: bool = False, niceness: int = 0):
        """A server in the repository root, logging to VAR_DIR/NAME.log; close() stops it."""
        process = processes.start(command, env=env, log_path=self.var / f"{name}.log", name=name,
                                  new_session=new_session, niceness=niceness)
        self.processes.append(process)
        return process

    def start_worker(self, env: dict, queues: list[str], *, name: str = "worker", timeout: float = 120,
                     concurrency: int = 1, new_session: bool = False, niceness: int = 0):
        """One `celery worker` (prefork) on these queues, as run_all starts it; returns once it consumes."""
        command = processes.worker_command(queues, concurrency=concurrency, name=f"{self.prefix}-{name}")
        process = self.start(name, command, env, new_session=new_session, niceness=niceness)
        return processes.wait_ready(process, timeout=timeout)

    def close(self) -> None:
        """Each step runs even if one before it fails (settings that did not load, a server gone)."""
        steps = [lambda: processes.stop(*self.processes, timeout=30), self._close_connections]
        if self.pg_name:
            steps.append(lambda: postgres_drop(self.server_url, self.pg_name))
        if self.forget_redis:
            steps.append(lambda: redis_forget(self.redis_url, self.suffix))
        for step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - the rest of the cleanup goes on
                print(f"cleanup: {type(e).__name__}: {e}", file=sys.stderr)
        if self.keep:
            print(f"kept {self.var}", file=sys.stderr)
        else:
            shutil.rmtree(self.var, ignore_errors=True)

    @staticmethod
    def _close_connections() -> None:
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()


def django_setup(env: dict) -> None:
    """This process takes the servers' settings, sets Django up and migrates the database."""
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def wait_until(what: str, done, timeout: float, worker, every: float = 0.2):
    """done()'s first true value, polled every `every` s; BenchmarkFailed if the worker exits or
    the time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = done()
        if value:
            return value
        if worker.poll() is not None:
            raise BenchmarkFailed(f"the worker exited (code {worker.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise BenchmarkFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def queued_messages(names: list[str]) -> int:
    """Messages waiting in these queues of the broker (not counting the one the worker holds)."""
    from animalsite.celery import app

    with app.connection_for_write() as connection:
        channel = connection.default_channel  # kombu's virtual channel (filesystem, Redis): no declare needed
        return sum(channel._size(name) for name in names)


# --- servers' state -------------------------------------------------------------------------

def postgres_create(url: str, prefix: str) -> tuple[str, str]:
    """A new database on the server of `url`; (its URL, its name)."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment)), name


def postgres_drop(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redact(url: str) -> str:
    """url without its user, password, query and fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))


def redis_forget(url: str, suffix: str) -> None:
    """Deletes the keys of one run's queues (lists and bindings), nothing else."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    keys = list(client.scan_iter(match=f"*{suffix}*"))
    if keys:
        client.delete(*keys)
    client.close()
