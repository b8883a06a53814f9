"""The fault benchmark's scenarios (benchmarks.faults starts the servers and runs them in turn).

Each sends its requests through the HTTP API while its fault happens, then measures from the
database what became of the work: stored but never done (lost), done twice, and the seconds from
the fault's end to the work's end.
"""

import io
import json
import os
import secrets
import signal
import subprocess
import threading
import time
import zipfile

from animalsite import processes
from benchmarks.http_client import Client, multipart


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


def redis_outage(redis, outage_s: float):
    """redis: the benchmark's own server (kill() and start())."""
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
    from django.db import close_old_connections

    from classifier.models import InferenceChunk, InferenceJob, Prediction

    status, data = post_zip(Client(port, token, timeout=60), "/api/jobs/", payloads, {"source": "zip"})
    answers = [answer_kind(status, data)]
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


def kill_tree(process: subprocess.Popen) -> int:
    """SIGKILL to a server we started and every process under it (its pool), as the out-of-memory
    killer or a crash of the node would do; how many processes."""
    pids = processes.descendants(process.pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)
    return len(pids)


def training_with_worker_killed(worker: subprocess.Popen, restart, port: int, token: str, labelled: list,
                                settle_s: float) -> tuple[dict, subprocess.Popen]:
    """Labels through a label import (labelled: (CLASS-N.jpg, bytes)), then a head training run
    through the API; once it runs, the worker and its pool are killed and restart() starts the
    worker again, as its supervisor would. The run must be retried once and register one version.
    Recovery: from the restart to the run's end. Returns the result and the worker now running."""
    from django.db import close_old_connections

    from classifier.models import Image, ModelVersion, TrainingRun
    from labeling.models import ImportJob

    http = Client(port, token, timeout=60)
    members = [(f"{name.rsplit('-', 1)[0]}/{name}", data) for name, data in labelled]
    status, data = post_zip(http, "/api/imports/", members, {})
    answers = [answer_kind(status, data)]
    job = _poll(lambda: ImportJob.objects.filter(id=json.loads(data)["id"], status__in=["done", "failed"]).first(),
                settle_s * 2, "the label import")
    if job.status != ImportJob.Status.DONE:
        raise RuntimeError(f"the label import ended {job.status}: {job.error}")
    # Labels are given to predicted photos: the head is fitted on the features their predictions stored.
    _poll(lambda: not Image.objects.exclude(status__in=["predicted", "failed"]).exists(), settle_s,
          "the labelled photos' predictions")
    status, data = http.request("POST", "/api/training/runs/", json.dumps({"mode": "head"}).encode(),
                                {"Content-Type": "application/json"})
    answers.append(answer_kind(status, data))
    if status != 201:
        raise RuntimeError(f"the head run was not started: {status} {data[:300]!r}")
    run_id = json.loads(data)["id"]
    run = _poll(lambda: TrainingRun.objects.filter(id=run_id).exclude(status="queued").first(), settle_s,
                "the head run to start", every=0.05)
    started = time.monotonic()  # killed past its claim, in a stage of the training itself if it gets there
    while run.status == TrainingRun.Status.RUNNING and run.stage == "starting" and time.monotonic() < started + 3:
        time.sleep(0.05)
        run = TrainingRun.objects.get(id=run_id)
    if run.status != TrainingRun.Status.RUNNING:
        raise RuntimeError(f"run {run_id} ended ({run.status}) before the worker could be killed")
    killed = kill_tree(worker)
    stage_at_kill = TrainingRun.objects.get(id=run_id).stage
    worker = restart()
    fault_end, done_at = time.monotonic(), None
    while time.monotonic() < fault_end + settle_s:
        close_old_connections()
        if TrainingRun.objects.filter(id=run_id, status__in=TrainingRun.FINISHED).exists():
            done_at = time.monotonic()
            break
        time.sleep(0.5)
    run = TrainingRun.objects.get(id=run_id)
    versions = ModelVersion.objects.filter(name__startswith=f"head-{run_id}-").count()
    work = {"stored": 1, "lost": int(run.status != TrainingRun.Status.SUCCEEDED or versions == 0),
            "done_twice": max(0, versions - 1), "killed_pids": killed, "stage_at_kill": stage_at_kill,
            "run_status": run.status, "attempts": run.attempts, "versions_registered": versions,
            "labelled_images": job.created_images + job.existing_images,
            "recovery_s": round(done_at - fault_end, 1) if done_at else None}
    result = summarize(answers, work)
    print(f"training_worker_killed: {json.dumps(result)}", flush=True)
    return result, worker


def _poll(found, timeout_s: float, what: str, every: float = 0.5):
    from django.db import close_old_connections

    deadline = time.monotonic() + timeout_s
    while True:
        close_old_connections()
        value = found()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every)


def role_token(role: str) -> str:
    """A token of a user with this role (one user per role)."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from labeling.roles import role_group

    user, created = get_user_model().objects.get_or_create(username=f"faults-{role}")
    if created:
        user.set_password(secrets.token_urlsafe(12))
        user.save()
        user.groups.add(role_group(role))
    return Token.objects.get_or_create(user=user)[0].key


def answer_kind(status: int, data: bytes) -> dict:
    return {"status": status, "json": data[:1] in (b"{", b"[")}


def post_zip(http: Client, path: str, members: list[tuple[str, bytes]], fields: dict[str, str]):
    """A zip of (member name, bytes) as the multipart field `file`, with these text fields."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in members:
            z.writestr(name, data)
    body, content_type = multipart("upload.zip", archive.getvalue())
    body = body.replace(b'name="files"', b'name="file"', 1)
    boundary = content_type.split("boundary=")[1]
    for name, value in fields.items():
        body = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode() + body
    return http.request("POST", path, body, {"Content-Type": content_type})
