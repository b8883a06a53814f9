"""Web, worker and beat in one terminal, for the embedded default. Ctrl-C stops all three."""

import json
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand


def _die_with_parent():
    # If this command is killed without a chance to clean up, the kernel stops the children
    # too (Linux only; elsewhere they are stopped by the normal shutdown path).
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Command(BaseCommand):
    help = "Start gunicorn, a Celery worker (both queues) and Celery beat; stop them all on Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args, host, port, web_workers, **options):
        bindir = os.path.dirname(sys.executable)
        queues = f"{settings.INFERENCE_QUEUE},{settings.TRAINING_QUEUE}"
        commands = {
            "web": [os.path.join(bindir, "gunicorn"), "animalsite.wsgi", "--bind", f"{host}:{port}",
                    "--workers", str(web_workers), "--threads", "4", "--access-logfile", "-"],
            "worker": [os.path.join(bindir, "celery"), "-A", "animalsite", "worker", "-Q", queues,
                       "--concurrency", "1", "--loglevel", "INFO", "--hostname", "embedded@%h"],
            "beat": [os.path.join(bindir, "celery"), "-A", "animalsite", "beat", "--loglevel", "INFO",
                     "--schedule", str(settings.VAR_DIR / "celerybeat-schedule")],
        }
        processes = {
            name: subprocess.Popen(cmd, cwd=settings.BASE_DIR, preexec_fn=_die_with_parent)
            for name, cmd in commands.items()
        }
        self._announce(host, port)

        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        try:
            while not stopping:
                for name, process in processes.items():
                    if process.poll() is not None:
                        self.stderr.write(f"{name} exited with code {process.returncode}; stopping the others")
                        exit_code = process.returncode or 1
                        stopping = True
                time.sleep(0.5)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.terminate()
            deadline = time.monotonic() + 15
            for process in processes.values():
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
        self.stdout.write("stopped web, worker and beat")
        sys.exit(exit_code)

    def _announce(self, host, port):
        store = settings.VAR_DIR / "demo_logins.json"
        logins = json.loads(store.read_text()) if store.exists() else {}
        lines = [f"animalsite is running at http://{host}:{port}/  (Ctrl-C stops web, worker and beat)"]
        lines += [f"  login: {user} / {password}" for user, password in logins.items()]
        self.stdout.write(self.style.SUCCESS("\n".join(lines)))
