"""The feedback loop end to end: does production accuracy only ever go up as people label?

A throwaway installation (a temporary folder for media, models, embeddings and the SQLite
database, or with --database-url a database this script creates on that PostgreSQL server and
drops at the end; the filesystem broker there, or with --redis-url that Redis under queue names
of its own) and one real Celery worker on both queues, started by animalsite.processes as
run_all starts it. The app runs with RETRAIN_AFTER_LABELS = --retrain-every and RETRAIN_MODE =
head; its gate, promotions and re-predictions are its own.

A fixed ~30% of DIR, chosen by a salted hash of each photo's content, is held out: never
uploaded, never labelled. The classes are DIR's folder names; the rest is uploaded through
classifier.uploads and predicted by the worker (the zero-shot version). A simulated annotator
then takes images from the review queue in queue order (labeling.review_queue.queue_next) and
answers through labeling.services.decision_make, action "choose": the true class (the folder),
except that with probability --noise it answers a random other class of DIR. After every
--retrain-every decisions it waits until the worker is idle (the retrain check, the run, the
gate, the re-prediction of a new champion), as a person's later decisions would find it; the
label trigger itself is the app's.

The production version is scored on the held-out photos over all of DIR's classes (a class
ImageNet does not know included), from their pooled features through the version's own
Predictor (the stored-feature re-scoring path the app uses), after the zero-shot start and after
every promotion.

    python -m benchmarks.loop --data ../shared/datasets/caltech101-animals [--noise 0.05]
        [--retrain-every 50] [--seed 0] [--plot docs/images/loop.svg]

The last line printed is JSON: zero_shot_accuracy, final_accuracy, curve (labels, version,
accuracy per production version), max_drop, promotions, labels, seconds, and the runs' outcomes.
"""

import argparse
import hashlib
import json
import random
import signal
import sys
import time
from pathlib import Path

from animalsite import processes
from benchmarks.harness import BenchmarkFailed, Installation, django_setup, queued_messages, wait_until

REPO = Path(__file__).resolve().parent.parent
HOLDOUT_SALT = "loop-benchmark-holdout"


def held_out(sha256: str, fraction: float) -> bool:
    """By content alone, with a salt of its own: the app's test split uses another."""
    digest = hashlib.sha256(f"{HOLDOUT_SALT}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def idle(queues: list[str]) -> bool:
    """Nothing waits for the worker: no message, no pending retrain check, run or job."""
    from django.core.cache import caches

    from classifier.models import InferenceJob, TrainingRun
    from labeling.retrain import retrain_check_key

    return (queued_messages(queues) == 0 and caches["shared"].get(retrain_check_key()) is None
            and not TrainingRun.objects.filter(status__in=["queued", "running"]).exists()
            and not InferenceJob.objects.exclude(status__in=["done", "cancelled", "failed"]).exists())


def settle(queues: list[str], worker, timeout: float) -> None:
    """Idle on three polls in a row: the worker may hold a message it took from the queue."""
    streak = [0]

    def steady():
        streak[0] = streak[0] + 1 if idle(queues) else 0
        return streak[0] >= 3

    wait_until("the worker to finish the retrain, gate and re-prediction", steady, timeout, worker, every=0.4)


def upload_all(files: list[tuple[Path, str]], worker, timeout: float) -> tuple[dict[int, str], object]:
    from django.contrib.auth import get_user_model

    from classifier import registry, uploads
    from classifier.models import Image
    from labeling.roles import role_group

    registry.species_create_many(names=sorted({label for _, label in files}))
    user_model = get_user_model()
    uploader = user_model.objects.create_user("loop-bench-uploader")
    uploader.groups.add(role_group("uploader"))
    truth = {}
    for path, label in files:
        result = uploads.image_upload(user=uploader, filename=path.name, data=path.read_bytes())
        truth[result.image.id] = label
    images = Image.objects.filter(id__in=list(truth))
    wait_until(f"the worker to predict the {len(truth)} uploads",
               lambda: images.filter(status__in=["predicted", "failed"]).count() == len(truth), timeout, worker,
               every=0.25)
    annotator = user_model.objects.create_user("loop-bench-annotator")
    annotator.groups.add(role_group("annotator"))
    return truth, annotator


class HeldOut:
    """The held-out photos' features, computed once; any version scored from them."""

    def __init__(self, files: list[tuple[Path, str]], cache_dir: Path, backbone: str):
        from classifier.ml.datasets import Item
        from classifier.ml.embed import embed_items, print_progress

        self.labels = [label for _, label in files]
        self.features = embed_items([Item(path=p, label=label) for p, label in files], backbone=backbone,
                                    cache_dir=cache_dir, progress=print_progress("embed held-out"))

    def accuracy(self, version) -> float:
        from classifier import serving
        from classifier.ml.cards import ModelCard
        from classifier.ml.predict import Predictor

        predictor = Predictor(ModelCard.from_dict(version.card), model_dir=serving.model_dir_of(version))
        results = predictor.predict_embeddings(self.features, top_k=1)
        return sum(r.label == t for r, t in zip(results, self.labels)) / len(self.labels)


def annotate(ctx: dict, args, queues: list[str], worker, held: HeldOut, started: float) -> list[dict]:
    from classifier import selectors
    from labeling import review_queue, services

    rng = random.Random(args.seed)
    classes = sorted(set(ctx["truth"].values()))
    production = selectors.production_model()
    curve = [{"labels": 0, "version": production.name, "accuracy": round(held.accuracy(production), 4)}]
    print(f"zero-shot start: {curve[0]}", file=sys.stderr, flush=True)
    for done in range(1, len(ctx["truth"]) + 1):
        claims = review_queue.queue_next(user=ctx["annotator"], count=1)
        if not claims:
            raise BenchmarkFailed(f"the queue ran dry after {done - 1} of {len(ctx['truth'])} decisions")
        truth = ctx["truth"][claims[0].image_id]
        answer = rng.choice([c for c in classes if c != truth]) if rng.random() < args.noise else truth
        services.decision_make(user=ctx["annotator"], token=claims[0].token, action="choose", label=answer)
        if done % args.retrain_every and done != len(ctx["truth"]):
            continue
        settle(queues, worker, args.step_timeout)
        current = selectors.production_model()
        if current.id != production.id:
            production = current
            curve.append({"labels": done, "version": current.name, "accuracy": round(held.accuracy(current), 4)})
        print(f"{done} labels, {time.perf_counter() - started:.0f} s: production {current.name} "
              f"({curve[-1]['accuracy']:.4f})", file=sys.stderr, flush=True)
    return curve


def runs_summary() -> list[dict]:
    from classifier.models import TrainingRun

    return [{"run": r.id, "status": r.status, "version": r.version.name if r.version else None,
             "promoted": bool(r.version and r.version.promoted), "reason": (r.version.status_reason if r.version
                                                                             else r.error)[:300]}
            for r in TrainingRun.objects.select_related("version").order_by("id")]


def svg_plot(curve: list[dict], total_labels: int, path: Path) -> None:
    """Held-out accuracy of the production version against labels: a step line, one dot per version."""
    width, height, left, bottom, top, right = 640, 320, 56, 40, 20, 20
    lo = min(0.5, min(p["accuracy"] for p in curve) - 0.02)
    x = lambda n: left + (width - left - right) * n / max(total_labels, 1)  # noqa: E731
    y = lambda a: top + (height - top - bottom) * (1 - (a - lo) / (1 - lo))  # noqa: E731
    steps = []
    for i, p in enumerate(curve):
        end = curve[i + 1]["labels"] if i + 1 < len(curve) else total_labels
        steps.append(f"{x(p['labels']):.1f},{y(p['accuracy']):.1f} {x(end):.1f},{y(p['accuracy']):.1f}")
    grid = "".join(f'<line x1="{left}" x2="{width - right}" y1="{y(a):.1f}" y2="{y(a):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{y(a) + 4:.1f}" text-anchor="end" font-size="11">{a:.2f}</text>'
                   for a in [lo + k * (1 - lo) / 5 for k in range(6)])
    dots = "".join(f'<circle cx="{x(p["labels"]):.1f}" cy="{y(p["accuracy"]):.1f}" r="3.5" fill="#2b6cb0">'
                   f'<title>{p["version"]}: {p["accuracy"]:.4f} after {p["labels"]} labels</title></circle>'
                   for p in curve)
    ticks = "".join(f'<text x="{x(n):.1f}" y="{height - bottom + 16}" text-anchor="middle" font-size="11">{n}</text>'
                    for n in range(0, total_labels + 1, max(100, total_labels // 8 // 100 * 100)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">'
        f'<rect width="100%" height="100%" fill="white"/>{grid}{ticks}'
        f'<polyline fill="none" stroke="#2b6cb0" stroke-width="2" points="{" ".join(steps)}"/>{dots}'
        f'<text x="{(width + left) / 2}" y="{height - 6}" text-anchor="middle" font-size="12">labels</text>'
        f'<text x="14" y="{top + (height - top - bottom) / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + (height - top - bottom) / 2})">held-out accuracy (production)</text>'
        '</svg>\n')


def summary(curve: list[dict], args, n_labels: int, n_held: int, seconds: float) -> dict:
    drops = [a["accuracy"] - b["accuracy"] for a, b in zip(curve, curve[1:])]
    return {
        "zero_shot_accuracy": curve[0]["accuracy"], "final_accuracy": curve[-1]["accuracy"], "curve": curve,
        "max_drop": round(max([0.0] + drops), 4), "promotions": len(curve) - 1, "labels": n_labels,
        "held_out": n_held, "noise": args.noise, "retrain_every": args.retrain_every, "seed": args.seed,
        "seconds": round(seconds, 1), "runs": runs_summary(),
    }


def split_data(args) -> tuple[list, list]:
    """(held out, to upload): (path, class) pairs of DIR, split by a salted content hash."""
    from classifier.ml.cards import file_sha256
    from classifier.ml.datasets import image_folder

    files = [(i.path, i.label.strip().lower()) for i in image_folder(args.data)]
    held = [(p, label) for p, label in files if held_out(file_sha256(p), args.holdout)]
    return held, [(p, label) for p, label in files if (p, label) not in set(held)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="ImageFolder: class/photo.jpg")
    parser.add_argument("--noise", type=float, default=0.05, help="chance the annotator answers a wrong class")
    parser.add_argument("--retrain-every", type=int, default=50, help="RETRAIN_AFTER_LABELS")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout", type=float, default=0.3, help="share of DIR held out (by content hash)")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "images" / "loop.svg")
    parser.add_argument("--database-url", help="a PostgreSQL server: a database is created there and dropped after")
    parser.add_argument("--redis-url", help="a Redis broker; this run's queues have names of their own")
    parser.add_argument("--step-timeout", type=float, default=300.0, help="seconds the worker may take per step")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="embedding cache for the held-out photos' features (default: the temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if not 0 <= args.noise < 1 or args.retrain_every < 1:
        parser.error("--noise must be in [0, 1) and --retrain-every at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.perf_counter()
    held, labelled = split_data(args)
    install = Installation("loop-bench", database_url=args.database_url, redis_url=args.redis_url, keep=args.keep)
    worker = None
    try:
        install.create_database()
        var = install.var
        env = install.env(EMBEDDING_CACHE_DIR=str(var / "embeddings"), ONNX_DIR=str(var / "onnx"),
                          RETRAIN_AFTER_LABELS=str(args.retrain_every), RETRAIN_MODE="head",
                          CELERY_TASK_ALWAYS_EAGER="0")
        django_setup(env)  # this process reads the same settings as the worker
        queues = [env["INFERENCE_QUEUE"], env["TRAINING_QUEUE"]]
        worker = install.start_worker(env, queues, timeout=args.step_timeout)
        truth, annotator = upload_all(labelled, worker, args.step_timeout * 3)
        print(f"{len(truth)} uploads predicted, {time.perf_counter() - started:.0f} s; {len(held)} held out",
              file=sys.stderr, flush=True)
        from django.conf import settings

        held_out_set = HeldOut(held, args.cache_dir or var / "embeddings", settings.DEFAULT_BACKBONE)
        curve = annotate({"truth": truth, "annotator": annotator}, args, queues, worker, held_out_set, started)
        result = summary(curve, args, len(truth), len(held), time.perf_counter() - started)
        svg_plot(curve, len(truth), args.plot)
        print(json.dumps(result))
        return 0
    except (BenchmarkFailed, processes.ProcessFailed) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        if worker is not None:
            print(processes.tail(install.var / "worker.log", 60), file=sys.stderr)
        return 1
    finally:
        install.close()


if __name__ == "__main__":
    sys.exit(main())
