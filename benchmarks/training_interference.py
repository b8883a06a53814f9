"""Does training starve predictions? Upload -> prediction latency with no training, then while a
CPU fine-tune runs on the training worker (issue 13).

The stack is make run's: one worker on the inference queue, one on the training queue at
processes.TRAINING_NICENESS. Labels come in through a label import (a zip of the first photos of
each class); the probe photos are others of the same set, uploaded one at a time, each timed from
the upload to its prediction row.

    python -m benchmarks.training_interference [--data tests/data/caltech101-subset]
        [--per-class 12] [--probes 20] [--database-url postgres://...] [--redis-url redis://...]

Last line, JSON: p50_without_s, p50_during_s, p50_ratio (during / without), max_wait_s (the
slowest probe in either phase), probes_during_training (probes whose whole wait fell inside the
run's training), cancel_s, bar_ok (p50_ratio <= 3 and max_wait_s <= 10).
"""

import argparse
import io
import json
import statistics
import sys
import time
import zipfile
from pathlib import Path

from animalsite import processes
from benchmarks.harness import BenchmarkFailed, Installation, class_photos, django_setup, redact, wait_until

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "tests" / "data" / "caltech101-subset")
    parser.add_argument("--per-class", type=int, default=12, help="labelled photos per class")
    parser.add_argument("--probes", type=int, default=20, help="probe uploads per phase")
    parser.add_argument("--epochs", type=int, default=20, help="the fine-tune's epochs (it is cancelled)")
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    return parser.parse_args(argv)


def labelled_zip(photos: dict[str, list[Path]], per_class: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, paths in photos.items():
            for path in paths[:per_class]:
                archive.write(path, f"{label}/{path.name}")
    return buffer.getvalue()


def import_labels(user, photos, per_class: int, worker) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from labeling import imports
    from labeling.models import ImportJob

    job = imports.import_start(user=user, file=SimpleUploadedFile("labels.zip", labelled_zip(photos, per_class)))
    job = wait_until("the label import", lambda: ImportJob.objects.filter(
        id=job.id, status__in=["done", "failed"]).first(), timeout=600, worker=worker)
    if job.status != "done":
        raise BenchmarkFailed(f"the label import failed: {job.error}")


def probe(user, path: Path, worker) -> float:
    """Seconds from the upload to the stored prediction."""
    from classifier import uploads
    from classifier.models import Prediction

    started = time.monotonic()
    image = uploads.image_upload(user=user, filename=path.name, data=path.read_bytes()).image
    wait_until(f"the prediction of {path.name}", lambda: Prediction.objects.filter(image=image).exists(),
               timeout=120, worker=worker, every=0.02)
    return time.monotonic() - started


def run_phases(args, install: Installation, env: dict) -> dict:
    from django.contrib.auth import get_user_model

    from classifier import registry
    from classifier.models import TrainingRun
    from classifier.training import runs

    photos = class_photos(args.data)
    registry.species_create_many(names=sorted(photos))
    registry.zero_shot_version_sync()
    user = get_user_model().objects.create_superuser("bench", password=None)
    inference = install.start_worker(env, [env["INFERENCE_QUEUE"]], name="inference")
    training = install.start_worker(env, [env["TRAINING_QUEUE"]], name="training",
                                    niceness=processes.TRAINING_NICENESS)
    import_labels(user, photos, args.per_class, inference)
    spare = [p for paths in photos.values() for p in paths[args.per_class:]]
    if len(spare) < 2 * args.probes + 1:
        raise BenchmarkFailed(f"{len(spare)} photos left after the labels; need {2 * args.probes + 1}")
    probe(user, spare.pop(), inference)  # the first prediction loads the model: not a probe
    without = [probe(user, spare.pop(), inference) for _ in range(args.probes)]

    run = runs.training_request(mode="finetune", trigger=TrainingRun.Trigger.MANUAL,
                                options={"epochs": args.epochs, "batch_size": 16, "patience": args.epochs})
    wait_until("the fine-tune's training stage", lambda: TrainingRun.objects.filter(
        id=run.id, status="running", progress__epoch__isnull=False).exists(), timeout=900, worker=training)
    during, inside = [], 0
    for _ in range(args.probes):
        seconds = probe(user, spare.pop(), inference)
        during.append(seconds)
        run.refresh_from_db()
        inside += run.status == "running"
    cancel_started = time.monotonic()
    runs.training_cancel(run=run, user=user)
    wait_until("the cancelled run to stop", lambda: TrainingRun.objects.filter(
        id=run.id, status__in=TrainingRun.FINISHED).exists(), timeout=600, worker=training)
    return {"without": without, "during": during, "inside": inside, "cancel_s": time.monotonic() - cancel_started,
            "labelled": args.per_class * len(photos)}


def summary(measured: dict) -> dict:
    p50_without, p50_during = statistics.median(measured["without"]), statistics.median(measured["during"])
    max_wait = max(measured["without"] + measured["during"])
    ratio = p50_during / p50_without
    return {"p50_without_s": round(p50_without, 3), "p50_during_s": round(p50_during, 3),
            "p50_ratio": round(ratio, 2), "max_wait_s": round(max_wait, 2),
            "probes": len(measured["during"]), "probes_during_training": measured["inside"],
            "labelled_images": measured["labelled"], "cancel_s": round(measured["cancel_s"], 1),
            "bar_ok": ratio <= 3 and max_wait <= 10}


def main(argv=None) -> int:
    args = parse_args(argv)
    install = Installation("interference", database_url=args.database_url, redis_url=args.redis_url)
    try:
        install.create_database()
        env = install.env(RETRAIN_AFTER_LABELS="0", TRAINING_MIN_PER_CLASS="3")
        django_setup(env)
        print(f"data {args.data}, database {redact(install.database_url)}, broker {env['CELERY_BROKER_URL']}")
        result = summary(run_phases(args, install, env))
    except BenchmarkFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        install.close()
    print(f"upload -> prediction p50: {result['p50_without_s']} s without training, {result['p50_during_s']} s "
          f"during a CPU fine-tune ({result['p50_ratio']}x); slowest {result['max_wait_s']} s; "
          f"cancel took {result['cancel_s']} s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
