"""How many labels the review queue saves: our strategy against random order.

Simulated annotators label an ImageFolder tree (the folder is the truth) in batches chosen
by the queue strategy or at random; between batches a head is retrained on cached Lite0
embeddings and scored on a fixed test split (30% by content hash, never labelled).

    python -m benchmarks.active_learning --data ../shared/datasets/caltech101-animals

The last line is JSON; label_ratio = labels our strategy needs to reach random's accuracy at
200 labels, divided by 200 (lower is better).
"""

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from classifier.ml.active_learning import QueueParams, select_batch
from classifier.ml.backbones import get_spec, load_backbone
from classifier.ml.images import IMAGE_SUFFIXES, decode_image


def load_embeddings(root: Path, backbone: str, cache_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    paths = sorted(p for p in root.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    key = hashlib.sha256(("\n".join(digests) + backbone).encode()).hexdigest()[:16]
    cache = cache_dir / f"embeddings-{backbone}-{key}.npz"
    labels = np.array([p.parent.name for p in paths])
    if cache.exists():
        return np.load(cache)["x"], labels, np.array(digests)
    import torch

    net = load_backbone(backbone)
    transform = get_spec(backbone).preprocessing.transform()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(paths), 64):
            batch = torch.stack([transform(decode_image(p.read_bytes()).image) for p in paths[start:start + 64]])
            chunks.append(net(batch)[0].numpy())
    x = np.concatenate(chunks).astype(np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, x=x)
    return x, labels, np.array(digests)


def head_accuracy(x_train, y_train, x_test, y_test) -> tuple[float, LogisticRegression]:
    clf = LogisticRegression(C=2.0, max_iter=2000)
    clf.fit(x_train, y_train)
    return float((clf.predict(x_test) == y_test).mean()), clf


def run(x, y, pool, test, *, strategy: str, batch: int, budget: int, seed: int) -> list[tuple[int, float]]:
    params = QueueParams(strategy=strategy)
    labelled: list[int] = []
    clf = None
    curve = []
    while len(labelled) < budget:
        candidates = np.setdiff1d(pool, labelled)
        probs = None
        if clf is not None:
            probs = np.zeros((len(candidates), len(classes_all := np.unique(y))))
            probs_known = clf.predict_proba(x[candidates])
            # Classes never labelled yet have probability 0: the model cannot name them.
            for j, c in enumerate(clf.classes_):
                probs[:, np.searchsorted(classes_all, c)] = probs_known[:, j]
        picks = select_batch(probs=probs, embeddings=x[candidates], batch_size=batch, params=params,
                             seed=seed * 1000 + len(labelled))
        labelled += [int(candidates[i]) for i in picks]
        if len(np.unique(y[labelled])) < 2:
            curve.append((len(labelled), 0.0))
            continue
        acc, clf = head_accuracy(x[labelled], y[labelled], x[test], y[test])
        curve.append((len(labelled), acc))
    return curve


def labels_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    previous = (0, 0.0)
    for n, acc in curve:
        if acc >= target:
            n0, a0 = previous
            # Linear interpolation between the two measured points around the target.
            return n0 + (n - n0) * (target - a0) / (acc - a0) if acc > a0 else float(n)
        previous = (n, acc)
    return None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--strategy", default="margin_diverse")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=Path("var/cache"))
    args = parser.parse_args(argv)

    started = time.perf_counter()
    x, y, digests = load_embeddings(args.data, args.backbone, args.cache_dir)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    is_test = np.array([int(d[:8], 16) % 100 < 30 for d in digests])
    test, pool = np.flatnonzero(is_test), np.flatnonzero(~is_test)

    curves = {}
    for strategy in ("random", args.strategy):
        runs = [run(x, y, pool, test, strategy=strategy, batch=args.batch, budget=args.budget, seed=s)
                for s in range(args.seeds)]
        steps = [n for n, _ in runs[0]]
        curves[strategy] = [(n, float(np.mean([r[i][1] for r in runs]))) for i, n in enumerate(steps)]

    print(f"{'labels':>6} {'random':>8} {args.strategy:>15}")
    for (n, a_random), (_, a_ours) in zip(curves["random"], curves[args.strategy]):
        print(f"{n:>6} {a_random:>8.4f} {a_ours:>15.4f}")
    target = dict(curves["random"]).get(200)
    if target is None:
        raise SystemExit("the budget must include 200 labels (a multiple of --batch)")
    needed = labels_to_reach(curves[args.strategy], target)
    summary = {
        "label_ratio": round(needed / 200, 3) if needed is not None else None,
        "labels_needed": round(needed, 1) if needed is not None else None,
        "random_accuracy_at_200": round(target, 4),
        "strategy_accuracy_at_200": round(dict(curves[args.strategy])[200], 4),
        "strategy": args.strategy,
        "batch": args.batch,
        "seeds": args.seeds,
        "n_pool": int(len(pool)),
        "n_test": int(len(test)),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
