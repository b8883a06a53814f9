"""Web, workers and beat in one terminal, for the embedded default. Ctrl-C stops them all.

One worker per queue, so a training run never holds up a prediction: the inference worker
takes uploads at once while the training worker, at a lower CPU priority, trains.
"""

import json
import signal
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from animalsite import processes
from classifier import jobs, registry


class Command(BaseCommand):
    help = ("Start gunicorn, a Celery worker for the inference queue, another (at a lower CPU priority) for "
            "the training queue, and Celery beat; stop them all on Ctrl-C.")

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args, host, port, web_workers, **options):
        # A changed DEFAULT_BACKBONE (or backbone preprocessing): a zero-shot champion is replaced and
        # its promotion re-predicts; under a trained champion the new features are stored by a job.
        # Either job is run by the inference worker started below.
        registry.backbone_sync()
        jobs.job_embed()
        children = [
            processes.start(processes.web_command(f"{host}:{port}", workers=web_workers), name="web"),
            processes.start(processes.worker_command([settings.INFERENCE_QUEUE], name="inference", quiet=False),
                            name="inference worker"),
            processes.start(processes.worker_command([settings.TRAINING_QUEUE], name="training", quiet=False),
                            name="training worker", niceness=processes.TRAINING_NICENESS),
            processes.start(processes.beat_command(settings.VAR_DIR / "celerybeat-schedule"), name="beat"),
        ]
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
                for process in children:
                    if process.poll() is not None:
                        self.stderr.write(f"{process.name} exited with code {process.returncode}; stopping the others")
                        exit_code = process.returncode or 1
                        stopping = True
                time.sleep(0.5)
        finally:
            processes.stop(*children, timeout=15)
        self.stdout.write("stopped web, workers and beat")
        sys.exit(exit_code)

    def _announce(self, host, port):
        store = settings.VAR_DIR / "demo_logins.json"
        logins = json.loads(store.read_text()) if store.exists() else {}
        lines = [f"animalsite is running at http://{host}:{port}/  (Ctrl-C stops web, workers and beat)"]
        lines += [f"  login: {user} / {password}" for user, password in logins.items()]
        self.stdout.write(self.style.SUCCESS("\n".join(lines)))
