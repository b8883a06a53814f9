"""Fault benchmark: uploads while Redis or PostgreSQL fail, workers killed; nothing lost, nothing done twice.

    python -m benchmarks.faults [--uploads 100] [--outage-s 20] [--scenarios redis,postgres,worker,training]
        [--check]

Starts its own redis-server (a free loopback port; killed and restarted by its PID only), a
database of its own on the local PostgreSQL (created and dropped), gunicorn, a Celery worker on
both queues and Celery beat (which runs the recovery loop: classifier.recovery), all through
animalsite.processes. Each scenario sends its uploads spread over the fault's window:
  redis     Redis killed (SIGKILL, no persistence: its queue is lost) for --outage-s seconds;
  postgres  every connection to the database terminated (pg_terminate_backend) once a second
            for --terminate-s seconds, during uploads and as many review decisions;
  worker    a batch job (a zip of --batch-images photos, in chunks of 20) with the worker's pool
            process killed (SIGKILL, as the out-of-memory killer does) while it runs a chunk;
  training  labelled photos (--train-per-class of --train-classes classes) through a label import, a head
            training run through the API, the whole worker (its pool too) killed while the run
            runs and started again as a supervisor would: the run must be retried once and
            register exactly one version (two count as done twice), recovery timed from the restart.
Then it waits until every image stored during the scenario is predicted, at most --settle-s
after the fault ends. Per scenario: requests sent, answered 2xx/4xx/5xx (500 and 503 apart, and
500s in HTML), work lost (stored, never predicted), done twice (two predictions by one version)
and seconds from the fault's end to the last stored image predicted. The last line is JSON,
with the totals and bar_ok: 0 lost, 0 done twice, 0 HTML 500s, every scenario recovered within
BAR_RECOVERY_S; with --check the exit status is 1 when the bar does not hold (CI: .ci/run).
"""

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from animalsite import processes
from benchmarks.fault_scenarios import (
    batch_job_with_pool_killed,
    postgres_terminations,
    redis_outage,
    role_token,
    scenario,
    send_uploads,
    training_with_worker_killed,
    wait_for_work,
)
from benchmarks.harness import class_photos, interleaved_photos, postgres_create, postgres_drop
from benchmarks.http_client import free_port, healthy
from benchmarks.http_latency import app_setup, make_payloads

REPO = Path(__file__).resolve().parent.parent

DEFAULT_DATA = REPO / "demo" / "photos"
SCENARIOS = "redis,postgres,worker,training"
BAR_RECOVERY_S = 60.0


# --- the servers -----------------------------------------------------------------------------

class Redis:
    """Our own redis-server, without persistence: a kill loses what it held, as it would."""

    def __init__(self, port: int, folder: Path):
        self.port, self.folder, self.process = port, folder, None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.folder)]
        self.process = processes.start(command, log_path=self.folder / f"redis-{time.monotonic_ns()}.log",
                                       name="redis")
        processes.wait_ready(self.process, lambda: _answers(self.port), timeout=20)

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)  # this PID only: the server we started
        self.process.wait(timeout=10)


def _answers(port: int) -> bool:
    import redis

    try:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping()
    except redis.RedisError:
        return False


def start_worker(env: dict, var: Path) -> subprocess.Popen:
    """The worker on both queues (not waited for); each start logs to its own file."""
    queues = [env["INFERENCE_QUEUE"], env["TRAINING_QUEUE"]]
    return processes.start(processes.worker_command(queues, concurrency=1, name="faults"), env=env,
                           log_path=var / f"worker-{time.monotonic_ns()}.log", name="worker")


def start_app(env: dict, var: Path, port: int) -> list[subprocess.Popen]:
    web = processes.start(processes.web_command(f"127.0.0.1:{port}", workers=2, access_log=False), env=env,
                          log_path=var / "web.log", name="web")
    worker = start_worker(env, var)
    beat = processes.start(processes.beat_command(var / "beat-schedule"), env=env, log_path=var / "beat.log",
                           name="beat")
    processes.wait_ready(worker, timeout=180)
    processes.wait_ready(web, lambda: healthy(port), timeout=60)
    return [web, worker, beat]


# --- main ------------------------------------------------------------------------------------

def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=100, help="uploads per scenario")
    parser.add_argument("--outage-s", type=float, default=20.0, help="seconds Redis stays down")
    parser.add_argument("--terminate-s", type=float, default=5.0, help="seconds of terminated connections")
    parser.add_argument("--settle-s", type=float, default=120.0, help="how long after a fault work may take")
    parser.add_argument("--scenarios", default=SCENARIOS, help=f"comma-separated, of: {SCENARIOS}")
    parser.add_argument("--batch-images", type=int, default=400, help="photos in the worker scenario's batch job")
    parser.add_argument("--train-classes", type=int, default=4, help="classes labelled for the training scenario")
    parser.add_argument("--train-per-class", type=int, default=6, help="labelled photos per class (about)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                                 "postgres://postgres@127.0.0.1:5432/postgres"),
                        help="a PostgreSQL server; a database is created there for the run and dropped after")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageFolder of photos")
    parser.add_argument("--check", action="store_true", help="exit 1 when the bar does not hold (CI)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, media)")
    return parser.parse_args(argv)


def totals(results: dict, wanted: int) -> dict:
    recoveries = [r["recovery_s"] for r in results.values()]
    total = {"scenarios": results, "lost": sum(r["lost"] for r in results.values()),
             "done_twice": sum(r["done_twice"] for r in results.values()),
             "html_500": sum(r["html_500"] for r in results.values()),
             "max_recovery_s": None if None in recoveries else max(recoveries, default=0.0)}
    total["bar_ok"] = (len(results) == wanted and total["lost"] == total["done_twice"] == total["html_500"] == 0
                       and total["max_recovery_s"] is not None and total["max_recovery_s"] <= BAR_RECOVERY_S)
    return total


def _interrupted(*_):
    raise KeyboardInterrupt  # SIGTERM: stop the servers and drop the database on the way out


def environment(var: Path, database_url: str, redis: Redis) -> dict:
    suffix = secrets.token_hex(4)
    return dict(os.environ, VAR_DIR=str(var), MEDIA_ROOT=str(var / "media"), MODELS_ROOT=str(var / "models"),
                DATABASE_URL=database_url, CELERY_BROKER_URL=f"redis://127.0.0.1:{redis.port}/0",
                INFERENCE_QUEUE=f"faults-inference-{suffix}", TRAINING_QUEUE=f"faults-training-{suffix}",
                DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="127.0.0.1,localhost",
                RETRAIN_AFTER_LABELS="0", PYTHONUNBUFFERED="1", DJANGO_SETTINGS_MODULE="animalsite.settings",
                INFERENCE_CHUNK_SIZE="20", TRAINING_MIN_PER_CLASS="3")


def run_scenarios(args, wanted: list[str], *, env: dict, var: Path, redis: Redis, database: str,
                  children: list) -> dict:
    """Each scenario in turn on the running app (children: web, worker, beat; a restarted worker
    replaces its entry, so that the caller stops the one running)."""
    app = app_setup(env)
    uploads, photos = args.uploads * (len(wanted) + 1), interleaved_photos(args.data)
    classes = sorted(class_photos(args.data))
    payloads = make_payloads(photos, uploads + args.batch_images + args.train_per_class * len(classes))
    labelled = [p for p in payloads[uploads + args.batch_images:]
                if p[0].rsplit("-", 1)[0] in classes[:args.train_classes]]
    port = free_port()
    children += start_app(env, var, port)
    warm = send_uploads(port, app["token"], payloads[:2], 1.0)  # the worker loads its model
    wait_for_work(0, time.monotonic(), 180)
    print(f"warm-up: {warm}", flush=True)
    faults = {"redis": ("redis_killed", redis_outage(redis, args.outage_s), args.outage_s + 8),
              "postgres": ("postgres_terminated", postgres_terminations(args.database_url, database,
                                                                        args.terminate_s), args.terminate_s + 8)}
    results = {}
    for n, key in enumerate(wanted, start=1):
        if key == "worker":
            results["worker_killed"] = batch_job_with_pool_killed(
                children[1], port, role_token("reviewer"), payloads[uploads:uploads + args.batch_images],
                args.settle_s)
        elif key == "training":
            results["training_worker_killed"], children[1] = training_with_worker_killed(
                children[1], lambda: start_worker(env, var), port, role_token("reviewer"),
                labelled, args.settle_s)
        else:
            name, fault, spread_s = faults[key]
            batch = payloads[n * args.uploads:(n + 1) * args.uploads]
            annotator = role_token("annotator") if key == "postgres" else None  # decisions too
            results[name] = scenario(name, fault, port=port, token=app["token"], payloads=batch, spread_s=spread_s,
                                     settle_s=args.settle_s, annotator=annotator)
    return results


def main(argv=None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(wanted) - set(SCENARIOS.split(","))
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}; choose from {SCENARIOS}")
    var = Path(tempfile.mkdtemp(prefix="animalsite-faults-"))
    redis = Redis(free_port(), var)
    children, database = [], None
    try:
        redis.start()
        database_url, database = postgres_create(args.database_url, "animalsite_faults")
        env = environment(var, database_url, redis)
        results = run_scenarios(args, wanted, env=env, var=var, redis=redis, database=database, children=children)
        result = totals(results, len(wanted))
        print(json.dumps(result), flush=True)
        if args.check and not result["bar_ok"]:
            print(f"the fault bar does not hold: lost {result['lost']}, done twice {result['done_twice']}, "
                  f"HTML 500s {result['html_500']}, slowest recovery {result['max_recovery_s']} s "
                  f"(bar: 0, 0, 0, <= {BAR_RECOVERY_S:.0f} s)", file=sys.stderr)
            return 1
        return 0
    finally:
        processes.stop(*children, timeout=15)
        if redis.process is not None and redis.process.poll() is None:
            redis.kill()
        from django.db import connections

        connections.close_all()
        if database:
            postgres_drop(args.database_url, database)
        if not args.keep:
            subprocess.run(["rm", "-rf", str(var)], check=False)
        else:
            print(f"kept {var}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
