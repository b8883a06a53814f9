"""Upload -> prediction through the real HTTP API: latency one at a time, then under load.

A throwaway installation: a temporary folder (VAR_DIR: media, models, logs), its own database
(a SQLite file in that folder, or with --database-url a database this script creates on that
PostgreSQL server and drops at the end), and its own Redis database (--redis-url, flushed
before and after; no other database is touched). It migrates, creates the demo classes and
their zero-shot production version (`demo_setup --no-photos`), a user and a DRF token, then
starts, on loopback only:

  web      gunicorn animalsite.wsgi, --web-workers processes x --web-threads threads;
  worker   one `celery worker` on the inference queue (prefork, --worker-concurrency), as
           tests/conftest.py starts it; both with DEBUG off and the same environment.

Every upload is a distinct file (the app deduplicates by sha256): a photo of --data with one
pixel changed and the request's number in a JPEG comment, re-encoded before any timing. Then:

  sequential  --requests uploads one after another; each is timed from the start of
              `POST /api/images/` to the `GET /api/images/<id>/` that first shows the
              prediction (polled every --poll-ms, 10 ms by default, so detection adds about
              half of that plus one GET); reported with the prediction's own figures:
              latency_ms (queued -> stored, measured by the app) and model_ms (the network);
  load        --clients threads for --duration seconds, each uploading and waiting for its
              prediction in a loop (polling every --load-poll-ms); predictions/s counts the
              predictions that landed inside the window; uploads still in flight at the end
              are waited for (and count for latency and errors, not for throughput).
              Peak memory of the web (gunicorn master + workers) and the worker (celery main
              + pool children) is sampled from /proc every 0.5 s: summed RSS (counts shared
              pages once per process), the largest single process, and summed PSS.

An error is any non-2xx answer, a connection error, an image that ends "failed", or a
prediction not seen within --timeout; the first few are printed with the logs' tails.
The worker serves with the app's defaults (SERVING_BACKEND, model threads) unless
--serving-backend / --worker-threads say otherwise; the backend each prediction reports
is printed. Each poll's round trip is timed too (a GET's cost is part of the load).

    python benchmarks/http.py [--quick] [--database-url postgres://postgres@127.0.0.1:5432/test]

The clients run in this process and share the machine's CPUs with the servers. The last line
printed is JSON; the exit status is 1 when there was any error.
"""

import os
import sys

# This file is benchmarks/http.py. Run as a script, its folder comes first on sys.path and the
# file would stand in for the standard library's `http` (http.client; Django imports it too).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import hashlib  # noqa: E402
import http.client  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(_HERE).parent
sys.path.insert(0, str(REPO))

from benchmarks.harness import descendants, die_with_parent, postgres_create, postgres_drop, redact, tail  # noqa: E402
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "caltech101-animals"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
KEEPALIVE_REUSE_S = 1.0  # gunicorn closes idle keep-alive connections after 2 s
SAMPLE_EVERY_S = 0.5
MAX_ERRORS_IN_A_ROW = 5  # the sequential phase gives up after this many
WARMUP_TIMEOUT_S = 180.0  # the first prediction loads (or exports) the model


# --- photos ---------------------------------------------------------------------------------

def image_files(root: Path) -> list[Path]:
    """ImageFolder: class/photo.jpg. Interleaved across classes, so a prefix covers them all."""
    by_class = [sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                for d in sorted(root.iterdir()) if d.is_dir()]
    files = []
    for i in range(max(map(len, by_class), default=0)):
        files += [c[i] for c in by_class if i < len(c)]
    if not files:
        raise SystemExit(f"no photos under {root} (expected an ImageFolder: class/photo.jpg)")
    return files


def make_payloads(files: list[Path], count: int) -> list[tuple[str, bytes]]:
    """`count` distinct JPEGs: request i is photo i % n with one pixel changed and "i" in a
    JPEG comment (the comment alone guarantees a new sha256 even where quantisation hides
    the pixel), re-encoded at quality 90. Each photo is decoded once."""
    from PIL import Image as PILImage

    payloads: list[tuple[str, bytes] | None] = [None] * count
    for j, path in enumerate(files[:count]):
        with PILImage.open(path) as im:
            base = im.convert("RGB")
        for i in range(j, count, len(files)):
            variant = base.copy()
            x, y = (i // len(files)) % base.width, (i // len(files) // base.width) % base.height
            r, g, b = variant.getpixel((x, y))
            variant.putpixel((x, y), ((r + 97) % 256, (g + 31) % 256, b))
            out = io.BytesIO()
            variant.save(out, format="JPEG", quality=90, comment=f"animalsite http benchmark {i}".encode())
            payloads[i] = (f"{path.parent.name}-{i:05d}.jpg", out.getvalue())
    if len({hashlib.sha256(data).digest() for _, data in payloads}) != count:
        raise RuntimeError("two payloads have the same content; the app would deduplicate them")
    return payloads


# --- HTTP client (stdlib; one keep-alive connection per client) -------------------------------

class Client:
    def __init__(self, port: int, token: str, timeout: float):
        self.port, self.timeout = port, timeout
        self.headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
        self.conn: http.client.HTTPConnection | None = None
        self.last_used = 0.0

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        # A connection idle for longer than gunicorn keeps it is not reused: a request sent
        # just as the server closes it would fail for reasons that are not the app's.
        if self.conn is None or time.monotonic() - self.last_used > KEEPALIVE_REUSE_S:
            self.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=self.headers | (headers or {}))
            response = self.conn.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        self.last_used = time.monotonic()
        if response.will_close:
            self.close()
        return response.status, data

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def multipart(filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{filename}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass
class Result:
    started: float  # time.monotonic()
    done: float = 0.0
    ok: bool = False
    total_ms: float = 0.0  # POST start -> the GET that shows the prediction
    post_ms: float = 0.0
    polls: int = 0
    get_ms: list[float] = field(default_factory=list)  # each poll's round trip
    server_latency_ms: float | None = None  # the prediction's latency_ms: queued -> stored
    model_ms: float | None = None
    backend: str = ""
    model_version: str = ""
    label: str = ""
    error: str = ""


def upload_and_wait(client: Client, payload: tuple[str, bytes], *, poll_s: float, timeout: float,
                    stop: threading.Event, backoff: float = 1.0, max_poll_s: float = 2.0) -> Result:
    """POST one photo, then GET it every poll_s (times backoff after each GET, at most
    max_poll_s when backing off) until the prediction is there."""
    filename, data = payload
    body, content_type = multipart(filename, data)
    started = time.perf_counter()
    result = Result(started=time.monotonic())

    def fail(message: str) -> Result:
        result.error, result.done = message, time.monotonic()
        result.total_ms = (time.perf_counter() - started) * 1000.0
        return result

    try:
        status, answer = client.request("POST", "/api/images/", body, {"Content-Type": content_type})
        result.post_ms = (time.perf_counter() - started) * 1000.0
        if not 200 <= status < 300:
            return fail(f"POST /api/images/ ({filename}) -> {status}: {answer[:500]!r}")
        [created] = json.loads(answer)
        if not created.get("created", True):
            return fail(f"POST /api/images/ ({filename}) -> created=false: the content was already stored")
        path = f"/api/images/{created['id']}/"
        deadline = started + timeout
        while True:
            get_started = time.perf_counter()
            status, answer = client.request("GET", path)
            result.get_ms.append((time.perf_counter() - get_started) * 1000.0)
            result.polls += 1
            if not 200 <= status < 300:
                return fail(f"GET {path} -> {status}: {answer[:500]!r}")
            image = json.loads(answer)
            if image["status"] == "failed":
                return fail(f"GET {path} -> status failed: {image.get('error')!r}")
            prediction = image.get("prediction")
            if image["status"] == "predicted" and prediction:
                result.total_ms = (time.perf_counter() - started) * 1000.0
                result.done = time.monotonic()
                result.ok = True
                result.server_latency_ms = prediction.get("latency_ms")
                result.model_ms = prediction.get("model_ms")
                result.backend = prediction.get("backend", "")
                result.model_version = (prediction.get("model_version") or {}).get("name", "")
                result.label = prediction.get("label", "")
                return result
            if time.perf_counter() + poll_s > deadline:
                return fail(f"GET {path}: no prediction after {timeout:.0f} s (status {image['status']})")
            if stop.wait(poll_s):
                return fail("interrupted")
            if backoff > 1.0:
                poll_s = max(poll_s, min(poll_s * backoff, max_poll_s))
    except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
        return fail(f"{type(e).__name__}: {e}")


# --- processes and their memory --------------------------------------------------------------

def start(name: str, command: list[str], env: dict, log_dir: Path) -> subprocess.Popen:
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "w")
    # A session of their own: Ctrl-C reaches this script only, which stops them in order.
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True, preexec_fn=die_with_parent)
    process.name, process.log_path, process.log = name, log_path, log
    return process


def wait_until(process: subprocess.Popen, ready, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} did not start (exit code {process.poll()}):\n"
                               f"{tail(process.log_path, 60)}")
        time.sleep(0.2)


def healthy(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/healthz")
        ok = connection.getresponse().status == 200
        connection.close()
        return ok
    except OSError:
        return False


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; (0, 0) when it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        with open(f"/proc/{pid}/smaps_rollup") as f:
            pss = next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
    except (OSError, ValueError):
        pass
    return rss, pss


@dataclass
class Peak:
    rss_sum_kb: int = 0
    rss_max_single_kb: int = 0
    pss_sum_kb: int = 0
    processes: int = 0

    def update(self, sample: list[tuple[int, int]]) -> None:
        self.rss_sum_kb = max(self.rss_sum_kb, sum(r for r, _ in sample))
        self.rss_max_single_kb = max(self.rss_max_single_kb, max((r for r, _ in sample), default=0))
        self.pss_sum_kb = max(self.pss_sum_kb, sum(p for _, p in sample))
        self.processes = max(self.processes, len(sample))

    def merge(self, other: "Peak") -> None:
        for name in ("rss_sum_kb", "rss_max_single_kb", "pss_sum_kb", "processes"):
            setattr(self, name, max(getattr(self, name), getattr(other, name)))

    def mb(self) -> dict:
        return {"rss_sum_mb": round(self.rss_sum_kb / 1024, 1),
                "rss_max_single_mb": round(self.rss_max_single_kb / 1024, 1),
                "pss_sum_mb": round(self.pss_sum_kb / 1024, 1), "processes": self.processes}


class MemorySampler(threading.Thread):
    """Every 0.5 s: RSS/PSS of each tree, into the peaks of the phase now running."""

    def __init__(self, roots: dict[str, int]):
        super().__init__(daemon=True)
        self.roots, self.phase = roots, "idle"
        self.peaks: dict[str, dict[str, Peak]] = {}
        self.stopping = threading.Event()

    def sample(self) -> None:
        peaks = self.peaks.setdefault(self.phase, {name: Peak() for name in self.roots})
        for name, root in self.roots.items():
            peaks[name].update([memory_kb(pid) for pid in descendants(root)])

    def run(self):
        while not self.stopping.is_set():
            self.sample()
            self.stopping.wait(SAMPLE_EVERY_S)

    def enter(self, phase: str) -> None:
        self.phase = phase
        self.sample()


def stop_processes(processes: list[subprocess.Popen]) -> None:
    """SIGTERM (gunicorn and celery finish what they are doing), then SIGKILL the trees."""
    trees = {p.pid: descendants(p.pid) for p in processes if p.poll() is None}
    for p in processes:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 20
    for p in processes:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for pids in trees.values():
        for pid in pids:  # orphans left by a master that died first; only processes we started
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for p in processes:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        p.log.close()


# --- figures ---------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def r1(value):
    return None if value is None else round(value, 1)


def summarize(results: list[Result]) -> dict:
    ok = [r for r in results if r.ok]

    def pct(attr, q):
        return r1(percentile([getattr(r, attr) for r in ok if getattr(r, attr) is not None], q))

    return {
        "requests": len(results), "ok": len(ok), "errors": len(results) - len(ok),
        "p50_ms": pct("total_ms", 50), "p95_ms": pct("total_ms", 95),
        "max_ms": r1(max((r.total_ms for r in ok), default=None)),
        "post_p50_ms": pct("post_ms", 50), "post_p95_ms": pct("post_ms", 95),
        "server_latency_p50_ms": pct("server_latency_ms", 50), "server_latency_p95_ms": pct("server_latency_ms", 95),
        "model_p50_ms": pct("model_ms", 50), "model_p95_ms": pct("model_ms", 95),
        "polls_per_prediction": round(sum(r.polls for r in ok) / len(ok), 1) if ok else None,
        "get_p50_ms": r1(percentile([ms for r in results for ms in r.get_ms], 50)),
        "get_p95_ms": r1(percentile([ms for r in results for ms in r.get_ms], 95)),
    }


# --- throwaway state -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_flush(url: str) -> int:
    """Empties this one Redis database (FLUSHDB: never the others); returns the keys it had."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    keys = client.dbsize()
    client.flushdb()
    client.close()
    return keys


def app_setup(env: dict) -> dict:
    """Migrate, the demo classes and their zero-shot production version, a user and a token."""
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections
    from rest_framework.authtoken.models import Token

    from classifier import selectors

    call_command("migrate", verbosity=0)
    call_command("demo_setup", no_photos=True, stdout=io.StringIO())
    user = get_user_model().objects.create_user("http-bench", password=secrets.token_urlsafe(12))
    token = Token.objects.create(user=user).key
    version = selectors.production_model()
    classes = len(version.card.get("classes", []))
    connections.close_all()  # nothing of this process holds the database while the servers run
    return {"token": token, "model_version": version.name, "backbone": version.backbone, "classes": classes}


# --- the benchmark ---------------------------------------------------------------------------

def run_load(*, clients: int, duration: float | None, payloads: list, port: int, token: str, args,
             stop: threading.Event) -> tuple[list[Result], float, float, bool]:
    """`clients` threads upload and wait in a loop for `duration` s (None: until the payloads
    run out). Returns the results, the window's start (monotonic), the time the last one
    finished and whether the payloads ran out."""
    results: list[Result] = []
    lock = threading.Lock()
    state = {"next": 0, "exhausted": False}
    t0 = time.monotonic()
    window_end = t0 + duration if duration is not None else float("inf")

    def client_loop():
        client = Client(port, token, args.timeout)
        try:
            while not stop.is_set() and time.monotonic() < window_end:
                with lock:
                    if state["next"] >= len(payloads):
                        state["exhausted"] = True
                        return
                    payload = payloads[state["next"]]
                    state["next"] += 1
                result = upload_and_wait(client, payload, poll_s=args.load_poll_ms / 1000.0, timeout=args.timeout,
                                         stop=stop, backoff=args.load_poll_backoff, max_poll_s=2.0)
                with lock:
                    results.append(result)
                if not result.ok:
                    stop.wait(0.1)  # no tight loop against a failing server
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:  # each ends by the window's end plus one upload's timeout
        while t.is_alive():
            t.join(0.2)
    return results, t0, time.monotonic(), state["exhausted"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageFolder of photos")
    parser.add_argument("--requests", type=int, default=50, help="sequential uploads (phase 1)")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="GET interval while waiting, phase 1")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (phase 2)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (phase 2)")
    parser.add_argument("--load-poll-ms", type=float, default=100.0, help="GET interval while waiting, phase 2")
    parser.add_argument("--load-poll-backoff", type=float, default=1.0,
                        help="phase 2's interval grows by this after each GET, to 2 s at most (the upload "
                             "page's own schedule is --load-poll-ms 250 --load-poll-backoff 1.5); 1: fixed")
    parser.add_argument("--max-load-requests", type=int, default=3000,
                        help="uploads prepared for phase 2 (its bound; a run that uses them all stops early)")
    parser.add_argument("--warmup", type=int, default=4, help="uploads before timing (model loading, first requests)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds one upload may take to its prediction")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10 sequential, 10 s of load")
    parser.add_argument("--database-url", help="a PostgreSQL server (postgres://user@host:port/db): a database "
                        "is created there for the run and dropped after; default: a SQLite file in the temp folder")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="broker; this db is flushed")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--web-threads", type=int, default=4, help="threads per gunicorn worker (as run_all)")
    parser.add_argument("--worker-concurrency", type=int, default=1, help="celery prefork processes")
    parser.add_argument("--worker-threads", type=int, default=0,
                        help="the worker's model threads: TORCH_NUM_THREADS and ONNX_THREADS (0: the app's default)")
    parser.add_argument("--serving-backend", choices=["auto", "onnxruntime", "torch"],
                        help="SERVING_BACKEND for the worker (default: the app's)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, media, SQLite)")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.duration, args.max_load_requests = 10, 10.0, min(args.max_load_requests, 600)
    if min(args.requests, args.clients, args.max_load_requests) < 1 or args.duration <= 0 or args.poll_ms <= 0 \
            or args.load_poll_ms <= 0 or args.warmup < 0 or args.load_poll_backoff < 1:
        parser.error("--requests, --clients, --max-load-requests, --duration and the poll intervals must be "
                     "positive, --load-poll-backoff at least 1")
    if args.database_url and not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("--database-url must be a postgres:// URL (the default is a temporary SQLite file)")
    if not args.redis_url.startswith("redis://"):
        parser.error("--redis-url must be redis://HOST:PORT/DB")

    def interrupted(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where the shell started us ignoring it
    var = Path(tempfile.mkdtemp(prefix="animalsite-http-bench-"))
    processes: list[subprocess.Popen] = []
    sampler: MemorySampler | None = None
    stop = threading.Event()
    pg_name = None
    flushed = False
    try:
        started = time.monotonic()
        keys = redis_flush(args.redis_url)  # also fails early, with a clear error, if Redis is down
        flushed = True
        if keys:
            print(f"flushed {keys} keys from {redact(args.redis_url)}")
        database_url = f"sqlite:///{var / 'db.sqlite3'}"
        if args.database_url:
            database_url, pg_name = postgres_create(args.database_url, "animalsite_http_bench")
        suffix = secrets.token_hex(4)
        env = dict(
            os.environ, VAR_DIR=str(var), MEDIA_ROOT=str(var / "media"), MODELS_ROOT=str(var / "models"),
            DATABASE_URL=database_url, CELERY_BROKER_URL=args.redis_url, DJANGO_SETTINGS_MODULE="animalsite.settings",
            INFERENCE_QUEUE=f"http-bench-inference-{suffix}", TRAINING_QUEUE=f"http-bench-training-{suffix}",
            DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="127.0.0.1,localhost",
            RETRAIN_AFTER_LABELS="0", PYTHONUNBUFFERED="1",
        )
        if args.worker_threads:
            env |= {name: str(args.worker_threads) for name in ("TORCH_NUM_THREADS", "ONNX_THREADS", "OMP_NUM_THREADS")}
        if args.serving_backend:
            env["SERVING_BACKEND"] = args.serving_backend
        app = app_setup(env)

        files = image_files(args.data)
        prep_started = time.perf_counter()
        total = args.warmup + args.requests + args.max_load_requests
        payloads = make_payloads(files, total)
        prep_s = time.perf_counter() - prep_started
        warm_payloads = payloads[:args.warmup]
        seq_payloads = payloads[args.warmup:args.warmup + args.requests]
        load_payloads = payloads[args.warmup + args.requests:]

        port = free_port()
        bindir = os.path.dirname(sys.executable)
        web = start("web", [os.path.join(bindir, "gunicorn"), "animalsite.wsgi", "--bind", f"127.0.0.1:{port}",
                            "--workers", str(args.web_workers), "--threads", str(args.web_threads),
                            "--timeout", "60", "--log-level", "warning"], env, var)
        processes.append(web)
        worker = start("worker", [sys.executable, "-m", "celery", "-A", "animalsite", "worker",
                                  "-Q", env["INFERENCE_QUEUE"], "--concurrency", str(args.worker_concurrency),
                                  "--pool", "prefork", "--loglevel", "INFO", "--hostname", f"http-bench-{suffix}@%h",
                                  "--without-gossip", "--without-mingle"], env, var)
        processes.append(worker)
        wait_until(worker, lambda: "ready." in worker.log_path.read_text(errors="replace"), 120)
        wait_until(web, lambda: healthy(port), 60)
        startup_s = time.monotonic() - started
        sampler = MemorySampler({"web": web.pid, "worker": worker.pid})
        sampler.start()

        def check_alive():
            for p in processes:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.name} exited with code {p.returncode}:\n{tail(p.log_path, 60)}")

        # Warm-up, untimed: the worker loads its model on its first task (exporting it to ONNX
        # first where it serves with ONNX Runtime: a longer timeout); each gunicorn worker answers
        # its first requests. Concurrent, so both web workers are likely to get some.
        warm_args = argparse.Namespace(**vars(args) | {"timeout": max(args.timeout, WARMUP_TIMEOUT_S)})
        warm_results = run_load(clients=max(1, min(args.warmup, args.web_workers * 2)), duration=None,
                                payloads=warm_payloads, port=port, token=app["token"], args=warm_args, stop=stop)[0]
        check_alive()

        sampler.enter("sequential")
        load_before = os.getloadavg()
        client = Client(port, app["token"], args.timeout)
        sequential: list[Result] = []
        in_a_row = 0
        seq_started = time.monotonic()
        for payload in seq_payloads:
            result = upload_and_wait(client, payload, poll_s=args.poll_ms / 1000.0, timeout=args.timeout, stop=stop)
            sequential.append(result)
            in_a_row = 0 if result.ok else in_a_row + 1
            if in_a_row >= MAX_ERRORS_IN_A_ROW:
                print(f"giving up the sequential phase after {in_a_row} errors in a row", file=sys.stderr)
                break
            check_alive()
        seq_s = time.monotonic() - seq_started
        client.close()

        sampler.enter("load")
        load, t0, t_end, exhausted = run_load(clients=args.clients, duration=args.duration, payloads=load_payloads,
                                              port=port, token=app["token"], args=args, stop=stop)
        sampler.enter("after")
        load_after = os.getloadavg()
        check_alive()
        sampler.stopping.set()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the servers", file=sys.stderr)
        stop.set()
        return 130
    finally:
        stop.set()
        if sampler is not None:
            sampler.stopping.set()
        stop_processes(processes)
        if flushed:
            try:
                redis_flush(args.redis_url)
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                print(f"could not flush {redact(args.redis_url)}: {e}", file=sys.stderr)
        if pg_name:
            try:
                postgres_drop(args.database_url, pg_name)
            except Exception as e:  # noqa: BLE001
                print(f"could not drop the database {pg_name}: {e}", file=sys.stderr)
        logs = {p.name: tail(p.log_path, 80) for p in processes}
        if args.keep:
            print(f"kept {var} (logs: web.log, worker.log)", file=sys.stderr)
        else:
            shutil.rmtree(var, ignore_errors=True)

    # --- report ---
    seq = summarize(sequential)
    window_end = t0 + args.duration
    in_window = [r for r in load if r.ok and r.done <= window_end]
    loaded = summarize(load)
    throughput = len(in_window) / args.duration
    all_results = warm_results + sequential + load
    errors = [r for r in all_results if not r.ok]
    backends = sorted({r.backend for r in all_results if r.ok})
    versions = sorted({r.model_version for r in all_results if r.ok})
    peaks = sampler.peaks
    load_peak, seq_peak = peaks["load"], peaks.get("sequential", peaks["idle"])
    all_peak = {name: Peak() for name in ("web", "worker")}
    for phase in peaks.values():
        for name, peak in phase.items():
            all_peak[name].merge(peak)
    gets_per_s = sum(r.polls for r in load) / max(t_end - t0, 1e-9)
    cpus = os.cpu_count()

    print(f"\n{cpus} CPUs ({platform.processor() or platform.machine()}), load average {load_before[0]:.2f} before "
          f"the timed phases, {load_after[0]:.2f} after (the clients run in this process, on the same CPUs)")
    print(f"database {'postgresql' if pg_name else 'sqlite'}, broker {redact(args.redis_url)}, web: gunicorn "
          f"{args.web_workers} workers x {args.web_threads} threads, worker: celery prefork x{args.worker_concurrency}"
          f", model threads {args.worker_threads or 'default'}; {len(warm_results)} warm-up uploads untimed")
    print(f"model {', '.join(versions) or '?'} ({app['backbone']}, {app['classes']} classes), backend "
          f"{', '.join(backends) or '?'}; setup + start-up {startup_s:.1f} s (of which {prep_s:.1f} s preparing "
          f"{len(payloads)} distinct JPEGs from {len(files)} photos of {args.data.name})")
    print(f"\n{'phase':<32}{'requests':>9}{'ok':>6}{'errors':>7}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'pred/s':>8}")
    print(f"{f'sequential (poll {args.poll_ms:g} ms)':<32}{seq['requests']:>9}{seq['ok']:>6}{seq['errors']:>7}"
          f"{seq['p50_ms']!s:>9}{seq['p95_ms']!s:>9}{seq['max_ms']!s:>9}"
          f"{seq['ok'] / seq_s:>8.1f}")
    print(f"{f'load: {args.clients} clients, {args.duration:g} s':<32}{loaded['requests']:>9}{loaded['ok']:>6}"
          f"{loaded['errors']:>7}{loaded['p50_ms']!s:>9}{loaded['p95_ms']!s:>9}{loaded['max_ms']!s:>9}"
          f"{throughput:>8.1f}")
    print(f"\nwhere the time goes, p50 ms{'':<6}{'total':>8}{'POST':>8}{'queued->stored':>16}{'model':>8}"
          f"{'one GET':>9}{'GETs':>6}")
    for name, s in (("sequential", seq), ("load", loaded)):
        print(f"{name:<32}{s['p50_ms']!s:>8}{s['post_p50_ms']!s:>8}{s['server_latency_p50_ms']!s:>16}"
              f"{s['model_p50_ms']!s:>8}{s['get_p50_ms']!s:>9}{s['polls_per_prediction']!s:>6}")
    print("  POST: the upload's answer (validate, store, commit, enqueue); queued->stored: the prediction's own\n"
          "  latency_ms, from the row's creation inside the POST to the stored prediction (broker, worker claim,\n"
          "  read + decode, model, write); model: the network alone; the rest of total is the polling noticing\n"
          f"  it (one GET's round trip plus part of an interval). GETs during the load: {gets_per_s:.0f}/s.")
    if exhausted:
        print(f"  load stopped early: all {len(load_payloads)} prepared uploads were used (raise --max-load-requests)")
    print(f"  {len(load) - len(in_window) - loaded['errors']} load uploads finished after the window "
          f"(counted for latency, not for pred/s); the last at +{t_end - window_end:.1f} s")
    print(f"\n{'memory, MB':<28}{'RSS sum':>9}{'max one':>9}{'PSS sum':>9}{'procs':>7}   (peak per phase, "
          f"sampled every {SAMPLE_EVERY_S:g} s)")
    for phase in ("sequential", "load"):
        for name, label in (("web", "web (gunicorn)"), ("worker", "worker (celery)")):
            p = peaks.get(phase, {}).get(name)
            if p:
                m = p.mb()
                print(f"{f'{label}, {phase}':<28}{m['rss_sum_mb']:>9}{m['rss_max_single_mb']:>9}"
                      f"{m['pss_sum_mb']:>9}{m['processes']:>7}")
    if errors:
        print(f"\n{len(errors)} ERRORS; the first ones:")
        for r in errors[:5]:
            print(f"  {r.error}")
        for name, text in logs.items():
            print(f"\n--- {name}.log (last lines) ---\n{text}")

    summary = {
        "p50_ms": seq["p50_ms"], "p95_ms": seq["p95_ms"], "max_ms": seq["max_ms"],
        "poll_ms": args.poll_ms, "sequential": seq,
        "load_throughput_per_s": round(throughput, 2), "load_p50_ms": loaded["p50_ms"],
        "load_p95_ms": loaded["p95_ms"], "load_max_ms": loaded["max_ms"], "load_poll_ms": args.load_poll_ms,
        "load_poll_backoff": args.load_poll_backoff,
        "load": loaded | {"in_window": len(in_window), "gets_per_s": round(gets_per_s, 1),
                          "drain_s": round(max(0.0, t_end - window_end), 1), "payloads_exhausted": exhausted},
        "errors": len(errors), "error_examples": [r.error for r in errors[:5]],
        "peak_rss_web_mb": load_peak["web"].mb()["rss_sum_mb"],
        "peak_rss_web_max_single_mb": load_peak["web"].mb()["rss_max_single_mb"],
        "peak_rss_worker_mb": load_peak["worker"].mb()["rss_sum_mb"],
        "peak_rss_worker_max_single_mb": load_peak["worker"].mb()["rss_max_single_mb"],
        "memory": {phase: {name: p.mb() for name, p in ps.items()} for phase, ps in peaks.items()}
        | {"overall": {name: p.mb() for name, p in all_peak.items()}},
        "sequential_peak_rss_web_mb": seq_peak["web"].mb()["rss_sum_mb"],
        "sequential_peak_rss_worker_mb": seq_peak["worker"].mb()["rss_sum_mb"],
        "clients": args.clients, "duration_s": args.duration, "requests": args.requests,
        "backend": backends[0] if len(backends) == 1 else backends, "model_version": versions,
        "backbone": app["backbone"], "database": "postgresql" if pg_name else "sqlite",
        "web_workers": args.web_workers, "web_threads": args.web_threads,
        "worker_concurrency": args.worker_concurrency, "worker_threads": args.worker_threads or "default",
        "serving_backend_setting": args.serving_backend or "default", "warmup": len(warm_results),
        "cpus": cpus, "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "startup_s": round(startup_s, 1),
    }
    print(json.dumps(summary))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
