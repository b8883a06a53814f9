"""Label-error detection (classifier.ml.label_errors): its speed, and what it finds on real photos.

  speed     find_label_issues on N x 1280 synthetic embeddings (100 classes, 5% of the labels
            flipped), the work a reviewer's queue request triggers at most once a minute;
  quality   Lite0 embeddings of caltech101-animals (computed once into --cache-dir) with 5%
            of the labels flipped at random to another class, over several draws: precision
            and recall of the flagged set, and what is flagged when no label is flipped.

    python -m benchmarks.label_errors --data ../shared/datasets/caltech101-animals [--rows 10000]

The last line printed is JSON with the figures.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from classifier.ml.datasets import image_folder
from classifier.ml.embed import embed_items, print_progress
from classifier.ml.label_errors import find_label_issues

REPO = Path(__file__).resolve().parent.parent


def flip(labels: np.ndarray, share: float, rng: np.random.Generator) -> tuple[np.ndarray, set[int]]:
    classes = np.unique(labels)
    rows = rng.choice(len(labels), round(share * len(labels)), replace=False)
    noisy = labels.copy()
    for row in rows:
        noisy[row] = rng.choice(classes[classes != labels[row]])
    return noisy, set(rows.tolist())


def speed(rows: int, *, classes: int = 100, dim: int = 1280, repeats: int = 3) -> dict:
    rng = np.random.default_rng(0)
    centres = np.abs(rng.normal(0.0, 1.0, (classes, dim)))
    truth = rng.integers(0, classes, rows)
    # Non-negative like pooled ReLU features; the noise as large as the centres' spread.
    embeddings = np.abs(centres[truth] + rng.normal(0.0, 1.0, (rows, dim))).astype(np.float32)
    noisy, _ = flip(truth, 0.05, rng)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        find_label_issues(embeddings, noisy)
        times.append(time.perf_counter() - start)
    return {"rows": rows, "dim": dim, "classes": classes, "seconds": [round(t, 2) for t in times]}


def quality(data: Path, cache_dir: Path, *, draws: int, share: float) -> dict:
    items = image_folder(data)
    embeddings = embed_items(items, backbone="efficientnet_lite0", cache_dir=cache_dir, progress=print_progress())
    truth = np.array([i.label for i in items])
    precision, recall, flagged = [], [], []
    for seed in range(draws):
        noisy, flipped = flip(truth, share, np.random.default_rng(seed))
        found = {i.index for i in find_label_issues(embeddings, noisy)}
        hits = len(found & flipped)
        precision.append(hits / max(1, len(found)))
        recall.append(hits / len(flipped))
        flagged.append(len(found))
    clean = find_label_issues(embeddings, truth)
    return {
        "images": len(items), "classes": len(set(truth)), "flipped": round(share * len(items)), "draws": draws,
        "precision": round(float(np.mean(precision)), 3), "precision_min": round(min(precision), 3),
        "recall": round(float(np.mean(recall)), 3), "recall_min": round(min(recall), 3),
        "flagged_mean": round(float(np.mean(flagged)), 1),
        "flagged_without_flips": [f"{items[i.index].path.parent.name}/{items[i.index].path.name} -> {i.suggested_label}"
                                  for i in clean],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="an ImageFolder tree, e.g. caltech101-animals")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--share", type=float, default=0.05, help="of the labels flipped")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "var" / "embeddings")
    args = parser.parse_args()
    result = {"speed": speed(args.rows)}
    print(f"speed: {result['speed']}", flush=True)
    result["quality"] = quality(args.data, args.cache_dir, draws=args.draws, share=args.share)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
