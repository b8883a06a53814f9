"""`manage.py run_all` (what `make run` starts): one worker per queue, the training one at a lower
CPU priority, so a training run never holds up a prediction."""

import os
import signal
import socket
import sys

import pytest
from django.conf import settings
from django.db import connection

from animalsite import processes
from tests.helpers import wait_for, worker_database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def celery_workers(root: int) -> dict[str, list[int]]:
    """queue -> the niceness of every worker process (master and pool) under root."""
    found: dict[str, list[int]] = {}
    for pid in processes.descendants(root):
        args = cmdline(pid)
        if "worker" in args and "-Q" in args:
            found.setdefault(args[args.index("-Q") + 1], []).append(os.getpriority(os.PRIO_PROCESS, pid))
    return found


def test_run_all_serves_each_queue_from_its_own_worker_and_trains_at_a_lower_priority(queue_names, tmp_path):
    env = os.environ | queue_names | {
        "DATABASE_URL": worker_database_url(connection.settings_dict), "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "VAR_DIR": str(settings.VAR_DIR), "MEDIA_ROOT": str(tmp_path / "media"), "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "run_all.log"
    run_all = processes.start([sys.executable, "manage.py", "run_all", "--port", str(free_port()),
                               "--web-workers", "1"], env=env, log_path=log, name="run_all")
    try:
        wait_for(lambda: log.read_text().count(processes.WORKER_READY) >= 2 or run_all.poll() is not None,
                 timeout=180, what="both workers ready")
        assert run_all.poll() is None, log.read_text()
        workers = celery_workers(run_all.pid)
        own = os.getpriority(os.PRIO_PROCESS, 0)

        assert sorted(workers) == sorted(queue_names.values())
        assert set(workers[queue_names["INFERENCE_QUEUE"]]) == {own}
        assert set(workers[queue_names["TRAINING_QUEUE"]]) == {min(19, own + processes.TRAINING_NICENESS)}

        run_all.send_signal(signal.SIGTERM)
        assert run_all.wait(timeout=60) == 0
        assert "stopped web, workers and beat" in log.read_text()
    finally:
        processes.stop(run_all)
