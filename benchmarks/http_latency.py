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

    python -m benchmarks.http_latency [--quick] [--database-url postgres://postgres@127.0.0.1:5432/test]

The clients run in this process and share the machine's CPUs with the servers. The last line
printed is JSON; the exit status is 1 when there was any error.
"""

import argparse
import hashlib
import io
import json
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path

from animalsite import processes
from benchmarks.harness import DEFAULT_DATA, Installation, django_setup, interleaved_photos, redact
from benchmarks.http_client import Client, Result, free_port, healthy, run_load, upload_and_wait
from benchmarks.http_report import figures, print_memory_and_errors, print_setting, print_tables, summary
from benchmarks.memory import MemorySampler

MAX_ERRORS_IN_A_ROW = 5  # the sequential phase gives up after this many
WARMUP_TIMEOUT_S = 180.0  # the first prediction loads (or exports) the model


# --- photos ---------------------------------------------------------------------------------

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
    django_setup(env)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections
    from rest_framework.authtoken.models import Token

    from classifier import selectors

    call_command("demo_setup", no_photos=True, stdout=io.StringIO())
    user = get_user_model().objects.create_user("http-bench", password=secrets.token_urlsafe(12))
    token = Token.objects.create(user=user).key
    version = selectors.production_model()
    classes = len(version.card.get("classes", []))
    connections.close_all()  # nothing of this process holds the database while the servers run
    return {"token": token, "model_version": version.name, "backbone": version.backbone, "classes": classes}


# --- the benchmark ---------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
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
    return args


def environment(install: Installation, args) -> dict:
    env = install.env(RETRAIN_AFTER_LABELS="0")
    if args.worker_threads:
        env |= {name: str(args.worker_threads) for name in ("TORCH_NUM_THREADS", "ONNX_THREADS", "OMP_NUM_THREADS")}
    if args.serving_backend:
        env["SERVING_BACKEND"] = args.serving_backend
    return env


def prepare(args) -> dict:
    """The distinct uploads of every phase, made before any timing."""
    files = interleaved_photos(args.data)
    started = time.perf_counter()
    payloads = make_payloads(files, args.warmup + args.requests + args.max_load_requests)
    return {"files": files, "payloads": payloads, "prep_s": time.perf_counter() - started,
            "warm_payloads": payloads[:args.warmup],
            "seq_payloads": payloads[args.warmup:args.warmup + args.requests],
            "load_payloads": payloads[args.warmup + args.requests:]}


def start_servers(install: Installation, args, env: dict) -> int:
    """gunicorn and one Celery worker on the inference queue, each in a session of its own (Ctrl-C
    reaches this script only, which stops them in order); returns the web port once both are ready."""
    port = free_port()
    web = install.start("web", processes.web_command(f"127.0.0.1:{port}", workers=args.web_workers,
                                                     threads=args.web_threads, access_log=False)
                        + ["--timeout", "60", "--log-level", "warning"], env, new_session=True)
    install.start_worker(env, [env["INFERENCE_QUEUE"]], concurrency=args.worker_concurrency, new_session=True)
    processes.wait_ready(web, lambda: healthy(port), timeout=60)
    return port


def check_alive(install: Installation) -> None:
    for p in install.processes:
        if p.poll() is not None:
            raise RuntimeError(f"{p.name} exited with code {p.returncode}:\n{processes.tail(p.log_path, 60)}")


def sequential_phase(args, install: Installation, port: int, token: str, payloads: list,
                     stop: threading.Event) -> tuple[list[Result], float]:
    """One upload after another; gives up after MAX_ERRORS_IN_A_ROW errors in a row."""
    client = Client(port, token, args.timeout)
    results: list[Result] = []
    in_a_row = 0
    started = time.monotonic()
    for payload in payloads:
        result = upload_and_wait(client, payload, poll_s=args.poll_ms / 1000.0, timeout=args.timeout, stop=stop)
        results.append(result)
        in_a_row = 0 if result.ok else in_a_row + 1
        if in_a_row >= MAX_ERRORS_IN_A_ROW:
            print(f"giving up the sequential phase after {in_a_row} errors in a row", file=sys.stderr)
            break
        check_alive(install)
    client.close()
    return results, time.monotonic() - started


def run_phases(args, install: Installation, run: dict, sampler: MemorySampler, stop: threading.Event) -> None:
    """Warm-up, sequential, load; their results go into run."""
    port, token = run["port"], run["app"]["token"]
    # Warm-up, untimed: the worker loads its model on its first task (exporting it to ONNX
    # first where it serves with ONNX Runtime: a longer timeout); each gunicorn worker answers
    # its first requests. Concurrent, so both web workers are likely to get some.
    warm_args = argparse.Namespace(**vars(args) | {"timeout": max(args.timeout, WARMUP_TIMEOUT_S)})
    run["warm"] = run_load(clients=max(1, min(args.warmup, args.web_workers * 2)), duration=None,
                           payloads=run["warm_payloads"], port=port, token=token, args=warm_args, stop=stop)[0]
    check_alive(install)
    sampler.enter("sequential")
    run["load_before"] = os.getloadavg()
    run["sequential"], run["seq_s"] = sequential_phase(args, install, port, token, run["seq_payloads"], stop)
    sampler.enter("load")
    run["load"], run["t0"], run["t_end"], run["exhausted"] = run_load(
        clients=args.clients, duration=args.duration, payloads=run["load_payloads"], port=port, token=token,
        args=args, stop=stop)
    sampler.enter("after")
    run["load_after"] = os.getloadavg()
    check_alive(install)


def interrupted(*_):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where the shell started us ignoring it
    install = Installation("http-bench", database_url=args.database_url, redis_url=args.redis_url,
                           forget_redis=False, keep=args.keep)
    sampler: MemorySampler | None = None
    stop = threading.Event()
    flushed = False
    try:
        started = time.monotonic()
        keys = redis_flush(args.redis_url)  # also fails early, with a clear error, if Redis is down
        flushed = True
        if keys:
            print(f"flushed {keys} keys from {redact(args.redis_url)}")
        install.create_database()
        env = environment(install, args)
        run = {"app": app_setup(env), "database": "postgresql" if install.pg_name else "sqlite"} | prepare(args)
        run["port"] = start_servers(install, args, env)
        run["startup_s"] = time.monotonic() - started
        sampler = MemorySampler({p.name: p.pid for p in install.processes})
        sampler.start()
        run_phases(args, install, run, sampler, stop)
        sampler.stopping.set()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the servers", file=sys.stderr)
        stop.set()
        return 130
    finally:
        stop.set()
        if sampler is not None:
            sampler.stopping.set()
        processes.stop(*install.processes)
        if flushed:
            try:
                redis_flush(args.redis_url)
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                print(f"could not flush {redact(args.redis_url)}: {e}", file=sys.stderr)
        logs = {p.name: processes.tail(p.log_path, 80) for p in install.processes}
        install.close()

    run["logs"] = logs
    fig = figures(args, run, sampler.peaks)
    print_setting(args, run, fig)
    print_tables(args, run, fig)
    print_memory_and_errors(run, fig, sampler.peaks)
    print(json.dumps(summary(args, run, fig, sampler.peaks)))
    return 1 if fig["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
