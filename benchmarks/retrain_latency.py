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
each class through classifier.services.image_upload, and the worker predicts them all (the
zero-shot version is exported to ONNX on its first prediction). RETRAIN_AFTER_LABELS is the
number of uploads, so that the annotator's last decision is the one that triggers the run.

Then an annotator (role group "annotator") works the review queue (labeling.services
queue_next + decision_make, action "choose", the folder name as the label) until every upload
is labelled. A decision enqueues a retrain check for the worker unless one is already waiting
(labeling.services: the waiting one counts its label), so before the last decision the script
waits until the worker has taken the queued check, as it would have between a person's
decisions (--no-settle: don't). The clock
starts when the last decision returns; the database is polled every --poll seconds (0.1) for:

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
(10) test images or more (a smaller one vetoes only a drop over 0.5): at these sizes (2-6 test images per class) one image is worth 0.1-0.3
of F1, and before that rule the gate kept the zero-shot champion (macro-F1 0.61) against a head
at 0.90. --max-class-drop sets PROMOTION_MAX_CLASS_DROP for the run (1 leaves macro-F1 alone
to decide).

    python benchmarks/retrain_latency.py [--data ../shared/datasets/caltech101-animals] [--per-class 12]
        [--max-class-drop 1] [--database-url postgres://postgres@127.0.0.1:5432/postgres]
        [--redis-url redis://127.0.0.1:6379/14]

The last line printed is JSON. The exit status is 1 when the trigger did not fire, the run
failed, the gate kept the version a candidate (the table up to (a) and the gate's verdict are
still printed), or anything timed out; the reason, the state of the run and the worker log's
tail are printed.
"""

import os
import sys

# Run as a script, this folder would come first on sys.path, and http.py here would stand in
# for the standard library's http (Django imports http.client): the repository takes its place.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import json
import platform
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(_HERE).parent
sys.path.insert(0, str(REPO))

from benchmarks.harness import (
    descendants,
    die_with_parent,
    postgres_create,
    postgres_drop,
    redact,
    redis_forget,
    tail,
)

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "caltech101-animals"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
# What a run's stage covers (classifier/training.py); the poll sees only the stages that last.
STAGE_NOTES = {"preparing": " (label snapshot)", "embed": " (features from cache)", "fit": " (head, then card)",
               "export": " (ONNX export, then gate)", "done": " (promoted or kept)"}


class BenchmarkFailed(RuntimeError):
    pass


# --- photos ---------------------------------------------------------------------------------

def photos(root: Path, per_class: int) -> tuple[dict[str, list[Path]], Path]:
    """per_class photos of each class folder (sorted by name), and one more for the fresh upload."""
    if not root.is_dir():
        raise SystemExit(f"{root} is not a folder (expected an ImageFolder: class/photo.jpg)")
    chosen, spare = {}, []
    for folder in sorted(d for d in root.iterdir() if d.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < per_class:
            raise SystemExit(f"{folder} has {len(files)} photos; --per-class asks for {per_class}")
        chosen[folder.name] = files[:per_class]
        spare += files[per_class:per_class + 1]
    if len(chosen) < 2 or not spare:
        raise SystemExit(f"{root}: need at least two class folders and one photo beyond --per-class")
    return chosen, spare[0]


# --- processes ------------------------------------------------------------------------------

def start_worker(env: dict, log_path: Path, concurrency: int, timeout: float) -> subprocess.Popen:
    """One `celery worker` on both queues, as tests/conftest.py and run_all start it."""
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "animalsite", "worker",
         "-Q", f"{env['INFERENCE_QUEUE']},{env['TRAINING_QUEUE']}", "--concurrency", str(concurrency),
         "--pool", "prefork", "--loglevel", "INFO", "--hostname", f"retrain-bench-{secrets.token_hex(3)}@%h",
         "--without-gossip", "--without-mingle"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=die_with_parent)
    process.log, process.log_path = log, log_path
    deadline = time.monotonic() + timeout
    while "ready." not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise BenchmarkFailed(f"the Celery worker did not start (exit code {process.poll()}):\n{tail(log_path)}")
        time.sleep(0.2)
    return process


def stop_worker(process: subprocess.Popen) -> None:
    """SIGTERM (a warm shutdown: it finishes the task at hand), then SIGKILL what is left of its tree."""
    tree = descendants(process.pid) if process.poll() is None else []
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    for pid in tree:  # only processes this script started
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    process.log.close()


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """(busy CPU seconds of the whole machine since boot, CPU seconds used by these processes)."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # everything but idle and iowait
    ours = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            ours += int(stat[11]) + int(stat[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return busy / tick, ours / tick


# --- the benchmark --------------------------------------------------------------------------

def wait_until(what: str, done, timeout: float, worker: subprocess.Popen, every: float = 0.2):
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


def setup(files: dict[str, list[Path]], worker: subprocess.Popen, timeout: float) -> dict:
    """Classes, uploads (predicted by the worker), an annotator. Not timed."""
    from django.contrib.auth import get_user_model

    from classifier import selectors, services
    from classifier.models import Image
    from labeling.roles import role_group

    services.species_create_many(names=list(files))
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
            result = services.image_upload(user=uploader, filename=path.name, data=path.read_bytes())
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


def queued_messages(names: list[str]) -> int:
    """Messages waiting in these queues of the broker (not counting the one the worker holds)."""
    from animalsite.celery import app

    with app.connection_for_write() as connection:
        channel = connection.default_channel  # kombu's virtual channel (filesystem, Redis): no declare needed
        return sum(channel._size(name) for name in names)


def annotate(annotator, truth: dict[int, str], *, settle: bool, queues: list[str], worker, timeout: float) -> dict:
    """Works the queue until every upload is labelled; returns the clock of the last decision.

    A decision enqueues a retrain check unless one is already waiting. By default the last
    decision waits until the worker has taken the queued check, as it would have between a
    person's decisions (seconds apart): the figures are then the pipeline's, not a backlog's."""
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
        claims = labeling_services.queue_next(user=annotator, count=1)
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
        raise BenchmarkFailed(f"{len(labelled)} images labelled, expected {len(truth)}: the queue repeated or skipped some")
    return {"t0": after, "t0_wall": wall, "annotate_s": after - started - settle_s, "last_decision_ms": decision_ms[-1],
            "decision_ms_median": sorted(decision_ms)[len(decision_ms) // 2], "kinds": kinds,
            "settled": settle, "settle_s": settle_s, "backlog": backlog}


def diagnose(truth: dict[int, str]) -> str:
    """Why no run, or why it failed: the label count the trigger sees, what training_check says."""
    from django.conf import settings

    from classifier import training
    from classifier.models import ModelVersion, TrainingRun
    from labeling.datasets import labels_since

    lines = []
    runs = list(TrainingRun.objects.order_by("id"))
    lines.append(f"training runs: {[(r.id, r.trigger, r.mode, r.status, r.stage, r.error) for r in runs] or 'none'}")
    last = runs[-1] if runs else None
    lines.append(f"ground-truth labels since the last run: {labels_since(last.created if last else None)} "
                 f"(RETRAIN_AFTER_LABELS={settings.RETRAIN_AFTER_LABELS}, RETRAIN_MODE={settings.RETRAIN_MODE})")
    try:
        training.training_check()
        lines.append("training_check(): the labels can be trained on")
    except training.TrainingRefused as e:
        lines.append(f"training_check() refuses: {e}")
    for v in ModelVersion.objects.order_by("id"):
        lines.append(f"version {v.name}: {v.kind} {v.status}; {v.status_reason}")
    return "\n".join(lines)


def measure(*, ctx: dict, clock: dict, fresh: Path, worker: subprocess.Popen, timeout: float, poll: float) -> dict:
    """Polls the database from the last decision on; returns what it saw and when."""
    from classifier import services
    from classifier.models import ModelVersion, Prediction, TrainingRun

    t0 = clock["t0"]
    ids = list(ctx["truth"])
    seen: dict[str, float] = {}
    stages: dict[str, float] = {}
    fresh_image = None
    fresh_prediction = None
    polls = 0

    def mark(name):
        seen.setdefault(name, time.perf_counter() - t0)

    deadline = t0 + timeout
    while True:
        polls += 1
        run = (TrainingRun.objects.filter(trigger=TrainingRun.Trigger.LABELS)  # the first that trains
               .exclude(status__in=[TrainingRun.Status.SKIPPED, TrainingRun.Status.REFUSED]).order_by("id").first())
        if run is not None:
            mark("run requested")
            if run.status != TrainingRun.Status.QUEUED:
                mark("run started")
            if run.stage:
                stages.setdefault(run.stage, time.perf_counter() - t0)
            if run.status in (TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED):
                raise BenchmarkFailed(f"the training run {run.status}: {run.error}")
            version = run.version
            if version is not None:
                mark("version registered")
                if version.status == ModelVersion.Status.PRODUCTION:
                    mark("production")
                    if fresh_image is None:
                        result = services.image_upload(user=ctx["uploader"], filename=fresh.name, data=fresh.read_bytes())
                        if not result.created:
                            raise BenchmarkFailed(f"the fresh photo {fresh} was uploaded before")
                        fresh_image = result.image
                        mark("fresh upload stored")
                if run.status == TrainingRun.Status.SUCCEEDED:
                    mark("run succeeded")
                    if version.status != ModelVersion.Status.PRODUCTION:  # the gate said no: (b)-(d) never come
                        return {"run": run, "version": version, "seen": seen, "stages": stages, "polls": polls,
                                "fresh_image": None, "fresh_prediction": None, "refused": True}
                if fresh_image is not None and fresh_prediction is None:
                    fresh_prediction = Prediction.objects.filter(image=fresh_image).select_related("model_version").first()
                    if fresh_prediction is not None:
                        mark("fresh upload predicted")
                        if fresh_prediction.model_version_id != version.id:
                            raise BenchmarkFailed(f"the fresh upload was predicted by {fresh_prediction.model_version.name}, "
                                                  f"not by the new version {version.name}")
                if "production" in seen and "labelled re-predicted" not in seen and \
                        Prediction.objects.filter(model_version=version, image_id__in=ids).count() == len(ids):
                    mark("labelled re-predicted")
                if {"run succeeded", "fresh upload predicted", "labelled re-predicted"} <= set(seen):
                    return {"run": run, "version": version, "seen": seen, "stages": stages, "polls": polls,
                            "fresh_image": fresh_image, "fresh_prediction": fresh_prediction, "refused": False}
        if worker.poll() is not None:
            raise BenchmarkFailed(f"the worker exited with code {worker.returncode}")
        if time.perf_counter() > deadline:
            waiting = [e for e in ("run requested", "run succeeded", "production", "fresh upload predicted",
                                   "labelled re-predicted") if e not in seen]
            raise BenchmarkFailed(f"timed out after {timeout:.0f} s; still waiting for: {', '.join(waiting)} "
                                  f"(seen: {', '.join(seen) or 'nothing'})")
        time.sleep(poll)


def recorded(result: dict, clock: dict, ids: list[int]) -> dict:
    """The app's own timestamps, in seconds since the last decision returned."""
    from django.db.models import Max

    from classifier.models import Prediction

    run, version = result["run"], result["version"]
    run.refresh_from_db()
    version.refresh_from_db()

    def since(moment):
        return None if moment is None else moment.timestamp() - clock["t0_wall"]

    repredicted = Prediction.objects.filter(model_version=version, image_id__in=ids).aggregate(m=Max("created"))["m"]
    return {
        "run requested": since(run.created), "run started": since(run.started),
        "version registered": since(version.created), "production": since(version.promoted),
        "run succeeded": since(run.finished),
        "fresh upload stored": since(result["fresh_image"].created) if result["fresh_image"] else None,
        "fresh upload predicted": since(result["fresh_prediction"].created) if result["fresh_prediction"] else None,
        "labelled re-predicted": None if result["refused"] else since(repredicted),
    }


def report(args, env: dict, ctx: dict, clock: dict, result: dict, stamps: dict, database: str, broker: str,
           log_text: str) -> dict:
    from classifier.models import Prediction

    run, version = result["run"], result["version"]
    seen, stages = result["seen"], result["stages"]
    summary = version.metrics.get("summary", {})
    test = version.metrics.get("test", {})
    gate = version.gate or {}
    training_s = (run.finished - run.started).total_seconds() if run.started and run.finished else None
    ids = list(ctx["truth"])
    backends = sorted(set(Prediction.objects.filter(model_version=version, image_id__in=ids)
                          .values_list("backend", flat=True)))
    fresh = result["fresh_prediction"]
    classes = len(version.classes)
    accuracy = test.get("accuracy", summary.get("accuracy"))
    macro_f1 = test.get("macro_f1", summary.get("macro_f1"))

    def f(x, width=9):
        return f"{'-':>{width}}" if x is None else f"{x:{width}.2f}"

    print()
    print(f"{len(ids)} labels ({classes} classes x {args.per_class}) from {args.data}; "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); database {database}; broker {broker}; "
          f"one worker, prefork x{args.concurrency}, queues inference+training")
    print(f"setup: uploads predicted by the zero-shot champion in {ctx['upload_and_predict_s']:.1f} s; "
          f"{len(ids)} decisions in {clock['annotate_s']:.1f} s (median {clock['decision_ms_median']:.0f} ms, "
          f"the last {clock['last_decision_ms']:.0f} ms; zero-shot suggestion accepted {clock['kinds'].get('accepted', 0)}, "
          f"corrected {clock['kinds'].get('corrected', 0)}); "
          + (f"{clock['settle_s']:.1f} s waiting for the worker to take the queued retrain check "
             "before the last decision" if clock["settled"] else "last decision made straight after the others "
             f"({clock['backlog']} messages still queued for the worker)"))
    print(f"CPU during the timed {clock['timed_s']:.1f} s: worker + this process {clock['cpu_ours_s']:.1f} core-s, "
          f"other processes on the machine {clock['cpu_others_s']:.1f} core-s"
          + (" (a busy machine: the figures are slower than on an idle one)"
             if clock["cpu_others_s"] > 0.25 * clock["timed_s"] else ""))
    print()
    print(f"{'phase (seconds since the last decision returned)':<52}{'observed':>9}{'recorded':>10}")
    rows = [("trigger: run requested (labels counted in the worker)", "run requested"),
            ("run started (claimed by the worker)", "run started")]
    for stage in sorted(stages, key=stages.get):
        rows.append((f"  stage '{stage}' first seen{STAGE_NOTES.get(stage, '')} *", None, stages[stage]))
    rows += [("version registered (candidate)", "version registered"),
             ("(b) production (gate promoted it)", "production"),
             ("(a) run succeeded", "run succeeded"),
             ("fresh upload stored (on seeing production)", "fresh upload stored"),
             ("(c) fresh upload predicted by the new version", "fresh upload predicted"),
             (f"(d) all {len(ids)} labelled images re-predicted", "labelled re-predicted")]
    for row in rows:
        if len(row) == 3:
            print(f"{row[0]:<52}{f(row[2])}")
        else:
            label, key = row
            print(f"{label:<52}{f(seen.get(key))}{f(stamps.get(key), 10)}")
    print("* as the run's progress callback wrote it: at most once a second except at a stage's end, so a stage "
          "that starts within a second of the last write shows only when it ends")
    print()
    parts = [("trigger (decision -> run requested)", 0.0, stamps.get("run requested")),
             ("queued -> claimed", stamps.get("run requested"), stamps.get("run started")),
             ("claimed -> version registered (snapshot, fit, card)", stamps.get("run started"),
              stamps.get("version registered")),
             ("registered -> promoted (ONNX export, gate)", stamps.get("version registered"), stamps.get("production")),
             ("promoted -> run succeeded", stamps.get("production"), stamps.get("run succeeded")),
             ("production -> fresh upload predicted (upload at sight)", stamps.get("production"),
              stamps.get("fresh upload predicted")),
             ("production -> all labelled re-predicted", stamps.get("production"), stamps.get("labelled re-predicted"))]
    print(f"{'where the time goes (recorded timestamps)':<56}{'seconds':>9}")
    for label, start, end in parts:
        if start is not None and end is not None:
            print(f"{label:<56}{end - start:9.2f}")
    gate_s = (stamps["production"] - stamps["version registered"]) if stamps.get("production") is not None else None
    exported = re.search(rf"exported {re.escape(version.name)} to ONNX in ([0-9.]+) s", log_text)
    export_s = float(exported.group(1)) if exported else None
    if export_s is not None and gate_s is not None:
        print(f"  of which ONNX export (worker log) {export_s:.2f} s, gate (both versions on the test split) and "
              f"promotion {gate_s - export_s:.2f} s")
    print(f"training run {run.id} ({run.mode}, trigger {run.trigger}): started -> finished {f(training_s, 0)} s; "
          f"the trainer's own figures: fit() {version.training.get('seconds')} s, of which embed "
          f"{summary.get('embed_seconds')} s (stored features, {summary.get('n_train', 0) + summary.get('n_val', 0) + summary.get('n_test', 0)} images) "
          f"and head fit {summary.get('fit_seconds')} s (weight decay {summary.get('weight_decay')}); "
          f"device {version.training.get('hardware', {}).get('device')}")
    print(f"new version {version.name}: test accuracy {accuracy:.4f}, macro-F1 {macro_f1:.4f} on "
          f"{summary.get('n_test')} test images (train {summary.get('n_train')}, val {summary.get('n_val')})")
    print(f"gate: {'PROMOTE' if gate.get('promote') else 'KEEP AS CANDIDATE'} - {gate.get('reason')}")
    print(f"      on {gate.get('n')} test images: champion {gate.get('champion')} accuracy "
          f"{gate.get('champion_accuracy', 0):.4f}, macro-F1 {gate.get('champion_macro_f1', 0):.4f}; challenger "
          f"accuracy {gate.get('challenger_accuracy', 0):.4f}, macro-F1 {gate.get('challenger_macro_f1', 0):.4f} "
          f"(PROMOTION_MAX_CLASS_DROP {env.get('PROMOTION_MAX_CLASS_DROP', 'default 0.02')})")
    drops = [c for c in gate.get("per_class", []) if c["delta"] < 0]
    if drops:
        print("      classes whose F1 dropped: " + ", ".join(
            f"{c['label']} {c['champion_f1']:.3f}->{c['challenger_f1']:.3f} (support {c['support']})" for c in drops))
    if fresh is not None:
        print(f"fresh upload: {fresh.label} ({fresh.confidence:.3f}) by {fresh.model_version.name} via {fresh.backend}, "
              f"{seen['fresh upload predicted'] - seen['fresh upload stored']:.2f} s from upload to prediction "
              f"(the app's latency_ms {fresh.latency_ms:.0f}, model_ms {fresh.model_ms:.1f}); re-predict backend {backends}")

    def r(x):
        return None if x is None else round(x, 3)

    out = {
        "seconds_to_run_succeeded": r(seen.get("run succeeded")),
        "seconds_to_production": r(seen.get("production")),
        "seconds_to_first_new_prediction": r(seen.get("fresh upload predicted")),
        "seconds_to_repredicted": r(seen.get("labelled re-predicted")),
        "training_seconds": r(training_s),
        "n_labels": len(ids), "classes": classes, "test_accuracy": accuracy, "test_macro_f1": macro_f1,
        "gate_promote": gate.get("promote"), "gate_reason": gate.get("reason"), "gate_test_images": gate.get("n"),
        "champion_accuracy": r(gate.get("champion_accuracy")), "champion_macro_f1": r(gate.get("champion_macro_f1")),
        "challenger_accuracy": r(gate.get("challenger_accuracy")),
        "challenger_macro_f1": r(gate.get("challenger_macro_f1")),
        "fit_seconds": version.training.get("seconds"), "embed_seconds": summary.get("embed_seconds"),
        "head_fit_seconds": summary.get("fit_seconds"), "onnx_export_seconds": export_s,
        "registered_to_promoted_seconds": r(gate_s),
        "recorded": {k: r(v) for k, v in stamps.items()},
        "stages_first_seen": {k: r(v) for k, v in stages.items()},
        "fresh_upload_backend": fresh.backend if fresh else None, "repredict_backends": backends,
        "poll_s": args.poll, "polls": result["polls"], "per_class": args.per_class,
        "settled_before_last_decision": clock["settled"], "backlog_at_last_decision": clock["backlog"],
        "cpu_core_seconds_ours": r(clock["cpu_ours_s"]), "cpu_core_seconds_other_processes": r(clock["cpu_others_s"]),
        "cpus": os.cpu_count(), "database": database, "broker": broker, "worker_concurrency": args.concurrency,
        "retrain_after_labels": int(env["RETRAIN_AFTER_LABELS"]),
        "max_class_drop": float(env.get("PROMOTION_MAX_CLASS_DROP", 0.02)),
    }
    print(json.dumps(out))
    return out


def main(argv=None) -> int:
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

    def interrupted(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    files, fresh = photos(args.data, args.per_class)
    n_labels = sum(map(len, files.values()))
    var = Path(tempfile.mkdtemp(prefix="animalsite-retrain-bench-"))
    suffix = secrets.token_hex(4)
    worker = None
    pg_name = None
    status = 1
    try:
        database_url = f"sqlite:///{var / 'db.sqlite3'}"
        if args.database_url:
            database_url, pg_name = postgres_create(args.database_url, "animalsite_retrain_bench")
        broker = args.redis_url or "filesystem://"
        env = dict(
            os.environ, VAR_DIR=str(var), MEDIA_ROOT=str(var / "media"), MODELS_ROOT=str(var / "models"),
            EMBEDDING_CACHE_DIR=str(var / "embeddings"), ONNX_DIR=str(var / "onnx"),
            DATABASE_URL=database_url, CELERY_BROKER_URL=broker, DJANGO_SETTINGS_MODULE="animalsite.settings",
            INFERENCE_QUEUE=f"retrain-bench-inference-{suffix}", TRAINING_QUEUE=f"retrain-bench-training-{suffix}",
            DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="127.0.0.1,localhost",
            RETRAIN_AFTER_LABELS=str(n_labels), RETRAIN_MODE="head",
            TRAINING_MIN_PER_CLASS=str(args.min_per_class), PROMOTION_MIN_TEST_IMAGES=str(args.min_test_images),
            CELERY_TASK_ALWAYS_EAGER="0", PYTHONUNBUFFERED="1",
        )
        if args.max_class_drop is not None:
            env["PROMOTION_MAX_CLASS_DROP"] = str(args.max_class_drop)
        os.environ.update(env)  # this process reads the same settings as the worker
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command

        assert settings.RETRAIN_AFTER_LABELS == n_labels and settings.RETRAIN_MODE == "head"
        call_command("migrate", verbosity=0)
        worker = start_worker(env, var / "worker.log", args.concurrency, args.setup_timeout)
        ctx = setup(files, worker, args.setup_timeout)
        print(f"setup done: {len(files)} classes, {n_labels} uploads predicted by {ctx['champion'].name} "
              f"in {ctx['upload_and_predict_s']:.1f} s; annotating", flush=True)
        clock = annotate(ctx["annotator"], ctx["truth"], settle=not args.no_settle,
                         queues=[env["INFERENCE_QUEUE"], env["TRAINING_QUEUE"]], worker=worker,
                         timeout=args.setup_timeout)
        pids = descendants(worker.pid) + [os.getpid()]
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
        time.sleep(0.5)  # the worker's log lines of the run are flushed
        report(args, env, ctx, clock, result, stamps, shown_db, redact(broker) if args.redis_url else broker,
               worker.log_path.read_text(errors="replace"))
        if result["refused"]:
            version = result["version"]
            print(f"FAILED: the gate kept {version.name} a {version.status}: {version.status_reason}", file=sys.stderr)
        else:
            status = 0
    except BenchmarkFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        if worker is not None:
            print(f"--- worker log (tail) ---\n{tail(worker.log_path, 60)}", file=sys.stderr)
    finally:
        if worker is not None:
            stop_worker(worker)
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        if pg_name:
            postgres_drop(args.database_url, pg_name)
        if args.redis_url:
            redis_forget(args.redis_url, suffix)
        if args.keep:
            print(f"kept {var}", file=sys.stderr)
        else:
            shutil.rmtree(var, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
