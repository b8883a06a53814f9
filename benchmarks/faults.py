"""Fault benchmark: uploads while Redis or PostgreSQL fail; nothing lost, nothing done twice.

    python -m benchmarks.faults [--uploads 30] [--outage-s 20] [--scenarios redis,postgres]

Starts its own redis-server (a free loopback port; killed and restarted by its PID only), a
database of its own on the local PostgreSQL (created and dropped), gunicorn, a Celery worker on
both queues and Celery beat (which runs the recovery loop: classifier.recovery), all through
animalsite.processes. Each scenario sends its uploads spread over the fault's window:
  redis     Redis killed (SIGKILL, no persistence: its queue is lost) for --outage-s seconds;
  postgres  every connection to the database terminated (pg_terminate_backend) once a second
            for --terminate-s seconds, during uploads and as many review decisions;
  worker    a batch job (a zip of --batch-images photos, in chunks of 20) with the worker's pool
            process killed (SIGKILL, as the out-of-memory killer does) while it runs a chunk.
Then it waits until every image stored during the scenario is predicted, at most --settle-s
after the fault ends. Per scenario: requests sent, answered 2xx/4xx/5xx (500 and 503 apart, and
500s in HTML), work lost (stored, never predicted), done twice (two predictions by one version)
and seconds from the fault's end to the last stored image predicted. The last line is JSON.
"""

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from animalsite import processes
from benchmarks.harness import interleaved_photos, postgres_create, postgres_drop
from benchmarks.http_client import Client, free_port, healthy, multipart
from benchmarks.http_latency import app_setup, make_payloads

REPO = Path(__file__).resolve().parent.parent

DEFAULT_DATA = REPO / "demo" / "photos"


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


def start_app(env: dict, var: Path, port: int) -> list[subprocess.Popen]:
    queues = [env["INFERENCE_QUEUE"], env["TRAINING_QUEUE"]]
    web = processes.start(processes.web_command(f"127.0.0.1:{port}", workers=2, access_log=False), env=env,
                          log_path=var / "web.log", name="web")
    worker = processes.start(processes.worker_command(queues, concurrency=1, name="faults"), env=env,
                             log_path=var / "worker.log", name="worker")
    beat = processes.start(processes.beat_command(var / "beat-schedule"), env=env, log_path=var / "beat.log",
                           name="beat")
    processes.wait_ready(worker, timeout=180)
    processes.wait_ready(web, lambda: healthy(port), timeout=60)
    return [web, worker, beat]


# --- one scenario ----------------------------------------------------------------------------

def send_uploads(port: int, token: str, payloads: list, spread_s: float) -> list[dict]:
    """The payloads, one every spread_s / n seconds, from two clients; each answer's kind."""
    answers, lock = [], threading.Lock()
    gap = spread_s / max(len(payloads), 1)
    started = time.monotonic()

    def client(part: list):
        http = Client(port, token, timeout=30)
        for index, payload in part:
            time.sleep(max(0.0, started + index * gap - time.monotonic()))
            body, content_type = multipart(*payload)
            try:
                status, data = http.request("POST", "/api/images/", body, {"Content-Type": content_type})
                answer = {"status": status, "json": data[:1] in (b"{", b"[")}
            except OSError as e:
                answer = {"status": 0, "json": False, "error": f"{type(e).__name__}: {e}"}
            with lock:
                answers.append(answer)
        http.close()

    indexed = list(enumerate(payloads))
    threads = [threading.Thread(target=client, args=(indexed[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def send_decisions(port: int, token: str, count: int, spread_s: float) -> tuple[list[dict], list[int]]:
    """Review decisions ("reject": valid for any image), one every spread_s / count seconds:
    each answer's kind, and the ids of the annotations the 2xx answers returned."""
    http, answers, stored = Client(port, token, timeout=30), [], []
    started, gap = time.monotonic(), spread_s / max(count, 1)
    for n in range(count):
        time.sleep(max(0.0, started + n * gap - time.monotonic()))
        try:
            status, data = http.request("GET", "/api/review/next/?count=1")
            items = json.loads(data) if status == 200 else []
            if status == 200 and items:
                body = json.dumps({"token": items[0]["token"], "action": "reject",
                                   "based_on": items[0].get("based_on")}).encode()
                status, data = http.request("POST", "/api/review/decisions/", body,
                                            {"Content-Type": "application/json"})
                if status == 201:
                    stored.append(json.loads(data)["id"])
            answers.append({"status": status, "json": data[:1] in (b"{", b"[")})
        except OSError as e:
            answers.append({"status": 0, "json": False, "error": f"{type(e).__name__}: {e}"})
    http.close()
    return answers, stored


def wait_for_work(since_id: int, fault_end: float, settle_s: float) -> dict:
    """Polls until every image stored since since_id is predicted, at most settle_s after the fault."""
    from django.db import close_old_connections, connection

    from classifier.models import Image, Prediction

    pending, done_at = None, None
    while time.monotonic() < fault_end + settle_s:
        close_old_connections()
        try:
            pending = Image.objects.filter(id__gt=since_id).exclude(status__in=["predicted", "failed"]).count()
        except Exception:  # the database itself still away
            connection.close()
            time.sleep(0.5)
            continue
        if pending == 0:
            done_at = time.monotonic()
            break
        time.sleep(0.5)
    stored = Image.objects.filter(id__gt=since_id)
    versions = Prediction.objects.filter(image__in=stored).values("image_id", "model_version_id")
    pairs = [(v["image_id"], v["model_version_id"]) for v in versions]
    return {"stored": stored.count(), "lost": pending if pending is not None else stored.count(),
            "done_twice": len(pairs) - len(set(pairs)),
            "recovery_s": round(max(0.0, done_at - fault_end), 1) if done_at else None}


def summarize(answers: list[dict], work: dict) -> dict:
    count = lambda test: sum(1 for a in answers if test(a))  # noqa: E731
    return {
        "sent": len(answers), "2xx": count(lambda a: 200 <= a["status"] < 300),
        "4xx": count(lambda a: 400 <= a["status"] < 500),
        "5xx": {"500": count(lambda a: a["status"] == 500), "503": count(lambda a: a["status"] == 503),
                "other": count(lambda a: a["status"] >= 500 and a["status"] not in (500, 503))},
        "html_500": count(lambda a: a["status"] >= 500 and a["status"] != 503 and not a["json"]),
        "no_answer": count(lambda a: a["status"] == 0), **work,
    }


def scenario(name: str, fault, *, port: int, token: str, payloads: list, spread_s: float, settle_s: float,
             annotator: str | None = None) -> dict:
    """Uploads (and review decisions, given an annotator's token) spread over spread_s while
    fault() runs; fault returns when it ends."""
    from classifier.models import Image
    from labeling.models import Annotation

    since_id = Image.objects.order_by("-id").values_list("id", flat=True).first() or 0
    answers, decided = [], []
    # The fault in this thread: a server it restarts dies with the thread that started it (PDEATHSIG).
    threads = [threading.Thread(target=lambda: answers.extend(send_uploads(port, token, payloads, spread_s)))]
    if annotator:
        threads.append(threading.Thread(target=lambda: decided.append(
            send_decisions(port, annotator, len(payloads), spread_s))))
    for thread in threads:
        thread.start()
    fault_end = fault()
    for thread in threads:
        thread.join()
    work = wait_for_work(since_id, fault_end, settle_s)
    if decided:
        decision_answers, stored = decided[0]
        answers += decision_answers
        work["decisions_2xx_lost"] = len(stored) - Annotation.objects.filter(id__in=stored).count()
        work["lost"] += work["decisions_2xx_lost"]
    result = summarize(answers, work)
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


def redis_outage(redis: Redis, outage_s: float):
    def fault() -> float:
        time.sleep(2)
        redis.kill()
        time.sleep(outage_s)
        redis.start()
        return time.monotonic()
    return fault


def postgres_terminations(admin_url: str, database: str, seconds: float):
    def fault() -> float:
        import psycopg

        time.sleep(2)
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for _ in range(int(seconds)):
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_backend_pid()", (database,))
                time.sleep(1)
        return time.monotonic()
    return fault


def batch_job_with_pool_killed(worker: subprocess.Popen, port: int, token: str, payloads: list,
                               settle_s: float) -> dict:
    """A zip job through the API; the worker's pool process killed once a chunk runs."""
    import io
    import zipfile

    from django.db import close_old_connections

    from classifier.models import InferenceChunk, InferenceJob, Prediction

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in payloads:
            z.writestr(name, data)
    body, content_type = multipart("batch.zip", archive.getvalue())
    body = body.replace(b'name="files"', b'name="file"', 1)
    boundary = content_type.split("boundary=")[1]
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="source"\r\n\r\nzip\r\n'.encode() + body
    status, data = Client(port, token, timeout=60).request("POST", "/api/jobs/", body, {"Content-Type": content_type})
    answers = [{"status": status, "json": data[:1] in (b"{", b"[")}]
    job_id = json.loads(data)["id"]
    deadline = time.monotonic() + settle_s
    while not InferenceChunk.objects.filter(job_id=job_id, status="running").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no chunk of job {job_id} started")
        time.sleep(0.2)
    time.sleep(1.0)  # mid-chunk
    killed = [pid for pid in processes.descendants(worker.pid) if pid != worker.pid]
    for pid in killed:
        os.kill(pid, signal.SIGKILL)  # the pool processes of the worker we started
    fault_end, done_at = time.monotonic(), None
    while time.monotonic() < fault_end + settle_s:
        close_old_connections()
        if InferenceJob.objects.filter(id=job_id, status__in=["done", "failed", "cancelled"]).exists():
            done_at = time.monotonic()
            break
        time.sleep(0.5)
    job = InferenceJob.objects.get(id=job_id)
    predicted = Prediction.objects.filter(model_version=job.version, image_id__in=job.image_ids).count()
    written = sum(InferenceChunk.objects.filter(job=job).values_list("written", flat=True))
    work = {"stored": job.total, "lost": job.total - predicted, "done_twice": max(0, written - predicted),
            "killed_pids": len(killed), "job_status": job.status,
            "recovery_s": round(done_at - fault_end, 1) if done_at else None}
    result = summarize(answers, work)
    print(f"worker_killed: {json.dumps(result)}", flush=True)
    return result


def role_token(role: str) -> str:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from labeling.roles import role_group

    user = get_user_model().objects.create_user(f"faults-{role}", password=secrets.token_urlsafe(12))
    user.groups.add(role_group(role))
    return Token.objects.create(user=user).key


# --- main ------------------------------------------------------------------------------------

def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=100, help="uploads per scenario")
    parser.add_argument("--outage-s", type=float, default=20.0, help="seconds Redis stays down")
    parser.add_argument("--terminate-s", type=float, default=5.0, help="seconds of terminated connections")
    parser.add_argument("--settle-s", type=float, default=120.0, help="how long after a fault work may take")
    parser.add_argument("--scenarios", default="redis,postgres,worker", help="comma-separated: redis, postgres, worker")
    parser.add_argument("--batch-images", type=int, default=400, help="photos in the worker scenario's batch job")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                                 "postgres://postgres@127.0.0.1:5432/postgres"),
                        help="a PostgreSQL server; a database is created there for the run and dropped after")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageFolder of photos")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, media)")
    return parser.parse_args(argv)


def totals(results: dict) -> dict:
    recoveries = [r["recovery_s"] for r in results.values()]
    return {"scenarios": results, "lost": sum(r["lost"] for r in results.values()),
            "done_twice": sum(r["done_twice"] for r in results.values()),
            "html_500": sum(r["html_500"] for r in results.values()),
            "max_recovery_s": None if None in recoveries else max(recoveries, default=0.0)}


def _interrupted(*_):
    raise KeyboardInterrupt  # SIGTERM: stop the servers and drop the database on the way out


def main(argv=None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    var = Path(tempfile.mkdtemp(prefix="animalsite-faults-"))
    redis = Redis(free_port(), var)
    children, database = [], None
    try:
        redis.start()
        database_url, database = postgres_create(args.database_url, "animalsite_faults")
        suffix = secrets.token_hex(4)
        env = dict(os.environ, VAR_DIR=str(var), MEDIA_ROOT=str(var / "media"), MODELS_ROOT=str(var / "models"),
                   DATABASE_URL=database_url, CELERY_BROKER_URL=f"redis://127.0.0.1:{redis.port}/0",
                   INFERENCE_QUEUE=f"faults-inference-{suffix}", TRAINING_QUEUE=f"faults-training-{suffix}",
                   DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="127.0.0.1,localhost",
                   RETRAIN_AFTER_LABELS="0", PYTHONUNBUFFERED="1", DJANGO_SETTINGS_MODULE="animalsite.settings",
                   INFERENCE_CHUNK_SIZE="20")
        app = app_setup(env)
        payloads = make_payloads(interleaved_photos(args.data), args.uploads * (len(wanted) + 1))
        port = free_port()
        children = start_app(env, var, port)
        warm = send_uploads(port, app["token"], payloads[:2], 1.0)  # the worker loads its model
        wait_for_work(0, time.monotonic(), 180)
        print(f"warm-up: {warm}", flush=True)
        faults = {"redis": ("redis_killed", redis_outage(redis, args.outage_s), args.outage_s + 8),
                  "postgres": ("postgres_terminated", postgres_terminations(args.database_url, database,
                                                                            args.terminate_s), args.terminate_s + 8)}
        results = {}
        for n, key in enumerate(wanted, start=1):
            if key == "worker":
                count = args.uploads * (len(wanted) + 1) + args.batch_images
                batch = make_payloads(interleaved_photos(args.data), count)
                results["worker_killed"] = batch_job_with_pool_killed(
                    children[1], port, role_token("reviewer"), batch[-args.batch_images:], args.settle_s)
                continue
            name, fault, spread_s = faults[key]
            batch = payloads[n * args.uploads:(n + 1) * args.uploads]
            annotator = role_token("annotator") if key == "postgres" else None  # decisions too
            results[name] = scenario(name, fault, port=port, token=app["token"], payloads=batch, spread_s=spread_s,
                                     settle_s=args.settle_s, annotator=annotator)
        print(json.dumps(totals(results)), flush=True)
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
