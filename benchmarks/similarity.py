"""More like this at scale: k=10 query latency through classifier.similarity.nearest and recall@10
against exact float32 brute force over the same rows, in the same run, on two sets of N embeddings
of the production backbone's width (rows written directly to a throwaway SQLite database):

- synthetic: N vectors around 200 class centres (non-negative, like pooled ReLU features);
  a query is a stored vector plus a little noise (a photo like a stored one);
- real: the backbone's pooled features of every photo in DATA (the Caltech animals) plus N - len(DATA)
  synthetic rows drawn around them (a random mix of two photos of one class plus noise scaled
  to the photos' spread per feature); a query is a real photo's stored vector, itself excluded,
  as the image page asks. photos_only_recall_at_10: the same photos searched among themselves
  alone with the index forced on (their own structure, nothing synthetic).

    python -m benchmarks.similarity [--n 100000] [--data ../shared/datasets/caltech101-animals]

The last line is JSON: p50_ms, p95_ms, recall_at_10 (each the worse of the two sets), n, and each
set's figures, with the exact search's own p50 over the same rows for comparison. Bar (issue 12):
p50 <= 50 ms, recall@10 >= 0.99.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DIM = 1280
BACKBONE = "efficientnet_lite0"


def synthetic(n: int, rng: np.random.Generator, clusters: int = 200) -> np.ndarray:
    """Pooled-ReLU-like features: non-negative, around a few hundred class centres."""
    centres = np.abs(rng.normal(0.0, 1.0, (clusters, DIM))).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    return np.abs(centres[labels] + rng.normal(0.0, 0.6, (n, DIM)).astype(np.float32))


def around(real: np.ndarray, labels: list[str], n: int, rng: np.random.Generator, spread: float = 0.5) -> np.ndarray:
    """n rows on the real photos' manifold: a random mix of two photos of one class, plus noise
    of `spread` times the photos' spread per feature, clipped at zero as ReLU features are."""
    labels = np.asarray(labels)
    classes = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    a = rng.integers(0, len(real), n)
    b = np.asarray([rng.choice(classes[labels[i]]) for i in a])
    mix = rng.uniform(0.0, 1.0, (n, 1)).astype(np.float32)
    noise = rng.normal(0.0, 1.0, (n, DIM)).astype(np.float32) * (spread * real.std(axis=0))
    return np.maximum(mix * real[a] + (1 - mix) * real[b] + noise, 0.0).astype(np.float32)


def real_features(data: Path, cache_dir: Path) -> tuple[np.ndarray, list[str]]:
    from classifier.ml.datasets import image_folder
    from classifier.ml.embed import embed_items, print_progress

    items = image_folder(data)
    return embed_items(items, backbone=BACKBONE, cache_dir=cache_dir, progress=print_progress()), [
        i.label for i in items]


def load(vectors: np.ndarray, backbone: str) -> np.ndarray:
    """Image and Embedding rows for `vectors` under `backbone`; their image ids."""
    from django.db import transaction

    from classifier.models import Embedding, Image

    ids = []
    with transaction.atomic():
        for start in range(0, len(vectors), 5000):
            images = Image.objects.bulk_create([
                Image(sha256=f"{backbone}-{start + i}", original="x", preview="x", thumbnail="x", format="JPEG",
                      original_mode="RGB", width=1, height=1, size_bytes=1)
                for i in range(min(5000, len(vectors) - start))])
            ids += [im.id for im in images]
            Embedding.objects.bulk_create([
                Embedding(image_id=im.id, backbone=backbone, dim=DIM, vector=vectors[start + i].astype("<f4").tobytes())
                for i, im in enumerate(images)])
    return np.asarray(ids)


def measure(vectors: np.ndarray, backbone: str, queries: list[tuple[np.ndarray, int | None]], k: int) -> dict:
    """Load the rows, then time each query through the service layer and score it against exact
    search over the same rows."""
    from classifier import similarity

    ids = load(vectors, backbone)
    started = time.perf_counter()
    index = similarity.matrix(backbone).index
    load_s = time.perf_counter() - started
    exact = similarity.unit(vectors)
    del vectors
    times, exact_times, recalls = [], [], []
    for query, row in queries:
        exclude = None if row is None else int(ids[row])
        started = time.perf_counter()
        hits = similarity.nearest(query, k=k, exclude=exclude, name=backbone)
        times.append((time.perf_counter() - started) * 1000.0)
        started = time.perf_counter()
        scores = exact @ similarity.unit(query.reshape(1, -1))[0]
        if row is not None:
            scores[row] = -np.inf
        truth = set(ids[np.argpartition(-scores, k)[:k]])
        exact_times.append((time.perf_counter() - started) * 1000.0)
        recalls.append(len(truth & {i for i, _ in hits}) / k)
    similarity.forget()
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p95_ms": round(float(np.percentile(times, 95)), 2),
            "recall_at_10": round(float(np.mean(recalls)), 4), "min_recall": round(float(np.min(recalls)), 2),
            "exact_p50_ms": round(float(np.percentile(exact_times, 50)), 2), "queries": len(queries),
            "load_and_build_s": round(load_s, 1), "index_mb": round(index.nbytes() / 2**20),
            "lists": 0 if index.centres is None else len(index.centres)}


def photos_only(real: np.ndarray, k: int) -> float:
    """recall@k of every photo's neighbours among the photos alone, the index forced on (about
    sqrt(n) lists): the real features' own structure, with no synthetic rows to make it easy."""
    from classifier.ml.vector_index import VectorIndex, unit

    index = VectorIndex(DIM, min_rows=1)
    index.add(np.arange(len(real)), np.arange(len(real)), real)
    exact, recalls = unit(real), []
    for row in range(len(real)):
        scores = exact @ exact[row]
        scores[row] = -np.inf
        truth = set(np.argpartition(-scores, k)[:k].tolist())
        recalls.append(len(truth & {i for i, _ in index.search(real[row], k, exclude=row)}) / k)
    return round(float(np.mean(recalls)), 4)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "caltech101-animals",
                        help="an ImageFolder of real photos ('' for the synthetic set alone)")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "var" / "embeddings",
                        help="the photos' embeddings, computed once")
    args = parser.parse_args(argv)

    var = Path(tempfile.mkdtemp(prefix="animalsite-similarity-"))
    os.environ.update(VAR_DIR=str(var), DATABASE_URL=f"sqlite:///{var / 'db.sqlite3'}",
                      CELERY_BROKER_URL="filesystem://", DJANGO_SETTINGS_MODULE="animalsite.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    rng = np.random.default_rng(0)
    vectors = synthetic(args.n, rng)
    picks = rng.choice(args.n, size=args.queries, replace=False)
    queries = [(vectors[p] + rng.normal(0.0, 0.05, DIM).astype(np.float32), None) for p in picks]
    sets = {"synthetic": measure(vectors, "synthetic-" + BACKBONE, queries, args.k)}
    del vectors, queries
    if str(args.data) not in ("", "."):
        real, labels = real_features(args.data, args.cache_dir)
        vectors = np.concatenate([real, around(real, labels, args.n - len(real), rng)])
        picks = rng.choice(len(real), size=min(args.queries, len(real)), replace=False)
        sets["real"] = measure(vectors, BACKBONE, [(real[p], int(p)) for p in picks], args.k)
        sets["real"].update(photos=len(real), photos_only_recall_at_10=photos_only(real, args.k))
        del vectors
    result = {"p50_ms": max(s["p50_ms"] for s in sets.values()), "p95_ms": max(s["p95_ms"] for s in sets.values()),
              "recall_at_10": min(s["recall_at_10"] for s in sets.values()), "n": args.n, **sets,
              "index_min_rows": settings.SIMILARITY_INDEX_MIN_ROWS, "cpus": os.cpu_count(),
              "load_1min": round(os.getloadavg()[0], 1)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
