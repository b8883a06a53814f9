"""Correction-to-new-model latency: from the decision that completes RETRAIN_AFTER_LABELS labels
to a new head version that is in production and serving, through a real Celery worker.

A throwaway installation: a temporary folder (VAR_DIR: media, models, embedding cache, ONNX
exports, logs), its own database (a SQLite file there, or with --database-url a database this
script creates on that PostgreSQL server and drops at the end) and its own broker (the
filesystem broker in that folder, or with --redis-url that Redis database under queue names
of its own, whose keys are deleted at the end; nothing else there is touched). One
`celery worker` (prefork, --concurrency 1 by default, as `run_all` starts it) serves both the
inference and the training queue, with RETRAIN_AFTER_LABELS, RETRAIN_MODE=head and the
training settings in its environment and in this process's settings alike.

Setup, not timed: the classes are the folder names of --data (an ImageFolder), which makes
the zero-shot version, the first production version. A user uploads --per-class photos of
each class through classifier.uploads.image_upload, and the worker predicts them all (the
zero-shot version is exported to ONNX on its first prediction). RETRAIN_AFTER_LABELS is the
number of uploads, so that the annotator's last decision is the one that triggers the run.

Then an annotator (role group "annotator") works the review queue (labeling.review_queue
queue_next, labeling.services decision_make, action "choose", the folder name as the label)
until every upload is labelled. A decision enqueues a retrain check for the worker unless one
is already waiting (labeling.retrain: the waiting one counts its label), so before the last
decision the script waits until the worker has taken the queued check, as it would have
between a person's decisions (--no-settle: don't). The clock starts when the last decision
returns; the database is polled every --poll seconds (0.1) for:

  (a) the head training run started by the labels has succeeded (the worker counted the
      labels, queued the run, claimed it, snapshotted the labels, fitted the head on the
      features the predictions stored, exported it to ONNX, and the gate compared it with the
      zero-shot champion on the snapshot's test split);
  (b) its version is production (the gate promoted it);
  (c) a fresh upload (a photo not uploaded before, uploaded as soon as (b) is seen) has been
      predicted by the new version in the worker;
  (d) every labelled image has a prediction by the new version (the re-predict that follows a
      promotion: head versions re-score the stored features, no backbone).

Each event is reported twice: when the poll saw it ("observed") and by the timestamp the app
stored with it ("recorded": TrainingRun.created/started/finished, ModelVersion.created and
promoted, Prediction.created), both in seconds since the last decision returned. The run's
stages are shown as its progress callback wrote them (at most once a second, so a short stage
may show only at its end); the trainer's own figures come from the version's card (fit()
seconds, embed and head-fit seconds, test metrics), the ONNX export's from the worker log, and
the gate's verdict (overall and per class) from ModelVersion.gate. The CPU time that other
processes used during the timed part is printed too: on a shared machine the head fit and the
export slow down several times over.

The gate (PROMOTION_MAX_CLASS_DROP, 0.02 by default) refuses a challenger if a class's F1 on
the test split drops by more than that, but only for classes with PROMOTION_MIN_CLASS_SUPPORT
(10) test images or more (a smaller one vetoes only a drop over 0.5): at these sizes (2-6 test
images per class) one image is worth 0.1-0.3 of F1, and before that rule the gate kept the
zero-shot champion (macro-F1 0.61) against a head at 0.90. --max-class-drop sets
PROMOTION_MAX_CLASS_DROP for the run (1 leaves macro-F1 alone to decide).

    python -m benchmarks.retrain_latency [--data ../shared/datasets/caltech101-animals] [--per-class 12]
        [--max-class-drop 1] [--database-url postgres://postgres@127.0.0.1:5432/postgres]
        [--redis-url redis://127.0.0.1:6379/14]

The last line printed is JSON. The exit status is 1 when the trigger did not fire, the run
failed, the gate kept the version a candidate (the table up to (a) and the gate's verdict are
still printed), or anything timed out; the reason, the state of the run and the worker log's
tail are printed.
"""

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from animalsite import processes
from benchmarks.harness import (
    DEFAULT_DATA,
    BenchmarkFailed,
    Installation,
    class_photos,
    django_setup,
    queued_messages,
    redact,
    wait_until,
)
from benchmarks.retrain_report import cpu_seconds, diagnose, recorded, report

# --- photos ----------------------------------------------------------------------------------

def photos(root: Path, per_class: int) -> tuple[dict[str, list[Path]], Path]:
    """per_class photos of each class folder (sorted by name), and one more for the fresh upload."""
    chosen, spare = {}, []
    for name, files in class_photos(root).items():
        if len(files) < per_class:
            raise SystemExit(f"{root / name} has {len(files)} photos; --per-class asks for {per_class}")
        chosen[name] = files[:per_class]
        spare += files[per_class:per_class + 1]
    if len(chosen) < 2 or not spare:
        raise SystemExit(f"{root}: need at least two class folders and one photo beyond --per-class")
    return chosen, spare[0]


# --- the benchmark --------------------------------------------------------------------------


def setup(files: dict[str, list[Path]], worker, timeout: float) -> dict:
    """Classes, uploads (predicted by the worker), an annotator. Not timed."""
    from django.contrib.auth import get_user_model

    from classifier import registry, selectors, uploads
    from classifier.models import Image
    from labeling.roles import role_group

    registry.species_create_many(names=list(files))
    champion = selectors.production_model()
    User = get_user_model()
    uploader = User.objects.create_user("retrain-bench-uploader")
    uploader.groups.add(role_group("uploader"))
    annotator = User.objects.create_user("retrain-bench-annotator")
    annotator.groups.add(role_group("annotator"))
    truth: dict[int, str] = {}
    started = time.perf_counter()
    for label, paths in files.items():
        for path in paths:
            result = uploads.image_upload(user=uploader, filename=path.name, data=path.read_bytes())
            if not result.created:
                raise BenchmarkFailed(f"{path} has the same content as a photo uploaded before; pick other photos")
            truth[result.image.id] = label.strip().lower()
    images = Image.objects.filter(id__in=list(truth))

    def all_predicted():
        failed = list(images.filter(status=Image.Status.FAILED).values_list("id", "error")[:3])
        if failed:
            raise BenchmarkFailed(f"the worker failed to predict uploads: {failed}")
        return images.filter(status=Image.Status.PREDICTED).count() == len(truth)

    wait_until(f"the worker to predict the {len(truth)} uploads", all_predicted, timeout, worker)
    return {"uploader": uploader, "annotator": annotator, "truth": truth, "champion": champion,
            "upload_and_predict_s": time.perf_counter() - started}


def annotate(annotator, truth: dict[int, str], *, settle: bool, queues: list[str], worker, timeout: float) -> dict:
    """Works the queue until every upload is labelled; returns the clock of the last decision.

    A decision enqueues a retrain check unless one is already waiting. By default the last
    decision waits until the worker has taken the queued check, as it would have between a
    person's decisions (seconds apart): the figures are then the pipeline's, not a backlog's."""
    from labeling import review_queue
    from labeling import services as labeling_services
    from labeling.models import Annotation

    decision_ms = []
    started = time.perf_counter()
    settle_s, backlog = 0.0, None
    for i in range(len(truth)):
        if i == len(truth) - 1:
            if settle:
                settle_started = time.perf_counter()
                wait_until("the worker to drain the retrain checks", lambda: queued_messages(queues) == 0, timeout,
                           worker, every=0.1)
                time.sleep(1.0)  # the check the worker holds (prefetch 1) finishes
                settle_s = time.perf_counter() - settle_started
            backlog = queued_messages(queues)
        claims = review_queue.queue_next(user=annotator, count=1)
        if not claims:
            raise BenchmarkFailed(f"the queue ran dry after {i} of {len(truth)} decisions")
        claim = claims[0]
        if claim.image_id not in truth:
            raise BenchmarkFailed(f"the queue offered image {claim.image_id}, which this run did not upload")
        before = time.perf_counter()
        labeling_services.decision_make(user=annotator, token=claim.token, action="choose",
                                        label=truth[claim.image_id])
        after = time.perf_counter()
        wall = time.time()
        decision_ms.append((after - before) * 1000.0)
    kinds = dict.fromkeys(("accepted", "corrected"), 0)
    for kind in Annotation.objects.filter(user=annotator).values_list("kind", flat=True):
        kinds[kind] = kinds.get(kind, 0) + 1
    labelled = set(Annotation.objects.filter(user=annotator).values_list("image_id", flat=True))
    if labelled != set(truth):
        raise BenchmarkFailed(f"{len(labelled)} images labelled, expected {len(truth)}: "
                              "the queue repeated or skipped some")
    return {"t0": after, "t0_wall": wall, "annotate_s": after - started - settle_s,
            "last_decision_ms": decision_ms[-1],
            "decision_ms_median": sorted(decision_ms)[len(decision_ms) // 2], "kinds": kinds,
            "settled": settle, "settle_s": settle_s, "backlog": backlog}


def mark(state: dict, name: str) -> None:
    state["seen"].setdefault(name, time.perf_counter() - state["t0"])


def observe(run, state: dict) -> dict | None:
    """One poll's look at the run the labels started (and what follows it); what measure()
    returns once (a)-(d) have all been seen, or the gate refused the version."""
    from classifier import uploads
    from classifier.models import ModelVersion, Prediction, TrainingRun

    seen = state["seen"]
    mark(state, "run requested")
    if run.status != TrainingRun.Status.QUEUED:
        mark(state, "run started")
    if run.stage:
        state["stages"].setdefault(run.stage, time.perf_counter() - state["t0"])
    if run.status in (TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED):
        raise BenchmarkFailed(f"the training run {run.status}: {run.error}")
    version = run.version
    if version is None:
        return None
    mark(state, "version registered")
    done = {"run": run, "version": version, "seen": seen, "stages": state["stages"], "polls": state["polls"]}
    if version.status == ModelVersion.Status.PRODUCTION:
        mark(state, "production")
        if state["fresh_image"] is None:
            fresh = state["fresh"]
            result = uploads.image_upload(user=state["uploader"], filename=fresh.name, data=fresh.read_bytes())
            if not result.created:
                raise BenchmarkFailed(f"the fresh photo {fresh} was uploaded before")
            state["fresh_image"] = result.image
            mark(state, "fresh upload stored")
    if run.status == TrainingRun.Status.SUCCEEDED:
        mark(state, "run succeeded")
        if version.status != ModelVersion.Status.PRODUCTION:  # the gate said no: (b)-(d) never come
            return done | {"fresh_image": None, "fresh_prediction": None, "refused": True}
    if state["fresh_image"] is not None and state["fresh_prediction"] is None:
        prediction = Prediction.objects.filter(image=state["fresh_image"]).select_related("model_version").first()
        if prediction is not None:
            state["fresh_prediction"] = prediction
            mark(state, "fresh upload predicted")
            if prediction.model_version_id != version.id:
                raise BenchmarkFailed(f"the fresh upload was predicted by {prediction.model_version.name}, "
                                      f"not by the new version {version.name}")
    ids = state["ids"]
    if "production" in seen and "labelled re-predicted" not in seen and \
            Prediction.objects.filter(model_version=version, image_id__in=ids).count() == len(ids):
        mark(state, "labelled re-predicted")
    if {"run succeeded", "fresh upload predicted", "labelled re-predicted"} <= set(seen):
        return done | {"fresh_image": state["fresh_image"], "fresh_prediction": state["fresh_prediction"],
                       "refused": False}
    return None


def measure(*, ctx: dict, clock: dict, fresh: Path, worker, timeout: float, poll: float) -> dict:
    """Polls the database from the last decision on; returns what it saw and when."""
    from classifier.models import TrainingRun

    state = {"t0": clock["t0"], "ids": list(ctx["truth"]), "uploader": ctx["uploader"], "fresh": fresh,
             "seen": {}, "stages": {}, "fresh_image": None, "fresh_prediction": None, "polls": 0}
    deadline = clock["t0"] + timeout
    while True:
        state["polls"] += 1
        run = (TrainingRun.objects.filter(trigger=TrainingRun.Trigger.LABELS)  # the first that trains
               .exclude(status__in=[TrainingRun.Status.SKIPPED, TrainingRun.Status.REFUSED]).order_by("id").first())
        if run is not None:
            result = observe(run, state)
            if result is not None:
                return result
        if worker.poll() is not None:
            raise BenchmarkFailed(f"the worker exited with code {worker.returncode}")
        if time.perf_counter() > deadline:
            seen = state["seen"]
            waiting = [e for e in ("run requested", "run succeeded", "production", "fresh upload predicted",
                                   "labelled re-predicted") if e not in seen]
            raise BenchmarkFailed(f"timed out after {timeout:.0f} s; still waiting for: {', '.join(waiting)} "
                                  f"(seen: {', '.join(seen) or 'nothing'})")
        time.sleep(poll)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageFolder: class/photo.jpg")
    parser.add_argument("--per-class", type=int, default=12, help="photos uploaded and labelled per class")
    parser.add_argument("--database-url", help="a PostgreSQL server (postgres://user@host:port/db): a database is "
                        "created there for the run and dropped after; default: a SQLite file in the temp folder")
    parser.add_argument("--redis-url", help="a Redis broker (redis://host:port/db); this run's queues have names "
                        "of their own and their keys are deleted at the end; default: the filesystem broker")
    parser.add_argument("--concurrency", type=int, default=1, help="the worker's prefork processes (run_all: 1)")
    parser.add_argument("--min-per-class", type=int, default=5, help="TRAINING_MIN_PER_CLASS (the app's default: 5)")
    parser.add_argument("--min-test-images", type=int, default=10,
                        help="PROMOTION_MIN_TEST_IMAGES (the app's default: 10)")
    parser.add_argument("--max-class-drop", type=float,
                        help="PROMOTION_MAX_CLASS_DROP for the gate (default: the app's, 0.02)")
    parser.add_argument("--no-settle", action="store_true",
                        help="make the last decision straight after the others, with the earlier decisions' retrain "
                             "checks still queued for the worker (default: wait until it has drained them)")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between database polls while timing")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds the timed part may take")
    parser.add_argument("--setup-timeout", type=float, default=900.0,
                        help="seconds the worker may take to start and to predict the uploads")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, media, SQLite)")
    args = parser.parse_args(argv)
    if args.per_class < 2 or args.concurrency < 1 or args.poll <= 0:
        parser.error("--per-class must be at least 2, --concurrency at least 1, --poll positive")
    if args.database_url and not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("--database-url must be a postgres:// URL (the default is a temporary SQLite file)")
    if args.redis_url and not args.redis_url.startswith("redis://"):
        parser.error("--redis-url must be redis://HOST:PORT/DB")
    return args


def environment(install: Installation, args, n_labels: int) -> dict:
    """The worker's settings, and this process's alike."""
    var = install.var
    env = install.env(EMBEDDING_CACHE_DIR=str(var / "embeddings"), ONNX_DIR=str(var / "onnx"),
                      RETRAIN_AFTER_LABELS=str(n_labels), RETRAIN_MODE="head",
                      TRAINING_MIN_PER_CLASS=str(args.min_per_class),
                      PROMOTION_MIN_TEST_IMAGES=str(args.min_test_images), CELERY_TASK_ALWAYS_EAGER="0")
    if args.max_class_drop is not None:
        env["PROMOTION_MAX_CLASS_DROP"] = str(args.max_class_drop)
    return env


def run(args, install: Installation, files: dict[str, list[Path]], fresh: Path) -> int:
    n_labels = sum(map(len, files.values()))
    install.create_database()
    env = environment(install, args, n_labels)
    django_setup(env)
    from django.conf import settings

    assert settings.RETRAIN_AFTER_LABELS == n_labels and settings.RETRAIN_MODE == "head"
    queues = [env["INFERENCE_QUEUE"], env["TRAINING_QUEUE"]]
    worker = install.start_worker(env, queues, concurrency=args.concurrency, timeout=args.setup_timeout,
                                  new_session=True)
    ctx = setup(files, worker, args.setup_timeout)
    print(f"setup done: {len(files)} classes, {n_labels} uploads predicted by {ctx['champion'].name} "
          f"in {ctx['upload_and_predict_s']:.1f} s; annotating", flush=True)
    clock = annotate(ctx["annotator"], ctx["truth"], settle=not args.no_settle, queues=queues, worker=worker,
                     timeout=args.setup_timeout)
    pids = processes.descendants(worker.pid) + [os.getpid()]
    cpu_before = cpu_seconds(pids)
    try:
        result = measure(ctx=ctx, clock=clock, fresh=fresh, worker=worker, timeout=args.timeout, poll=args.poll)
    except BenchmarkFailed as e:
        raise BenchmarkFailed(f"{e}\n{diagnose(ctx['truth'])}") from None
    cpu_after = cpu_seconds(pids)
    clock["cpu_ours_s"] = cpu_after[1] - cpu_before[1]
    clock["cpu_others_s"] = max(0.0, (cpu_after[0] - cpu_before[0]) - clock["cpu_ours_s"])
    clock["timed_s"] = time.perf_counter() - clock["t0"]
    stamps = recorded(result, clock, list(ctx["truth"]))
    shown_db = redact(args.database_url) + " (PostgreSQL)" if args.database_url else "SQLite"
    broker = redact(args.redis_url) if args.redis_url else "filesystem://"
    time.sleep(0.5)  # the worker's log lines of the run are flushed
    report(args, env, ctx, clock, result, stamps, shown_db, broker, worker.log_path.read_text(errors="replace"))
    if result["refused"]:
        version = result["version"]
        print(f"FAILED: the gate kept {version.name} a {version.status}: {version.status_reason}", file=sys.stderr)
        return 1
    return 0


def interrupted(*_):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupted)
    files, fresh = photos(args.data, args.per_class)
    install = Installation("retrain-bench", database_url=args.database_url, redis_url=args.redis_url,
                           keep=args.keep)
    try:
        return run(args, install, files, fresh)
    except (BenchmarkFailed, processes.ProcessFailed) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        log = install.var / "worker.log"
        if isinstance(e, BenchmarkFailed) and log.exists():
            print(f"--- worker log (tail) ---\n{processes.tail(log, 60)}", file=sys.stderr)
        return 1
    finally:
        install.close()


if __name__ == "__main__":
    sys.exit(main())
