"""More like this at scale: k=10 query latency through classifier.similarity and recall@10
against exact float32 brute force, over N synthetic embeddings of the production backbone's
width with cluster structure (rows written directly to a throwaway SQLite database).

    python benchmarks/similarity.py --n 100000

Last line: JSON with p50_ms, p95_ms, recall_at_10, n. Bar (issue 12): p50 <= 50 ms, recall@10 >= 0.99.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[0] = str(REPO)  # not benchmarks/, whose http.py would shadow the standard library
DIM = 1280


def synthetic(n: int, rng: np.random.Generator, clusters: int = 200) -> np.ndarray:
    """Pooled-ReLU-like features: non-negative, around a few hundred class centres."""
    centres = np.abs(rng.normal(0.0, 1.0, (clusters, DIM))).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    return np.abs(centres[labels] + rng.normal(0.0, 0.6, (n, DIM)).astype(np.float32))


def load(vectors: np.ndarray, backbone: str) -> list[int]:
    from django.db import transaction

    from classifier.models import Embedding, Image

    ids = []
    with transaction.atomic():
        for start in range(0, len(vectors), 5000):
            images = Image.objects.bulk_create([
                Image(sha256=f"{start + i:064x}", original="x", preview="x", thumbnail="x", format="JPEG",
                      original_mode="RGB", width=1, height=1, size_bytes=1)
                for i in range(min(5000, len(vectors) - start))])
            ids += [im.id for im in images]
            Embedding.objects.bulk_create([
                Embedding(image_id=im.id, backbone=backbone, dim=DIM, vector=vectors[start + i].astype("<f4").tobytes())
                for i, im in enumerate(images)])
    return ids


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)

    var = Path(tempfile.mkdtemp(prefix="animalsite-similarity-"))
    os.environ.update(VAR_DIR=str(var), DATABASE_URL=f"sqlite:///{var / 'db.sqlite3'}",
                      CELERY_BROKER_URL="filesystem://", DJANGO_SETTINGS_MODULE="animalsite.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from classifier import similarity

    call_command("migrate", verbosity=0)
    rng = np.random.default_rng(0)
    vectors = synthetic(args.n, rng)
    ids = np.asarray(load(vectors, settings.DEFAULT_BACKBONE))
    started = time.perf_counter()
    similarity.matrix(settings.DEFAULT_BACKBONE)
    load_s = time.perf_counter() - started

    exact = similarity.unit(vectors)
    picks = rng.choice(args.n, size=args.queries, replace=False)
    times, recalls = [], []
    for p in picks:
        query = vectors[p] + rng.normal(0.0, 0.05, DIM).astype(np.float32)  # a photo like a stored one
        started = time.perf_counter()
        hits = similarity.nearest(query, k=args.k, name=settings.DEFAULT_BACKBONE)
        times.append((time.perf_counter() - started) * 1000.0)
        truth = set(ids[np.argsort(-(exact @ similarity.unit(query.reshape(1, -1))[0]), kind="stable")[:args.k]])
        recalls.append(len(truth & {i for i, _ in hits}) / args.k)
    result = {"p50_ms": round(float(np.percentile(times, 50)), 2), "p95_ms": round(float(np.percentile(times, 95)), 2),
              "recall_at_10": round(float(np.mean(recalls)), 4), "n": args.n, "queries": args.queries,
              "matrix_load_s": round(load_s, 2), "cpus": os.cpu_count()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
